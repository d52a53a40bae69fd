"""Command line: python -m textseg IMAGE_OR_FOLDER_OR_VIDEO... --prompt "cat, remote" --out OUT
(and/or --box x0,y0,x1,y1, --point x,y[,label]; --backend sam3), and
python -m textseg label FOLDER --prompt "car, person" --out DATASET (a data set, textseg.label)."""

from __future__ import annotations

import argparse
import errno
import logging
import math
import sys
from contextlib import ExitStack
from pathlib import Path

from textseg.backends import BACKENDS, DEFAULT_BACKEND
from textseg.errors import ModelLoadError, OutputError, PromptError, TextsegError
from textseg.lock import folder_lock

__all__ = ["main"]

EPILOG = """\
outputs: OUT/<image name>/overlay.png, mask_NN_<label>.png (one per object) and
segmentation.json (prompt, image size, per object label, score, mask_score, XYXY box and
COCO RLE mask). Running again skips the images (and videos) whose folder already holds
their complete result made with the same settings (prompt, thresholds, models, the same
file), finishes those a kill interrupted and redoes the rest, replacing an image's own
results; a folder holding another image's results is never written over (OUT/<name>_2 is
used, and a note says so). One run at a time per OUT: OUT/.textseg.lock (removed at the
end) names the running one's PID; a lock left by a killed run is taken over.

videos (.mp4 .mov .m4v .mkv .webm .avi ...): the finder runs on every --every-th frame and
SAM 2 tracks the objects in between, each with one id. OUT/<video name>/overlay.mp4,
preview.gif and segmentation.json (per frame and object id: score, box, COCO RLE mask).

local models (offline): --detector takes a folder written by save_pretrained();
--segmenter takes a folder with config.yaml + model.pt, or a checkpoint such as
sam2.1_hiera_tiny.pt (other names need --segmenter-config).

prompts: --prompt finds objects by text; --box x0,y0,x1,y1[,name] (repeatable, pixels)
adds one object per box, --point x,y[,label] (repeatable; label 1 = on the object, the
default, 0 = not on it) adds one object made from all the points. Boxes and points go
straight to SAM 2, with or without --prompt.

backends: --backend groundingdino+sam2 (default) or sam3 (facebook/sam3 is gated: ask for
access on https://huggingface.co/facebook/sam3, then `hf auth login`). With the default
backend, --sam3 ID_OR_PATH loads SAM 3 as a semantic checker: each object gets text_match in
the JSON, and --min-text-match drops objects below it (experimental).

data sets: python -m textseg label FOLDER --prompt "car, person" --out DATASET labels a
whole folder as one COCO (and YOLO-seg) data set, resumable, shardable with torchrun (see
python -m textseg label --help).

exit status: 0 all images done, 1 some images skipped or a model failed to load,
2 bad arguments, checked before any image is read: also boxes or points that fit no image
(inverted, no area, not finite, negative, only negative points), an input or --out that is
a symlink loop, and an --out that cannot be written (read-only, no permission, disk full)
or is in use by another run (the line names its PID).
"""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage block)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _unit(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not in [0, 1]")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative")
    return value


def _positive(text: str) -> int:
    value = _count(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not at least 1")
    return value


def _box(text: str) -> tuple[tuple[float, float, float, float], str | None]:
    parts = [p.strip() for p in text.split(",")]
    try:
        coords = tuple(float(v) for v in parts[:4])
    except ValueError:
        coords = ()
    if len(parts) < 4 or len(coords) != 4:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not x0,y0,x1,y1[,name] (pixels, e.g. 10,20,200,180)"
        )
    name = ",".join(parts[4:]).strip() or None
    x0, y0, x1, y1 = coords
    if not all(math.isfinite(v) for v in coords):
        raise argparse.ArgumentTypeError(f"{text!r} has a coordinate that is not a finite number")
    if not (x1 > x0 and y1 > y0):
        raise argparse.ArgumentTypeError(
            f"{text!r} has no area: give x0 < x1 and y0 < y1 (pixels, XYXY)"
        )
    if x1 <= 0 or y1 <= 0:
        raise argparse.ArgumentTypeError(
            f"{text!r} lies left of or above every image (pixels count from 0 at the top left)"
        )
    return coords, name  # type: ignore[return-value]


def _point(text: str) -> tuple[float, float, int]:
    parts = [p.strip() for p in text.split(",")]
    try:
        x, y = float(parts[0]), float(parts[1])
        label = int(parts[2]) if len(parts) == 3 else 1
    except (ValueError, IndexError):
        label = -1
    if len(parts) not in (2, 3) or label not in (0, 1):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not x,y[,label] (pixels; label 1 = on the object, 0 = not on it)"
        )
    if not (math.isfinite(x) and math.isfinite(y)):
        raise argparse.ArgumentTypeError(f"{text!r} has a coordinate that is not a finite number")
    if x < 0 or y < 0:
        raise argparse.ArgumentTypeError(
            f"{text!r} lies outside every image (pixels count from 0 at the top left)"
        )
    return x, y, label


def _symlink_loop(path: Path) -> bool:
    """True when `path`, or a folder on the way to it, is a symlink loop."""
    try:
        path.resolve(strict=True)
    except RuntimeError:  # Python < 3.13: "Symlink loop from ..."
        return True
    except OSError as err:
        return err.errno == errno.ELOOP
    return False


def _out(text: str) -> Path:
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty; give the folder to write the results to")
    return Path(text)


def _size(text: str) -> int:
    value = _count(text)
    if value < 32:
        raise argparse.ArgumentTypeError(f"{text} is too small (at least 32 pixels)")
    return value


def _add_backend_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--backend",
        default=DEFAULT_BACKEND,
        choices=list(BACKENDS),  # read when the parser is built: a row added at run time counts
        help="who finds objects by text: "
        + ", ".join(f"{name} ({row.label})" for name, row in BACKENDS.items())
        + f" (default {DEFAULT_BACKEND})",
    )


def _add_model_flags(p: argparse.ArgumentParser) -> None:
    """--detector ... --precision: the models and where they run (images and data sets)."""
    p.add_argument(
        "--detector",
        default=None,
        metavar="ID_OR_PATH",
        help="GroundingDINO-family hub id or local folder (default "
        "IDEA-Research/grounding-dino-tiny; also grounding-dino-base, MM-GroundingDINO)",
    )
    p.add_argument(
        "--detector-size",
        type=_size,
        default=None,
        metavar="PIXELS",
        help="GroundingDINO's input size, shortest image side (default: the processor's, "
        "800); e.g. 512 is about twice as fast on a CPU",
    )
    p.add_argument(
        "--sam3",
        default=None,
        metavar="ID_OR_PATH",
        help="SAM 3 hub id or local folder: the model of --backend sam3 (default "
        "facebook/sam3), or with the default backend the semantic checker (experimental)",
    )
    p.add_argument(
        "--min-text-match",
        type=_unit,
        default=None,
        help="with --sam3 as checker: drop objects whose text_match is below this "
        "(experimental; off by default)",
    )
    p.add_argument(
        "--segmenter",
        default=None,
        metavar="ID_OR_PATH",
        help="SAM 2 hub id, size name (tiny, small, base-plus, large), .pt file or local "
        "folder (default: large on GPU, tiny on CPU)",
    )
    p.add_argument(
        "--segmenter-config",
        default=None,
        metavar="CONFIG",
        help="SAM 2 config (YAML path or sam2 config name) for a .pt with a non-standard name",
    )
    p.add_argument(
        "--device",
        default="auto",
        choices=["auto", "cpu", "cuda"],
        help="default: cuda if available",
    )
    p.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "float32", "float16", "bfloat16"],
        help="SAM 2 autocast dtype on GPU (default: bf16 where supported, else fp32)",
    )


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="textseg",
        description="Segment what you describe in words: GroundingDINO finds boxes for the "
        "prompt's phrases, SAM 2 turns them into masks.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="IMAGE_OR_FOLDER_OR_VIDEO",
        help="images, folders of images, or video files",
    )
    p.add_argument(
        "--prompt",
        default=None,
        help='phrases separated by commas, e.g. "skateboard, cap" (needed unless --box or '
        "--point is given)",
    )
    p.add_argument(
        "--box",
        action="append",
        type=_box,
        default=[],
        metavar="X0,Y0,X1,Y1[,NAME]",
        help="a box in pixels, one object each (repeatable); named 'box N' unless NAME is given",
    )
    p.add_argument(
        "--point",
        action="append",
        type=_point,
        default=[],
        metavar="X,Y[,LABEL]",
        help="a point in pixels (repeatable); all points make one object 'point'. "
        "LABEL 1 (default) = on the object, 0 = not on it",
    )
    _add_backend_flag(p)
    p.add_argument("--out", required=True, type=_out, help="output folder (created)")
    p.add_argument(
        "--box-threshold",
        type=_unit,
        default=0.35,
        help="detector score an object needs (default 0.35)",
    )
    p.add_argument(
        "--text-threshold",
        type=_unit,
        default=0.25,
        help="score of the token naming its phrase (default 0.25)",
    )
    p.add_argument(
        "--nms-iou",
        type=_unit,
        default=0.5,
        help="IoU above which boxes are duplicates (default 0.5)",
    )
    p.add_argument(
        "--max-objects", type=_count, default=None, help="keep at most N objects per image"
    )
    p.add_argument(
        "--multimask", action="store_true", help="SAM 2 proposes 3 masks per box; keep the best"
    )
    p.add_argument(
        "--every",
        type=_positive,
        default=10,
        metavar="N",
        help="videos: run the finder on every N-th frame, track in between (default 10)",
    )
    p.add_argument(
        "--max-frames",
        type=_positive,
        default=None,
        metavar="M",
        help="videos: segment only the first M frames",
    )
    p.add_argument(
        "--match-iou",
        type=_unit,
        default=0.5,
        help="videos: a detection overlapping no tracked object by this IoU is a new object "
        "(default 0.5)",
    )
    _add_model_flags(p)
    p.add_argument("-v", "--verbose", action="store_true", help="log progress and details")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 1 images skipped / models failed, 2 usage,
    130 interrupted by Ctrl-C)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        return _main(argv)
    except KeyboardInterrupt:  # every file written is whole (atomic writes): no traceback
        again = "resumes where it stopped" if argv[:1] == ["label"] else "runs it again"
        print(f"textseg: interrupted (Ctrl-C); the same command again {again}", file=sys.stderr)
        return 130


def _main(argv: list[str]) -> int:
    if argv[:1] == ["label"]:  # python -m textseg label FOLDER ... (a data set)
        return label_main(argv[1:])
    if argv[:1] == ["export"]:  # python -m textseg export DATASET --reviewed-only
        return export_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="textseg: %(message)s"
    )

    from textseg.images import list_images
    from textseg.prompt import parse_prompt
    from textseg.video_io import is_video_file

    images: list[Path] = []
    videos: list[Path] = []
    for raw in args.inputs:
        path = Path(raw)
        if _symlink_loop(path):
            parser.error(f"{raw}: is a symlink loop (it points back to itself); fix the link")
        if path.is_dir():
            found = list_images(path)
            if not found:
                parser.error(f"{raw}: the folder holds no .jpg/.png/.webp/... images")
            images += found
        elif path.exists():
            (videos if is_video_file(path) else images).append(path)
        else:
            parser.error(f"{raw}: no such file or folder")
    if args.prompt is None and not args.box and not args.point:
        parser.error("give --prompt, --box or --point: there is nothing to segment")
    if args.prompt is not None and (args.prompt.strip() or not (args.box or args.point)):
        try:
            parse_prompt(args.prompt)
        except PromptError as err:
            parser.error(str(err))
    _check_models(parser, args)
    names = [name for _, name in args.box if name]
    if len(set(names)) != len(names):
        parser.error(f"--box names must differ, got {names}")
    if args.point and not any(label == 1 for _, _, label in args.point):
        parser.error("--point: only negative points (label 0); give at least one on the object")
    links = [args.out, *args.out.parents]
    loop = next((p for p in links if p.is_symlink() and _symlink_loop(p)), None)
    if loop is not None:
        parser.error(f"--out {args.out}: {loop} is a symlink loop; fix the link")
    blocker = next((p for p in [args.out, *args.out.parents] if p.is_file()), None)
    if blocker is not None:
        what = "exists and is not a folder" if blocker == args.out else f"{blocker} is a file"
        parser.error(f"--out {args.out}: {what}")
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        parser.error(f"--out {args.out}: cannot create the folder ({err.strerror or err})")
    with ExitStack() as held:
        try:
            held.enter_context(folder_lock(args.out))
        except OutputError as err:  # another run holds it
            parser.error(f"--out {args.out}: {err}")
        except OSError as err:  # read-only, no permission, disk full
            parser.error(f"--out {args.out}: cannot write there ({err.strerror or err})")
        return _run(args, parser, images, videos)


def _finder_options(args: argparse.Namespace) -> dict:
    """The finder's flags shared by images, videos and data sets (box thresholds aside: a data
    set also takes them per class)."""
    return dict(
        text_threshold=args.text_threshold, nms_iou=args.nms_iou, max_objects=args.max_objects
    )


def _image_options(args: argparse.Namespace) -> dict:
    """The finder's flags plus the image-only ones (SAM 2's masks, the detector's input size,
    SAM 3's text check), shared by `textseg IMAGES` and `textseg label`."""
    return dict(
        **_finder_options(args),
        multimask=args.multimask,
        detector_size=args.detector_size,
        min_text_match=args.min_text_match,
    )


def _run(
    args: argparse.Namespace,
    parser: argparse.ArgumentParser,
    images: list[Path],
    videos: list[Path],
) -> int:
    """Load the models and segment the inputs into args.out (which this process holds)."""

    segmenter = _load_segmenter(args, args.device)
    if segmenter is None:
        return 1
    options = dict(box_threshold=args.box_threshold, **_image_options(args))
    if args.box:
        if any(name for _, name in args.box):
            options["boxes"] = {
                name or f"box {i + 1}": coords for i, (coords, name) in enumerate(args.box)
            }
        else:
            options["boxes"] = [coords for coords, _ in args.box]
    if args.point:
        options["points"] = [(x, y) for x, y, _ in args.point]
        options["point_labels"] = [label for _, _, label in args.point]
    skipped = 0
    used: set[str] = set()

    def plan(done: int, todo: int) -> None:
        if done:
            print(f"textseg: skipped {done} done, {todo} to do", file=sys.stderr)

    try:
        items = segmenter.iter_many(
            images, args.prompt, out_dir=args.out, on_plan=plan if images else None, **options
        )
        for item in items:
            if item.error is not None:
                skipped += 1
                reason = " ".join(str(item.error).split())
                print(f"{item.source}: skipped: {reason}", file=sys.stderr)
            else:
                used.add(item.out_dir.name)
                done = "done already, " if item.skipped else ""
                print(f"{item.source}: {done}{item.segmentation.summary()} -> {item.out_dir}")
                if item.note:
                    print(f"{item.source}: note: {item.note}", file=sys.stderr)
        for video in videos:
            skipped += not _segment_video(segmenter, video, args, used)
    except (PromptError, ValueError) as err:
        parser.error(str(err))
    except OSError as err:  # the output folder went away or filled up under the run
        print(f"textseg: error: {args.out}: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    total = len(images) + len(videos)
    if skipped:
        print(
            f"textseg: {total - skipped} of {total} inputs done, {skipped} skipped", file=sys.stderr
        )
    return 1 if skipped else 0


def _segment_video(segmenter, video: Path, args: argparse.Namespace, used: set[str]) -> bool:
    """Segment one video and save it to OUT/<video name>/; False (and a line on stderr)
    when the video cannot be read or its files cannot be written. A folder that already
    holds this video's result made with the same settings is kept (one line says so)."""
    from textseg.export import is_done, load, output_dir, save_video

    options = dict(
        every=args.every,
        max_frames=args.max_frames,
        box_threshold=args.box_threshold,
        match_iou=args.match_iou,
        **_finder_options(args),
    )
    try:
        settings = segmenter.settings_for(video, args.prompt, options)
        trial = set(used)
        out_dir, note = output_dir(args.out, video, used=trial, fallback="video")
        if settings is not None and is_done(out_dir, source=str(video), settings=settings):
            used.update(trial)
            print(f"{video}: done already, {load(out_dir).summary()} -> {out_dir}")
            return True
        vseg = segmenter.segment_video(video, args.prompt, **options)
        out_dir, note = output_dir(args.out, video, used=used, fallback="video")
        save_video(vseg, out_dir, video=video, settings=settings)
        if note:
            print(f"{video}: note: {note}", file=sys.stderr)
    except PromptError:
        raise
    except (TextsegError, OSError) as err:
        print(f"{video}: skipped: {' '.join(str(err).split())}", file=sys.stderr)
        return False
    print(f"{video}: {vseg.summary()} -> {out_dir}")
    return True


def _check_models(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The backend's rule on the options it does not use, model paths that do not exist, a
    device that is not there: one-line usage errors, before any model is loaded."""
    from textseg.device import resolve_runtime
    from textseg.hub import looks_like_path
    from textseg.segmenter import sam2_config_name

    given = {
        "detector": args.detector,
        "detector_size": args.detector_size,
        "min_text_match": args.min_text_match,
        "sam3": args.sam3,
        "segmenter": args.segmenter,
        "segmenter_config": args.segmenter_config,
    }
    try:  # the backend's own rule on the options it does not use
        BACKENDS[args.backend].check(
            {k: v for k, v in given.items() if v is not None},
            lambda name: "--" + name.replace("_", "-"),
        )
    except ValueError as err:
        parser.error(str(err))
    paths = {
        "--detector": args.detector,
        "--sam3": args.sam3,
        "--segmenter": args.segmenter,
        "--segmenter-config": args.segmenter_config,
    }
    for flag, value in paths.items():
        if flag == "--segmenter-config" and value and sam2_config_name(value):
            continue  # a config of the sam2 package, e.g. configs/sam2.1/sam2.1_hiera_t.yaml
        if value and looks_like_path(value) and not Path(value).expanduser().exists():
            parser.error(f"{flag} {value}: no such file or folder")
    try:
        resolve_runtime(args.device, precision=args.precision)
    except ValueError as err:
        parser.error(str(err))


def _load_segmenter(args: argparse.Namespace, device: str):
    """The TextSegmenter the flags ask for, or None (and one line on stderr) when a model
    cannot be loaded."""
    if not args.verbose:
        try:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        except ImportError:
            pass
    from textseg.pipeline import TextSegmenter

    try:
        segmenter = TextSegmenter.from_pretrained(
            backend=args.backend,
            sam3=args.sam3,
            detector=args.detector,
            segmenter=args.segmenter,
            segmenter_config=args.segmenter_config,
            device=device,
            precision=args.precision,
        )
    except ModelLoadError as err:
        print(f"textseg: error: {' '.join(str(err).split())}", file=sys.stderr)
        return None
    return segmenter


# --------------------------------------------------------------------------- textseg label

LABEL_EPILOG = """\
outputs (DATASET = --out): annotations.json (COCO instance segmentation: images with file
names relative to FOLDER, categories, annotations with RLE segmentation, bbox [x, y, w, h]
in pixels, area, score, iscrowd 0), summary.json, per_image/<...>/ (each image's overlay,
mask PNGs and segmentation.json; --no-per-image leaves them out), and with --format yolo
images/ (hard links), labels/*.txt (class, then x y of the outline divided by the image's
width and height) and data.yaml.

resume: run the same command again after a kill: finished images are not redone, and the
files equal an uninterrupted run's. A changed prompt, --classes, threshold or model is
refused, and so is an --out holding another folder's data set.

several GPUs or machines: torchrun --nproc-per-node N -m textseg label FOLDER ... (each rank
labels every N-th image not yet done; rank 0 merges when all are done; --out must be on a
file system every rank sees).

exit status: 0 every image labelled, 1 images skipped or failed or a model failed to load,
2 bad arguments.
"""


def _threshold(text: str) -> tuple[str | None, float]:
    """--box-threshold 0.3 (every class) or NAME=0.4 (one phrase or class)."""
    name, _, value = text.rpartition("=")
    try:
        number = _unit(value)
    except argparse.ArgumentTypeError as err:
        raise argparse.ArgumentTypeError(f"{text!r}: {err} (give 0.3 or NAME=0.4)") from None
    if _ and not name.strip():
        raise argparse.ArgumentTypeError(f"{text!r} names no phrase or class before '='")
    return (name.strip() or None) if _ else None, number


def build_label_parser() -> argparse.ArgumentParser:
    from textseg.export import DATASET_FORMATS, SEGMENTATION_KINDS

    p = _Parser(
        prog="textseg label",
        description="Label every image under FOLDER (recursively) as one data set: COCO "
        "instance segmentation, and YOLO-seg with --format yolo.",
        epilog=LABEL_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("folder", type=Path, metavar="FOLDER", help="the images (searched recursively)")
    p.add_argument("--prompt", required=True, help='phrases, e.g. "red car, blue car, person"')
    p.add_argument("--out", required=True, type=_out, metavar="DATASET", help="data set folder")
    p.add_argument(
        "--classes",
        default=None,
        metavar="PHRASE=CLASS,...",
        help='map phrases to classes, e.g. "red car=car,blue car=car" (default: each phrase '
        "is a class)",
    )
    p.add_argument(
        "--format",
        action="append",
        choices=list(DATASET_FORMATS),
        default=None,
        help="coco (annotations.json, the default) and/or yolo (repeatable)",
    )
    p.add_argument(
        "--segmentation",
        choices=list(SEGMENTATION_KINDS),
        default="rle",
        help="COCO's segmentation: rle (exact, default) or polygon (masks with holes keep RLE)",
    )
    _add_backend_flag(p)
    p.add_argument(
        "--box-threshold",
        action="append",
        type=_threshold,
        default=[],
        metavar="[NAME=]T",
        help="detector score an object needs: T for every class (default 0.35), NAME=T for one "
        "phrase or class (repeatable)",
    )
    p.add_argument("--text-threshold", type=_unit, default=0.25, help="default 0.25")
    p.add_argument("--nms-iou", type=_unit, default=0.5, help="default 0.5")
    p.add_argument("--max-objects", type=_count, default=None, help="at most N per image")
    p.add_argument("--multimask", action="store_true", help="SAM 2 keeps the best of 3 masks")
    _add_model_flags(p)
    p.add_argument(
        "--no-per-image",
        action="store_true",
        help="write no per-image overlay, mask PNGs and segmentation.json",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress and details")
    return p


def _model_description(args: argparse.Namespace) -> str:
    """How the data set's recipe names the models: the backend and each model flag, paths
    made absolute (so the same models from another folder are the same)."""
    from textseg.hub import looks_like_path

    parts = [args.backend]
    for flag in ("detector", "segmenter", "segmenter_config", "sam3"):
        value = getattr(args, flag)
        if value and looks_like_path(value):
            value = str(Path(value).expanduser().resolve())
        parts.append(f"{flag}={value or 'default'}")
    return " ".join(parts)


def label_main(argv: list[str]) -> int:
    """`textseg label ...`; returns the exit status."""
    parser = build_label_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="textseg: %(message)s"
    )
    from textseg.distributed import Ranks
    from textseg.label import LabelError, label_dataset, list_dataset_images
    from textseg.prompt import parse_prompt

    if not args.folder.is_dir():
        parser.error(f"{args.folder}: not a folder")
    if not list_dataset_images(args.folder, exclude=args.out):
        parser.error(f"{args.folder}: holds no .jpg/.png/.webp/... images (searched recursively)")
    try:
        parse_prompt(args.prompt)
    except PromptError as err:
        parser.error(str(err))
    global_thresholds = [t for name, t in args.box_threshold if name is None]
    if len(global_thresholds) > 1:
        parser.error("--box-threshold T is given twice; give one T and NAME=T for classes")
    per_class = {name: t for name, t in args.box_threshold if name is not None}
    _check_models(parser, args)
    blocker = next((p for p in [args.out, *args.out.parents] if p.is_file()), None)
    if blocker is not None:
        what = "exists and is not a folder" if blocker == args.out else f"{blocker} is a file"
        parser.error(f"--out {args.out}: {what}")
    ranks = Ranks.from_env()
    segmenter = _load_segmenter(args, ranks.device(args.device))
    if segmenter is None:
        return 1
    try:
        summary = label_dataset(
            segmenter,
            args.folder,
            args.prompt,
            out=args.out,
            classes=args.classes,
            formats=args.format or ["coco"],
            segmentation=args.segmentation,
            box_threshold=global_thresholds[0] if global_thresholds else 0.35,
            box_thresholds=per_class or None,
            **_image_options(args),
            per_image=not args.no_per_image,
            model=_model_description(args),
            progress=not args.no_progress,
            ranks=ranks,
        )
    except (LabelError, PromptError) as err:
        print(f"textseg label: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    except OutputError as err:  # the data set's files cannot be written
        print(f"textseg label: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    except ValueError as err:
        parser.error(str(err))
    if ranks.is_main:
        for line in summary.lines():
            print(f"textseg label: {line}")
    return 0 if summary.complete and not summary.skipped else 1


EXPORT_EPILOG = """\
example:
  python -m textseg export dataset/ --reviewed-only --format coco yolo

Writes DATASET/reviewed/ (or --out): annotations.json (and the YOLO-seg layout with
--format yolo) holding only what the review kept: accepted objects with relabels applied,
and added ones; rejected and unreviewed objects are left out, and only images with a
decision are written. The decisions are DATASET/review.jsonl (textseg.ui.review), or the
files given with --reviews (several users' files are merged; conflicts stop the export
unless --on-conflict latest). Exit status: 0 written, 2 bad arguments or review.
"""


def build_export_parser() -> argparse.ArgumentParser:
    from textseg.export import DATASET_FORMATS, SEGMENTATION_KINDS

    p = _Parser(
        prog="python -m textseg export",
        description="Export a reviewed data set (see textseg.ui.review).",
        epilog=EXPORT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("dataset", type=Path, help="a data set folder written by `textseg label`")
    p.add_argument(
        "--reviewed-only", action="store_true", help="keep only what the review accepted or added"
    )
    p.add_argument("--out", type=Path, default=None, help="where to write (DATASET/reviewed)")
    p.add_argument(
        "--format",
        nargs="+",
        action="extend",  # `--format coco yolo` and label's `--format coco --format yolo`
        choices=list(DATASET_FORMATS),
        default=None,
        help="coco (annotations.json, the default) and/or yolo: `--format coco yolo`",
    )
    p.add_argument("--segmentation", choices=list(SEGMENTATION_KINDS), default="rle")
    p.add_argument("--reviews", nargs="+", type=Path, default=None, help="decision files to merge")
    p.add_argument("--on-conflict", choices=["stop", "latest"], default="stop")
    return p


def export_main(argv: list[str]) -> int:
    """`textseg export DATASET --reviewed-only ...`; returns the exit status."""
    from textseg.review_log import ReviewError, export_reviewed

    parser = build_export_parser()
    args = parser.parse_args(argv)
    if not args.reviewed_only:
        parser.error(
            "give --reviewed-only: the data set's own annotations.json is the unreviewed export"
        )
    if not args.dataset.is_dir():
        parser.error(f"{args.dataset}: not a folder")
    try:
        summary = export_reviewed(
            args.dataset,
            out=args.out,
            formats=args.format or ["coco"],
            segmentation=args.segmentation,
            reviews=args.reviews,
            on_conflict=args.on_conflict,
        )
    except (ReviewError, OutputError) as err:
        print(f"textseg export: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    for line in summary.lines():
        print(f"textseg export: {line}")
    return 0

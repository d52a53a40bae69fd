"""Every file format textseg writes and reads: an image's Segmentation (overlay PNG, one PNG
mask per object, JSON) and a clip's VideoSegmentation (overlay MP4, preview GIF, JSON), with
one JSON name (`JSON_NAME`) and one atomic writer (`atomic_path`).

Layout of `save(segmentation, out_dir)`:
    out_dir/overlay.png              the image with masks, boxes and tags drawn
    out_dir/mask_00_<label>.png      one 8-bit PNG per object: 255 inside, 0 outside
    out_dir/segmentation.json        prompt, image size and per object: label, score,
                                     mask_score, box_xyxy and the mask as COCO RLE
JSON schema (version 1):
    {"version": 1, "prompt": "cat. remote.", "phrases": ["cat", "remote"],
     "source": "photo.jpg", "image": {"height": H, "width": W},
     "objects": [{"label": "cat", "score": 0.87, "mask_score": 0.93,
                  "box_xyxy": [x0, y0, x1, y1], "mask_file": "mask_00_cat.png",
                  "mask_rle": {"size": [H, W], "counts": [...]},
                  "kind": "text", "text_match": null, "presence_score": null}],
     "phrase_presence": null}
kind: "text" (found by a phrase), "box" or "points" (the user's); text_match: the semantic
check's score (experimental; null unless a SAM 3 checker ran); presence_score and
phrase_presence ({phrase: p}): SAM 3's presence scores (backend "sam3"; null otherwise).

Layout of `save_video(vseg, out_dir)`:
    out_dir/overlay.mp4              every frame, masks drawn in one colour per object id
    out_dir/preview.gif              at most 48 frames, 320 pixels wide
    out_dir/segmentation.json        "kind": "video": per frame and object id, score,
                                     box_xyxy and the mask as COCO RLE (`video_to_json`)

Output safety: `folder_name` is the one place a source name becomes a folder name (nothing
like `..` or `...png` can leave the output folder), `output_dir` picks a folder that holds
no other image's results, and `save` replaces a folder's previous masks and refuses to
write over another image's results unless told to.

Write order (`save` and `save_video` alike; a video's overlay.mp4 is drawn to its temporary
file first), each file through `atomic_path` (temporary name, fsync, rename):
.textseg-pending.json naming the source (the folder is claimed), the
old segmentation.json removed (it must never sit beside files it does not list), the masks
and overlay (or overlay.mp4 and preview.gif), stale masks and temporary files removed,
segmentation.json (the commit point: a folder with it and no pending file is complete),
then the pending file removed. A kill anywhere leaves a folder that `output_dir` gives back
to the same source and the next save finishes; a failed write (disk full) removes what the
save wrote, so no folder is left with masks and no JSON. `settings=` stores what made the
result (prompt, thresholds, models, the source's hash) as a "settings" field (readers ignore
unknown fields); `is_done` tells a re-run that the folder already holds that result.
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from textseg.draw import overlay
from textseg.errors import OutputError, VideoLoadError
from textseg.result import (
    FrameMask,
    LabelledObject,
    LabelledSet,
    Segmentation,
    VideoObject,
    VideoSegmentation,
)
from textseg.rle import decode_rle, encode_rle

if TYPE_CHECKING:
    from PIL import Image

    from textseg.images import ImageInput

__all__ = [
    "ANNOTATIONS_NAME",
    "DATASET_FORMATS",
    "JSON_NAME",
    "SavedFiles",
    "SavedVideo",
    "atomic_path",
    "coco_annotation",
    "folder_name",
    "is_done",
    "load",
    "mask_polygons",
    "mask_to_rle",
    "output_dir",
    "polygons_to_mask",
    "rle_to_mask",
    "save",
    "save_video",
    "to_json",
    "video_from_json",
    "video_to_json",
    "write_coco",
    "write_json_atomic",
    "write_text_atomic",
    "write_yolo",
    "yolo_line",
]

JSON_NAME = "segmentation.json"  # images and videos alike, so textseg.load(folder) reads both
OVERLAY_NAME = "overlay.png"
OVERLAY_VIDEO_NAME = "overlay.mp4"
PREVIEW_NAME = "preview.gif"
PENDING_NAME = ".textseg-pending.json"  # names the source while a folder is being written
_TMP_FILE = re.compile(r"^\..+\.[0-9a-f]{8}\.tmp$")  # what atomic_path leaves when killed


@dataclass
class SavedFiles:
    """Paths written by `save`."""

    overlay: Path
    json: Path
    masks: list[Path] = field(default_factory=list)


def _slug(label: str) -> str:
    slug = re.sub(r"[^\w-]+", "_", label, flags=re.UNICODE).strip("_")
    return slug[:40] or "object"


def mask_name(index: int, label: str) -> str:
    return f"mask_{index:02d}_{_slug(label)}.png"


def folder_name(source: str | os.PathLike | None, *, fallback: str = "image") -> str:
    """The folder name for an image source: its file name without the suffix, with every
    character but letters, digits, "-", "_" and "." replaced by "_" and no leading or
    trailing dots, so it is never "", "." or ".." and never leaves its parent folder.

    >>> folder_name("photos/cat.jpg"), folder_name("...png"), folder_name("../a b.png")
    ('cat', 'png', 'a_b')
    """
    base = re.split(r"[\\/]", str(source or ""))[-1]
    stem = base[: base.rindex(".")] if "." in base else base

    def clean(text: str) -> str:
        return re.sub(r"[^\w.-]+", "_", text, flags=re.UNICODE).strip("._ ")[:100]

    return clean(stem) or clean(base) or fallback


def _same_source(a: str | None, b: str | None) -> bool:
    if a == b:
        return True
    if a is None or b is None:
        return False
    try:
        return Path(a).resolve() == Path(b).resolve() and Path(a).exists()
    except OSError:
        return False


def _saved_source(folder: Path) -> tuple[bool, str | None]:
    """(holds a textseg result, finished or being written, the source it names) for a
    folder. The pending file of an unfinished save names the source it is written for."""
    for name in (PENDING_NAME, JSON_NAME):
        try:
            data = json.loads((folder / name).read_text())
        except FileNotFoundError:
            continue
        except (OSError, ValueError):
            if name == PENDING_NAME:  # killed while it was written: only a .tmp would show
                continue
            return True, "<unreadable segmentation.json>"
        return True, data.get("source") if isinstance(data, dict) else None
    return False, None


def _only_leftovers(folder: Path) -> bool:
    """True when `folder` holds nothing but temporary files a killed save left."""
    return all(_TMP_FILE.match(p.name) and p.is_file() for p in folder.iterdir())


def _remove(path: Path) -> None:
    """Remove one file (if there); the one place a save deletes, in its fixed order."""
    path.unlink(missing_ok=True)


def _sync_folder(folder: Path) -> None:
    """Make renames and removals in `folder` reach the disk (no-op where folders cannot
    be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _clean_leftovers(folder: Path) -> None:
    for stale in folder.iterdir():
        if _TMP_FILE.match(stale.name):
            _remove(stale)


def _settings_json(settings: dict | None) -> dict | None:
    """`settings` as they read back from JSON (tuples become lists, ...), for comparing."""
    return None if settings is None else json.loads(json.dumps(settings, ensure_ascii=False))


def is_done(folder: str | os.PathLike, *, source: str | None, settings: dict) -> bool:
    """True when `folder` holds a complete result of `source` (segmentation.json, every
    file it lists, no unfinished save) made with exactly `settings` (as given to save or
    save_video). Leftovers of a save killed after its commit point (the pending file,
    temporary files) are removed then."""
    out = Path(folder)
    try:
        data = json.loads((out / JSON_NAME).read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(data, dict) or data.get("settings") != _settings_json(settings):
        return False
    if not _same_source(data.get("source"), source):
        return False
    if data.get("kind") == "video":
        needed = [OVERLAY_VIDEO_NAME, PREVIEW_NAME]
    else:
        objects = data.get("objects")
        if not isinstance(objects, list):
            return False
        needed = [OVERLAY_NAME, *(o.get("mask_file", "") for o in objects if isinstance(o, dict))]
    if not all((out / name).is_file() for name in needed if name):
        return False
    try:
        _remove(out / PENDING_NAME)
        _clean_leftovers(out)
    except OSError:
        pass
    return True


def output_dir(
    root: str | os.PathLike,
    source: str | os.PathLike | None,
    *,
    used: set[str],
    fallback: str = "image",
) -> tuple[Path, str | None]:
    """The folder under `root` for one image's results, and a note when it is not the
    obvious `root/<folder_name(source)>`.

    The obvious folder is taken when it does not exist, is empty, or holds this same
    source's results, finished or not (they are replaced). Otherwise (a file of that name, another image's
    results, foreign files, or a name already `used` in this run) the first free
    `<name>_2`, `<name>_3`, ... is taken, and the note says why. `used` collects the names
    given out in this run.
    """
    base = folder_name(source, fallback=fallback)
    src = str(source) if source is not None else None
    folder = Path(root)
    reason = None
    name, n = base, 2
    while True:
        path = folder / name
        if name in used:
            why = "another image of this run has that name"
        elif not path.exists():
            break
        elif not path.is_dir():
            why = "it is a file"
        else:
            holds, other = _saved_source(path)
            if holds and _same_source(other, src):
                break
            if not holds and _only_leftovers(path):  # empty, or a save killed at its start
                break
            why = f"it holds the results of {other}" if holds else "it holds other files"
        reason = reason or f"{folder / base} was not used: {why}"
        name, n = f"{base}_{n}", n + 1
    used.add(name)
    return path, reason


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` for the block to write the file to. When the block
    ends without an error the file is flushed to disk (fsync) and renamed over `path`, so a
    reader (or a kill at any moment) sees the old file or the whole new one, never a part;
    when it raises, the temporary file is removed and `path` is left as it was."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        yield tmp
        with open(tmp, "rb") as written:
            os.fsync(written.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:  # the rename itself reaches the disk with the folder's entry
        folder = os.open(path.parent, os.O_RDONLY)
    except OSError:  # e.g. Windows, where folders cannot be opened
        return
    try:
        os.fsync(folder)
    except OSError:
        pass
    finally:
        os.close(folder)


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` (UTF-8) to `path` through `atomic_path`."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def to_json(segmentation: Segmentation) -> dict:
    """The JSON-ready dict described in the module docstring."""
    h, w = segmentation.image_size
    objects = []
    for i, label in enumerate(segmentation.labels):
        objects.append(
            {
                "label": label,
                "score": round(float(segmentation.scores[i]), 6),
                "mask_score": round(float(segmentation.mask_scores[i]), 6),
                "box_xyxy": [round(float(v), 3) for v in segmentation.boxes[i]],
                "mask_file": mask_name(i, label),
                "mask_rle": encode_rle(segmentation.masks[i]),
                "kind": segmentation.kinds[i],
                "text_match": _rounded(segmentation.text_match[i]),
                "presence_score": _rounded(segmentation.presence_scores[i]),
            }
        )
    return {
        "version": 1,
        "prompt": segmentation.prompt,
        "phrases": list(segmentation.phrases),
        "source": segmentation.source,
        "image": {"height": int(h), "width": int(w)},
        "objects": objects,
        "phrase_presence": (
            {k: _rounded(v) for k, v in segmentation.phrase_presence.items()}
            if segmentation.phrase_presence is not None
            else None
        ),
    }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(float(value), 6)


def _make_folder(out: Path) -> None:
    try:
        if out.exists() and not out.is_dir():
            raise OutputError(f"{out}: exists and is not a folder; choose another output folder")
        out.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as err:
        raise OutputError(
            f"{out}: cannot create the folder, a part of its path is a file ({err.filename})"
        ) from err
    except PermissionError as err:
        raise OutputError(f"{out}: cannot create the folder (permission denied)") from err
    except OSError as err:  # read-only file system, symlink loop, disk full
        raise OutputError(f"{out}: cannot create the folder ({err.strerror or err})") from err


def _claim(out: Path, source: str | None) -> None:
    """The first writes of a save: the pending file naming `source`, then the old
    segmentation.json removed, so that from here on the folder reads as unfinished."""
    pending = json.dumps({"source": source}, ensure_ascii=False)
    write_text_atomic(out / PENDING_NAME, pending)
    _remove(out / JSON_NAME)
    _sync_folder(out)


def _commit(out: Path, data: dict) -> None:
    """The last writes of a save: leftovers removed, segmentation.json (the commit point),
    then the pending file removed."""
    _clean_leftovers(out)
    write_text_atomic(out / JSON_NAME, json.dumps(data, indent=1, ensure_ascii=False))
    _remove(out / PENDING_NAME)
    _sync_folder(out)


def _undo(out: Path, names: list[str], claimed: bool) -> None:
    """After a failed write (e.g. disk full): remove what the save wrote, so no folder is
    left with masks and no JSON; the folder too when that leaves it empty."""
    try:
        if claimed:
            for path in out.iterdir():
                if (
                    path.name in names
                    or path.name.startswith("mask_")
                    or _TMP_FILE.match(path.name)
                ):
                    _remove(path)
        _remove(out / PENDING_NAME)
        if not any(out.iterdir()):
            out.rmdir()
    except OSError:
        pass


def save(
    segmentation: Segmentation,
    out_dir: str | os.PathLike,
    *,
    image: ImageInput | None = None,
    overwrite: bool = False,
    overlay_format: str = "png",
    settings: dict | None = None,
) -> SavedFiles:
    """Write overlay.png, one mask PNG per object and segmentation.json into `out_dir`
    (created if needed). `image` defaults to the image kept in the segmentation.

    A folder that already holds this source's results is brought up to date: masks of the
    previous save that the new result does not have are removed. A folder holding another
    image's results (its segmentation.json names another source) is refused with an
    OutputError unless overwrite=True. Every file is written to a temporary name, fsynced
    and renamed, in the order of the module docstring; segmentation.json comes last, so a
    kill at any point leaves a folder the next save of the same source finishes, and one
    with segmentation.json is complete. A failed write (disk full) removes what this save
    wrote, the previous results included (their segmentation.json is removed first).
    overlay_format: "png" (overlay.png, lossless) or "jpeg" (overlay.jpg, far smaller for
    large photos; the UI's download uses it).
    settings: JSON-ready dict of what made the result, stored as "settings" (see is_done).
    Raises OutputError (one line, naming the folder) when the folder cannot be written.
    """
    from PIL import Image

    source = image if image is not None else segmentation.image
    if source is None:
        raise ValueError("this Segmentation holds no image; pass image= to draw the overlay")
    out = Path(out_dir)
    _make_folder(out)
    if not overwrite:
        holds, other = _saved_source(out)
        if holds and not _same_source(other, segmentation.source):
            raise OutputError(
                f"{out} holds the results of {other}, not of {segmentation.source}; "
                "pass overwrite=True to replace them, or save to another folder"
            )
    if overlay_format not in ("png", "jpeg"):
        raise ValueError(f"overlay_format must be 'png' or 'jpeg', got {overlay_format!r}")
    name = OVERLAY_NAME if overlay_format == "png" else "overlay.jpg"
    files = SavedFiles(overlay=out / name, json=out / JSON_NAME)
    data = to_json(segmentation)
    if settings is not None:
        data["settings"] = _settings_json(settings)
    claimed = False
    try:
        _claim(out, segmentation.source)
        claimed = True
        for i, label in enumerate(segmentation.labels):
            path = out / mask_name(i, label)
            with atomic_path(path) as tmp:
                mask = Image.fromarray(segmentation.masks[i].astype(np.uint8) * 255, mode="L")
                mask.save(tmp, format="PNG")
            files.masks.append(path)
        picture = overlay(source, segmentation)
        with atomic_path(files.overlay) as tmp:
            if overlay_format == "jpeg":
                picture.save(tmp, format="JPEG", quality=90)
            else:
                picture.save(tmp, format="PNG")
        keep = {p.name for p in files.masks}
        for stale in sorted(out.glob("mask_*.png")):
            if stale.name not in keep:
                _remove(stale)
        _commit(out, data)
    except OSError as err:
        _undo(out, [p.name for p in files.masks] + [files.overlay.name], claimed)
        raise OutputError(f"{out}: cannot write the results ({err.strerror or err})") from err
    return files


def load(path: str | os.PathLike) -> Segmentation | VideoSegmentation:
    """Read a segmentation.json (or the folder holding one) back into a Segmentation,
    masks decoded from their RLE. The image itself is not stored, so `.image` is None.
    A video's segmentation.json (textseg.save_video) comes back as a VideoSegmentation."""
    p = Path(path)
    if p.is_dir():
        p = p / JSON_NAME
    try:
        data = json.loads(p.read_text())
        if isinstance(data, dict) and data.get("kind") == "video":
            return video_from_json(data)
        h, w = int(data["image"]["height"]), int(data["image"]["width"])
        objects = data["objects"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{p}: not a textseg segmentation.json ({err})") from err
    masks = np.zeros((len(objects), h, w), dtype=bool)
    for i, obj in enumerate(objects):
        masks[i] = decode_rle(obj["mask_rle"])
    return Segmentation(
        boxes=np.array([o["box_xyxy"] for o in objects], dtype=np.float32).reshape(-1, 4),
        scores=[o["score"] for o in objects],
        labels=[o["label"] for o in objects],
        masks=masks,
        mask_scores=[o["mask_score"] for o in objects],
        image_size=(h, w),
        prompt=data.get("prompt", ""),
        phrases=tuple(data.get("phrases", ())),
        source=data.get("source"),
        kinds=[o.get("kind", "text") for o in objects],
        text_match=[o.get("text_match") for o in objects],
        presence_scores=[o.get("presence_score") for o in objects],
        phrase_presence=data.get("phrase_presence"),
    )


# --------------------------------------------------------------------------- video


def video_to_json(vseg: VideoSegmentation) -> dict:
    """The JSON-ready dict of a VideoSegmentation ("kind": "video"; masks as COCO RLE)."""
    h, w = vseg.image_size
    return {
        "version": 1,
        "kind": "video",
        "prompt": vseg.prompt,
        "phrases": list(vseg.phrases),
        "source": vseg.source,
        "image": {"height": int(h), "width": int(w)},
        "fps": float(vseg.fps),
        "num_frames": vseg.num_frames,
        "every": int(vseg.every),
        "detection_frames": list(vseg.detection_frames),
        "objects": [
            {
                "id": o.id,
                "label": o.label,
                "score": round(float(o.score), 6),
                "first_frame": o.first_frame,
                "last_frame": o.last_frame,
            }
            for o in vseg.objects
        ],
        "frames": [
            {
                "index": f,
                "objects": [
                    {
                        "id": i,
                        "score": round(float(masks[i].score), 6),
                        "box_xyxy": [round(float(v), 3) for v in masks[i].box],
                        "mask_rle": masks[i].rle,
                    }
                    for i in sorted(masks)
                ],
            }
            for f, masks in enumerate(vseg.frames)
        ],
    }


def video_from_json(data: dict) -> VideoSegmentation:
    """Rebuild a VideoSegmentation from `video_to_json`'s dict (what textseg.load does)."""
    try:
        h, w = int(data["image"]["height"]), int(data["image"]["width"])
        objects = [
            VideoObject(
                id=int(o["id"]),
                label=str(o["label"]),
                score=float(o["score"]),
                first_frame=int(o["first_frame"]),
                last_frame=int(o["last_frame"]),
            )
            for o in data["objects"]
        ]
        frames: list[dict[int, FrameMask]] = [{} for _ in range(int(data["num_frames"]))]
        for entry in data["frames"]:
            for o in entry["objects"]:
                rle = {
                    "size": [int(v) for v in o["mask_rle"]["size"]],
                    "counts": o["mask_rle"]["counts"],
                }
                if rle["size"] != [h, w]:
                    raise ValueError(f"a mask of size {rle['size']} in a {h}x{w} video")
                frames[int(entry["index"])][int(o["id"])] = FrameMask(
                    rle=rle, score=float(o["score"]), box=np.asarray(o["box_xyxy"], np.float32)
                )
        return VideoSegmentation(
            objects=objects,
            frames=frames,
            image_size=(h, w),
            fps=float(data["fps"]),
            prompt=str(data.get("prompt", "")),
            phrases=tuple(data.get("phrases", ())),
            every=int(data.get("every", 1)),
            detection_frames=tuple(data.get("detection_frames", ())),
            source=data.get("source"),
        )
    except (KeyError, TypeError, IndexError) as err:
        raise ValueError(f"not a textseg video segmentation ({type(err).__name__}: {err})") from err


@dataclass
class SavedVideo:
    """Paths written by `save_video`."""

    overlay: Path
    preview: Path
    json: Path


def save_video(
    vseg: VideoSegmentation,
    out_dir: str | os.PathLike,
    *,
    video: str | os.PathLike | None = None,
    gif_width: int = 320,
    gif_frames: int = 48,
    progress: bool = False,
    settings: dict | None = None,
) -> SavedVideo:
    """Write overlay.mp4 (every frame, masks drawn in one colour per object id),
    preview.gif (at most `gif_frames` frames, `gif_width` pixels wide) and
    segmentation.json (readable with textseg.load) into `out_dir`.

    video: the clip that was segmented (default: vseg.source), decoded again frame by
    frame, so memory stays flat. Each file is written under a temporary name, fsynced and
    renamed, in the order of the module docstring (overlay.mp4 is drawn to its temporary
    file before the folder is claimed, so a clip that does not fit leaves the folder as it
    was); the JSON comes last, so a folder with segmentation.json is complete, and a kill
    leaves one the next save finishes. A failed write (disk full) removes what this save
    wrote.
    settings: JSON-ready dict of what made the result, stored as "settings" (see is_done).
    Raises OutputError (one line) when the folder cannot be written.
    """
    from tqdm.auto import tqdm

    from textseg.video_io import iter_frames, write_gif, write_mp4

    clip = video if video is not None else vseg.source
    if clip is None:
        raise ValueError("this VideoSegmentation names no source clip; pass video=")
    out = Path(out_dir)
    _make_folder(out)
    step = max(1, math.ceil(vseg.num_frames / max(1, gif_frames)))
    preview: list[Image.Image] = []

    def drawn() -> Iterator[Image.Image]:
        frames = iter_frames(clip, max_frames=vseg.num_frames)
        for index, image in enumerate(
            tqdm(frames, desc="write", total=vseg.num_frames, disable=not progress)
        ):
            if (image.height, image.width) != vseg.image_size:
                raise VideoLoadError(
                    f"{clip}: frames are {image.height}x{image.width} but the segmentation "
                    f"was made for {vseg.image_size[0]}x{vseg.image_size[1]}; pass the clip "
                    "that was segmented"
                )
            picture = overlay(image, vseg.frame(index), ids=vseg.ids(index))
            if index % step == 0:
                preview.append(picture)
            yield picture

    files = SavedVideo(
        overlay=out / OVERLAY_VIDEO_NAME, preview=out / PREVIEW_NAME, json=out / JSON_NAME
    )
    data = video_to_json(vseg)
    if settings is not None:
        data["settings"] = _settings_json(settings)
    names = [files.overlay.name, files.preview.name]
    claimed = False
    try:
        with atomic_path(files.overlay) as tmp:
            written = write_mp4(drawn(), tmp, fps=vseg.fps)
            if written != vseg.num_frames:  # a wrong clip leaves the folder as it was
                raise VideoLoadError(
                    f"{clip}: holds {written} frames but the segmentation has "
                    f"{vseg.num_frames}; pass the clip that was segmented"
                )
            _claim(out, vseg.source)  # the clip fits: claim the folder, then rename the mp4
            claimed = True
        with atomic_path(files.preview) as tmp:
            write_gif(preview, tmp, fps=vseg.fps / step, width=gif_width)
        _commit(out, data)
    except VideoLoadError:
        _undo(out, names, claimed)
        raise
    except OSError as err:
        _undo(out, names, claimed)
        raise OutputError(f"{out}: cannot write the results ({err.strerror or err})") from err
    return files


# --------------------------------------------------------------------------- data sets
#
# A labelled data set (textseg.label_dataset) in the formats training frameworks read. Each
# writer takes the data set's folder and a LabelledSet and writes its files through
# `atomic_path`, so a kill leaves each file old or whole; writing them again from the same
# LabelledSet gives the same bytes.
#
# Coordinates: COCO's bbox is [x, y, width, height] and its polygons [x1, y1, x2, y2, ...],
# both in pixels, x to the right and y down from the image's top-left corner, a pixel (i, j)
# covering [j, j + 1] x [i, i + 1]. YOLO's values are those coordinates divided by the
# image's width (x) and height (y), in [0, 1].
#
# Polygons cannot hold holes (COCO's reader fills every polygon of an object and takes their
# union; YOLO has one outline per object): `mask_polygons` says when a mask has any. COCO
# keeps the RLE for such masks even with polygons asked for; YOLO draws only the outer
# outline, so the hole is lost (and several parts of one object are joined by zero-width
# seams into one outline, as ultralytics' own converter does).

ANNOTATIONS_NAME = "annotations.json"
DATA_YAML_NAME = "data.yaml"
YOLO_FILES_NAME = ".textseg-yolo-files.json"  # what write_yolo wrote: the only files it removes
SEGMENTATION_KINDS = ("rle", "polygon")  # what COCO's "segmentation" holds


def write_json_atomic(path: Path, data: object) -> None:
    """`data` as compact JSON (keys in the given order, UTF-8) through `atomic_path`."""
    write_text_atomic(path, json.dumps(data, ensure_ascii=False, separators=(",", ":")))


def _compress_counts(counts: list[int]) -> str:
    """COCO's compressed RLE string of uncompressed counts (pycocotools' rleToString)."""
    out = []
    for i, count in enumerate(counts):
        x = int(count) - (int(counts[i - 2]) if i > 2 else 0)
        more = True
        while more:
            c = x & 0x1F
            x >>= 5  # arithmetic shift, as in C for the negative deltas
            more = x != -1 if c & 0x10 else x != 0
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)


def _expand_counts(text: str) -> list[int]:
    """The counts of a compressed COCO RLE string (pycocotools' rleFrString)."""
    counts: list[int] = []
    pos = 0
    while pos < len(text):
        x, shift, more = 0, 0, True
        while more:
            c = ord(text[pos]) - 48
            x |= (c & 0x1F) << (5 * shift)
            more = bool(c & 0x20)
            pos += 1
            shift += 1
            if not more and c & 0x10:
                x |= -1 << (5 * shift)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def mask_to_rle(mask: np.ndarray) -> dict:
    """A (H, W) mask as compressed COCO RLE {"size": [H, W], "counts": "..."}, the form
    pycocotools' mask.encode gives (and annToMask reads)."""
    rle = encode_rle(mask)
    return {"size": rle["size"], "counts": _compress_counts(rle["counts"])}


def rle_to_mask(rle: dict) -> np.ndarray:
    """A compressed (or uncompressed) COCO RLE back to its (H, W) bool mask."""
    counts = rle["counts"]
    if isinstance(counts, str):
        counts = _expand_counts(counts)
    return decode_rle({"size": rle["size"], "counts": counts})


def mask_polygons(mask: np.ndarray) -> tuple[list[np.ndarray], bool]:
    """The outer outlines of a (H, W) mask, largest first, each (K, 2) float (x, y) in COCO
    pixel coordinates (see above): the line halfway between the centres of pixels inside and
    outside. Also whether the mask has holes (outlines a polygon cannot hold)."""
    import contourpy  # matplotlib's contour tracer, a dependency of matplotlib

    m = np.asarray(mask, dtype=bool)
    rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
    if not len(rows):
        return [], False
    r0, c0 = int(rows[0]), int(cols[0])  # traced on the mask's box only: far less to copy
    padded = np.pad(m[r0 : rows[-1] + 1, c0 : cols[-1] + 1], 1).astype(np.float32)
    tracer = contourpy.contour_generator(z=padded, line_type=contourpy.LineType.Separate)
    offset = np.array([c0 - 0.5, r0 - 0.5])  # padded index -> pixels of the whole mask
    outer, holes = [], False
    for ring in tracer.lines(0.5):
        ring = np.asarray(ring, np.float64)[:-1] + offset  # a closed ring: last == first
        x, y = ring[:, 0], ring[:, 1]
        area = 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))
        if area > 0:
            outer.append((area, ring))
        else:
            holes = True
    outer.sort(key=lambda item: -item[0])
    return [ring for _, ring in outer], holes


def polygons_to_mask(polygons: list[list[float]], height: int, width: int) -> np.ndarray:
    """COCO polygons ([[x0, y0, x1, y1, ...], ...], pixels) to an (H, W) bool mask: the
    pixels whose centre (j + 0.5, i + 0.5) lies inside one of them (their union, as COCO's
    reader takes it). The inverse of `mask_polygons` for a mask without holes, exactly: its
    outlines cross each row of centres between two centres, never on one."""
    mask = np.zeros((height, width), bool)
    for flat in polygons:
        ring = np.asarray(flat, np.float64).reshape(-1, 2)
        if len(ring) < 3:
            continue
        x0, y0 = ring[:, 0], ring[:, 1]
        x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
        # Edge k crosses the centres' row i (y = i + 0.5) when min(y0, y1) <= i + 0.5 <
        # max(y0, y1): rows lo..hi-1. Listed per edge, so the work is the crossings, not
        # rows x edges (a 12 MP outline of 15k points took 0.9 s and 45 MB that way).
        lo = np.clip(np.ceil(np.minimum(y0, y1) - 0.5), 0, height).astype(np.int64)
        hi = np.clip(np.ceil(np.maximum(y0, y1) - 0.5), 0, height).astype(np.int64)
        count = np.maximum(hi - lo, 0)
        k = np.repeat(np.arange(len(ring)), count)  # (C,) the edge of each crossing
        if not len(k):  # the outline lies between two rows of centres, or off the image
            continue
        r = lo[k] + np.arange(len(k)) - np.repeat(np.cumsum(count) - count, count)  # its row
        at = x0[k] + (r + 0.5 - y0[k]) * (x1[k] - x0[k]) / (y1[k] - y0[k])
        # every pixel whose centre lies right of a crossing flips in or out: count them, mod
        # 256 (uint8 wraps, the parity stays), over the rows the outline spans
        first = np.clip(np.floor(at - 0.5) + 1, 0, width).astype(np.int64)
        top, bottom = int(lo.min()), int(hi.max())
        flips = np.zeros((bottom - top, width + 1), np.uint8)
        np.add.at(flips, (r - top, first), 1)
        mask[top:bottom] |= np.cumsum(flips[:, :width], axis=1, dtype=np.uint8) % 2 == 1
    return mask


def _inside(points: np.ndarray, ring: np.ndarray) -> np.ndarray:
    """Which of `points` (N, 2) (x, y) lie inside the closed `ring` (K, 2) (ray casting);
    (N,) bool, in blocks of points so that memory stays near a few MB."""
    xs, ys = ring[:, 0], ring[:, 1]
    xn, yn = np.roll(xs, -1), np.roll(ys, -1)
    out = np.zeros(len(points), bool)
    step = max(1, 500_000 // max(1, len(ring)))
    for start in range(0, len(points), step):
        x, y = points[start : start + step, :1], points[start : start + step, 1:]  # (n, 1)
        crosses = (ys > y) != (yn > y)  # (n, K)
        with np.errstate(divide="ignore", invalid="ignore"):
            at = xs + (y - ys) * (xn - xs) / (yn - ys)
        out[start : start + step] = np.count_nonzero(crosses & (x < at), axis=1) % 2 == 1
    return out


def _joined(rings: list[np.ndarray]) -> np.ndarray:
    """One outline through every ring (largest first): each next ring is reached along a
    zero-width seam from the nearest point of the outline so far, walked round, and left
    the same way. A ring inside another (an island in a hole) is left out: the outline
    around it fills it already, and walking it too would cut it out again.

    The nearest point comes from a k-d tree per ring walked so far, not from all pairs of
    points: a speckled mask of a phone photo has hundreds of rings and 10^5 points, where
    the pairs took minutes and gigabytes."""
    from scipy.spatial import cKDTree  # scipy: a dependency of scikit-learn

    firsts = np.array([r[0] for r in rings])
    nested = np.zeros(len(rings), bool)
    for i, outer in enumerate(rings[:-1]):
        nested[i + 1 :] |= _inside(firsts[i + 1 :], outer)
    kept = [r for r, inner in zip(rings, nested) if not inner]
    lo, hi = np.array([r.min(0) for r in kept]), np.array([r.max(0) for r in kept])
    starts = np.cumsum([0, *(len(r) for r in kept)])  # each ring's first point id
    trees = [cKDTree(r) for r in kept]
    merged, ids = kept[0], np.arange(len(kept[0]))  # ids: which point of `kept` each is
    for k in range(1, len(kept)):
        ring = kept[k]
        gap = np.maximum(0.0, np.maximum(lo[:k] - hi[k], lo[k] - hi[:k]))  # between boxes
        bound = np.hypot(gap[:, 0], gap[:, 1])  # no point of ring r is nearer than bound[r]
        best = (np.inf, 0, 0)  # (distance, id of the outline's point, index in ring)
        for r in np.argsort(bound, kind="stable"):
            if bound[r] >= best[0]:
                break
            dist, nearest = trees[r].query(ring, distance_upper_bound=best[0])
            j = int(dist.argmin())
            if dist[j] < best[0]:
                best = (float(dist[j]), int(starts[r] + nearest[j]), j)
        _, point, j = best
        i = int(np.flatnonzero(ids == point)[0])
        order = np.concatenate([np.roll(np.arange(len(ring)), -j), [j]])
        merged = np.concatenate([merged[: i + 1], ring[order], merged[i:]])
        ids = np.concatenate([ids[: i + 1], starts[k] + order, ids[i:]])
    return merged


def coco_annotation(
    obj: LabelledObject, *, id: int, image_id: int, segmentation: str = "rle"
) -> dict:
    """One COCO instance annotation: the RLE mask (or, with segmentation="polygon", its
    outlines when it has no holes), bbox [x, y, w, h] of the finder's box, area (the mask's
    pixel count), score and iscrowd 0."""
    seg: object = obj.rle
    if segmentation == "polygon":
        rings, holes = mask_polygons(rle_to_mask(obj.rle))
        if not holes:
            seg = [[round(float(v), 2) for v in ring.ravel()] for ring in rings]
    x0, y0, x1, y1 = obj.box_xyxy
    return {
        "id": id,
        "image_id": image_id,
        "category_id": obj.category_id,
        "segmentation": seg,
        "area": int(obj.area),
        "bbox": [round(x0, 3), round(y0, 3), round(x1 - x0, 3), round(y1 - y0, 3)],
        "iscrowd": 0,
        "score": obj.score,
    }


def write_coco(out: Path, data: LabelledSet, *, segmentation: str = "rle") -> Path:
    """out/annotations.json: one COCO instance-segmentation file (info, images with file
    names relative to the image folder, categories 1..K, annotations 1..N in image order),
    written one entry per line, streamed, so memory stays flat however large the set."""
    if segmentation not in SEGMENTATION_KINDS:
        raise ValueError(f"segmentation must be one of {SEGMENTATION_KINDS}, got {segmentation!r}")
    path = Path(out) / ANNOTATIONS_NAME

    def dump(value: object) -> str:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))

    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write('{"info":' + dump(data.info) + ',\n"images":[')
        for n, image in enumerate(data.images()):
            entry = {"id": image.id, "file_name": image.file}
            entry.update(height=image.height, width=image.width)
            f.write(("\n" if n == 0 else ",\n") + dump(entry))
        f.write('\n],\n"categories":[')
        for k, name in enumerate(data.categories):
            entry = {"id": k + 1, "name": name, "supercategory": "object"}
            f.write(("\n" if k == 0 else ",\n") + dump(entry))
        f.write('\n],\n"annotations":[')
        count = 0
        for image in data.images():
            for obj in image.objects:
                count += 1
                ann = coco_annotation(obj, id=count, image_id=image.id, segmentation=segmentation)
                f.write(("\n" if count == 1 else ",\n") + dump(ann))
        f.write("\n]}\n")
    return path


def yolo_line(obj: LabelledObject, *, height: int, width: int) -> str:
    """One YOLO-seg label line: the class (category_id - 1), then the outline's x y pairs
    divided by the image's width and height (6 decimals)."""
    rings, _ = mask_polygons(rle_to_mask(obj.rle))
    outline = _joined(rings) / np.array([width, height], np.float64)
    values = " ".join(f"{v:.6f}" for v in np.clip(outline, 0.0, 1.0).ravel())
    return f"{obj.category_id - 1} {values}"


def _write_if_changed(path: Path, text: str) -> None:
    try:
        if path.read_text(encoding="utf-8") == text:
            return  # a resumed merge leaves finished labels alone
    except (OSError, ValueError):
        pass
    write_text_atomic(path, text)


def _place_image(source: Path, target: Path) -> None:
    """`target` as a hard link to `source` (a copy where links cannot be made), atomically;
    left alone when it already is that file (a link) or holds the same bytes."""
    import filecmp

    try:
        if os.path.samefile(source, target) or filecmp.cmp(source, target, shallow=False):
            return
    except OSError:
        pass
    with atomic_path(target) as tmp:
        try:
            os.link(source, tmp)
        except OSError:
            import shutil

            try:
                shutil.copyfile(source, tmp)
            except OSError as err:  # the image is gone or unreadable since it was labelled
                raise OutputError(
                    f"{source}: cannot be linked or copied to {target} ({err.strerror or err}); "
                    "put the image back, or run `textseg label` again so the data set drops it"
                ) from err


def yolo_label_clash(files: Iterable[str]) -> str | None:
    """Where two of `files` (data-set names, "sub/cat.jpg") would get one YOLO label file:
    a line that names them and says what to do; None when none would. YOLO finds an image's
    labels by its name without the suffix, so sub/cat.jpg and sub/cat.png share
    labels/sub/cat.txt. `textseg label` asks before labelling; the export asks again."""
    names: dict[Path, str] = {}
    for file in files:
        label = _yolo_label(file)
        if label in names:
            return (
                f"{names[label]} and {file} would share {label.as_posix()}: YOLO names labels "
                "by the image's name without its suffix; rename one"
            )
        names[label] = file
    return None


def _yolo_label(file: str) -> Path:
    """A data-set image's label file, relative to the YOLO folder."""
    return Path("labels", *file.split("/")).with_suffix(".txt")


def _yolo_places(root: Path, data: LabelledSet) -> list[tuple[Path, Path]]:
    """(its label file, its image's place) for every image, in order; one pass over the
    images, so their records are read once."""
    out = []
    files = []
    for image in data.images():
        files.append(image.file)
        out.append((root / _yolo_label(image.file), root / "images" / Path(*image.file.split("/"))))
    clash = yolo_label_clash(files)
    if clash:
        raise OutputError(clash)
    return out


def _remove_stale(root: Path, stale: set[str]) -> None:
    """Remove these files (relative to root), and the folders under images/ and labels/
    that they leave empty. Only paths under images/ and labels/ are taken from the list."""
    for rel in sorted(stale):
        parts = Path(rel).parts
        if len(parts) < 2 or parts[0] not in ("images", "labels") or ".." in parts:
            continue
        path = root / rel
        path.unlink(missing_ok=True)
        for folder in path.parents:
            if folder in (root, root / "images", root / "labels") or root not in folder.parents:
                break
            try:
                folder.rmdir()
            except OSError:  # not empty
                break


def write_yolo(out: Path, data: LabelledSet, *, segmentation: str = "rle") -> Path:
    """The data set in ultralytics' YOLO-seg layout: out/images/<file> (hard links to the
    images, copies where links cannot be made), out/labels/<file stem>.txt (one line per
    object, `yolo_line`; empty for an image with no object) and out/data.yaml (path, train
    and val set to images/, names by class index). `segmentation` is COCO's and unused.

    The files it wrote are listed in out/YOLO_FILES_NAME, so that an image gone from the
    data set since (deleted from the folder, now unreadable) loses its image and labels
    here too; nothing else in out is ever removed. The list is widened before any file is
    written and narrowed after the stale ones are gone, so a kill leaves none unlisted."""
    root = Path(out)
    listing = root / YOLO_FILES_NAME
    try:
        before = set(json.loads(listing.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        before = set()
    places = _yolo_places(root, data)
    files = {p.relative_to(root).as_posix() for place in places for p in place}
    listed = before | files
    if listed != before:
        write_json_atomic(listing, sorted(listed))
    for image, (label, target) in zip(data.images(), places):
        label.parent.mkdir(parents=True, exist_ok=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        _place_image(image.path, target)
        lines = [yolo_line(o, height=image.height, width=image.width) for o in image.objects]
        _write_if_changed(label, "".join(line + "\n" for line in lines))
    if listed != files:
        _remove_stale(root, listed - files)
        write_json_atomic(listing, sorted(files))
    yaml = [
        "# YOLO-seg data set written by textseg label: train and val are the same images",
        f"path: {json.dumps(str(root.resolve()))}",
        "train: images",
        "val: images",
        "names:",
        *(
            f"  {k}: {json.dumps(name, ensure_ascii=False)}"
            for k, name in enumerate(data.categories)
        ),
    ]
    path = root / DATA_YAML_NAME
    _write_if_changed(path, "\n".join(yaml) + "\n")
    return path


# The one table of data-set formats: `textseg label --format NAME`, label_dataset(formats=)
# and the tests read it. A writer: (out folder, LabelledSet, *, segmentation) -> its main file.
DATASET_FORMATS: dict[str, Callable[..., Path]] = {"coco": write_coco, "yolo": write_yolo}

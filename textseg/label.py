"""Label a whole folder as one data set: COCO instance segmentation (and YOLO-seg), resumable
after any kill, sharded over the ranks of a torchrun world.

    python -m textseg label photos/ --prompt "car, person" --out dataset/
    torchrun --nproc-per-node 4 -m textseg label photos/ --prompt "car, person" --out dataset/
    textseg.label_dataset(ts, "photos/", "car, person", out="dataset/")

Layout of DATASET (`--out`):
    annotations.json            COCO: images (file names relative to FOLDER), categories,
                                annotations (RLE segmentation, bbox, area, score, iscrowd 0)
    summary.json                images, objects per class, images with no object, skipped
                                and failed images with the reason for each
    per_image/<dir>/<name_ext>/ each image's overlay.png, mask PNGs and segmentation.json,
                                as `textseg.save` writes them (unless per_image=False)
    images/, labels/, data.yaml with format "yolo" (textseg.export.write_yolo)
    .textseg-label/run.json     the recipe: folder, prompt, classes, thresholds, model
    .textseg-label/records/     one record per finished image: the commit point

Order of writes, and why a kill anywhere is safe: run.json first (once); then per image its
per-image files, then its record (atomically: the image is done once its record exists);
then, once every rank is done, the merge writes each format's files and summary.json, each
atomically and from the records alone, so a killed merge is simply run again. Running the
same call again skips images with a record (an image whose size or modification time
changed is done again; a failed one is tried again) and always merges.

A changed prompt, classes, threshold or model is refused (LabelError, one line naming the
difference); so is an --out that holds another folder's data set, or files of its own.
Under torchrun every rank lists the same images, takes every world_size-th of those not yet
done (textseg.distributed.Ranks), and rank 0 merges after a barrier. DATASET must be on a
file system every rank sees.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from textseg.distributed import Ranks
from textseg.errors import LabelError, OutputError, TextsegError
from textseg.export import (
    DATASET_FORMATS,
    SEGMENTATION_KINDS,
    mask_to_rle,
    save,
    write_json_atomic,
    yolo_label_clash,
)
from textseg.images import IMAGE_SUFFIXES
from textseg.parts import check_unit
from textseg.prompt import parse_prompt
from textseg.result import LabelledImage, LabelledObject, LabelledSet

if TYPE_CHECKING:
    from textseg.pipeline import TextSegmenter

__all__ = ["LabelSummary", "label_dataset", "list_dataset_images", "parse_classes"]

STATE_DIR = ".textseg-label"
RUN_NAME = "run.json"
SUMMARY_NAME = "summary.json"
PER_IMAGE_DIR = "per_image"
RECIPE_VERSION = 1

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- settings


def parse_classes(text: str | Mapping[str, str] | None, phrases: Sequence[str]) -> dict[str, str]:
    """{phrase: category} for every phrase of the prompt, from "red car=car, blue car=car"
    (or a dict); phrases not named are their own category. Names are normalised as prompt
    phrases are (lower case, single spaces)."""
    if text is None:
        pairs: list[tuple[str, str]] = []
    elif isinstance(text, Mapping):
        pairs = [(str(k), str(v)) for k, v in text.items()]
    else:
        pairs = []
        for part in str(text).split(","):
            if not part.strip():
                continue
            if part.count("=") != 1:
                raise LabelError(
                    f"classes: {part.strip()!r} is not PHRASE=CLASS, e.g. 'red car=car'"
                )
            left, right = part.split("=")
            pairs.append((left, right))
    mapping = {p: p for p in phrases}
    for left, right in pairs:
        phrase = " ".join(left.lower().split())
        category = " ".join(right.split())
        if phrase not in phrases:
            raise LabelError(
                f"classes: {phrase!r} is not a phrase of the prompt ({', '.join(phrases)})"
            )
        if not category:
            raise LabelError(f"classes: {left.strip()}= names no class")
        mapping[phrase] = category
    return mapping


def _categories(classes: Mapping[str, str], phrases: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(classes[p] for p in phrases))


def _phrase_thresholds(
    thresholds: Mapping[str, float] | None, classes: Mapping[str, str], phrases: Sequence[str]
) -> dict[str, float]:
    """{phrase: threshold} from thresholds named by phrase or by class (a class's threshold
    is each of its phrases'; a phrase named itself wins)."""
    out: dict[str, float] = {}
    by_phrase: dict[str, float] = {}
    for raw, value in (thresholds or {}).items():
        name = " ".join(str(raw).lower().split())
        value = check_unit(f"box threshold of {name!r}", value)
        if name in phrases:
            by_phrase[name] = value
            continue
        members = [p for p in phrases if classes[p].lower() == name]
        if not members:
            known = ", ".join(dict.fromkeys([*phrases, *classes.values()]))
            raise LabelError(f"box threshold {name}=: not a phrase or class of this run ({known})")
        out.update({p: value for p in members})
    out.update(by_phrase)
    return {p: out[p] for p in phrases if p in out}


def _model_name(segmenter: TextSegmenter) -> str:
    """What the recipe says about the models: the backend and each part's source."""
    parts = []
    for role in ("detector", "masker", "segmenter", "checker"):
        part = getattr(segmenter, role, None)
        if part is None:
            continue
        model = getattr(part, "model", None) or getattr(
            getattr(part, "predictor", None), "model", None
        )
        source = getattr(model, "name_or_path", None) or type(model or part).__name__
        parts.append(f"{role}={source}")
    return f"{segmenter.backend}: {', '.join(parts)}"


# --------------------------------------------------------------------------- the images


@dataclass(frozen=True)
class _Entry:
    file: str  # relative to the folder, "/"-separated
    path: Path  # absolute
    per_image: str  # relative to DATASET
    record: str  # record file name


def _clean(name: str) -> str:
    return re.sub(r"[^\w-]+", "_", name, flags=re.UNICODE).strip("_")[:100] or "image"


def list_dataset_images(folder: str | os.PathLike, *, exclude: Path | None = None) -> list[str]:
    """The image files under `folder`, recursively, as "/"-separated paths relative to it,
    sorted by that path: the data set's order. Hidden files and folders (".name") and the
    folder `exclude` (the data set being written, when it is inside) are left out."""
    root = Path(folder).resolve()
    skip = exclude.resolve() if exclude is not None else None
    found = []
    for here, dirs, files in os.walk(root):
        base = Path(here)
        dirs[:] = [d for d in dirs if not d.startswith(".") and (base / d) != skip]
        for name in files:
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES:
                found.append((base / name).relative_to(root).as_posix())
    return sorted(found)


def _entries(folder: Path, files: list[str]) -> list[_Entry]:
    """Each file's per-image folder (its folders' names cleaned, then its name with the
    suffix, e.g. sub/cat.jpg -> per_image/sub/cat_jpg; a clash gets _2, _3 in file order)
    and its record's name."""
    used: set[str] = set()
    out = []
    for file in files:
        *dirs, name = file.split("/")
        base = "/".join([PER_IMAGE_DIR, *(_clean(d) for d in dirs), _clean(name)])
        per_image, n = base, 2
        while per_image.lower() in used:
            per_image, n = f"{base}_{n}", n + 1
        used.add(per_image.lower())
        digest = hashlib.sha1(file.encode("utf-8")).hexdigest()[:20]
        out.append(_Entry(file, folder / file, per_image, f"{digest}.json"))
    return out


def _stamp(path: Path) -> dict:
    stat = path.stat()
    return {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _read_record(records: Path, entry: _Entry) -> dict | None:
    """The image's record, or None when it has none, it names another file, or the image
    changed since (size or modification time)."""
    try:
        record = json.loads((records / entry.record).read_text(encoding="utf-8"))
        if record.get("file") != entry.file or record.get("stamp") != _stamp(entry.path):
            return None
        return record
    except (OSError, ValueError, AttributeError):
        return None


# --------------------------------------------------------------------------- the recipe


def _check_out(out: Path, recipe: dict) -> bool:
    """Raise LabelError when `out` cannot hold this run's data set; True when it holds this
    data set already (a resume)."""
    run = out / STATE_DIR / RUN_NAME
    if out.exists() and not out.is_dir():
        raise LabelError(f"--out {out}: exists and is not a folder; choose another --out")
    try:
        saved = json.loads(run.read_text(encoding="utf-8"))
    except FileNotFoundError:
        saved = None
    except (OSError, ValueError) as err:
        raise LabelError(f"{run}: unreadable ({err}); choose another --out") from err
    if saved is None:
        others = (
            sorted(p.name for p in out.iterdir() if p.name != STATE_DIR) if out.is_dir() else []
        )
        if others:
            shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
            raise LabelError(
                f"--out {out} holds other files ({shown}) and no textseg data set; "
                "choose an empty or new folder"
            )
        return False
    if saved.get("folder") != recipe["folder"]:
        raise LabelError(
            f"--out {out} holds the data set of {saved.get('folder')}, not of {recipe['folder']}; "
            "choose another --out"
        )
    for key, value in recipe.items():
        if saved.get(key) != value:
            raise LabelError(
                f"{out} was labelled with {key} {_show(saved.get(key))}, this run asks for "
                f"{_show(value)}; run with the same settings to resume, or choose another --out"
            )
    return True


def _show(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)


def _remove_temporaries(out: Path) -> int:
    """Remove what a killed write left (atomic_path's ".name.XXXX.tmp" files)."""
    removed = 0
    for here, _, files in os.walk(out):
        for name in files:
            if name.startswith(".") and name.endswith(".tmp"):
                (Path(here) / name).unlink(missing_ok=True)
                removed += 1
    return removed


# --------------------------------------------------------------------------- the summary


@dataclass
class LabelSummary:
    """What a labelling run left in `out`.

    images: image files found. labelled: images with a result (with or without objects).
    objects: {class: count}, in category order. no_objects: files labelled with no object.
    skipped: [(file, reason)] for images that could not be read; failed: [(file, reason)]
    for images where segmenting or saving failed (tried again on the next run); missing:
    files not labelled yet (a rank stopped early). empty_masks: objects left out because
    their mask was empty. files: {format: its main file, relative to out}.
    """

    out: Path
    images: int
    labelled: int
    objects: dict[str, int]
    no_objects: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    empty_masks: int = 0
    files: dict[str, str] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        """Every image labelled or skipped as unreadable."""
        return not self.failed and not self.missing

    def to_json(self) -> dict:
        return {
            "images": self.images,
            "labelled": self.labelled,
            "objects": self.objects,
            "no_objects": self.no_objects,
            "skipped": [{"file": f, "reason": r} for f, r in self.skipped],
            "failed": [{"file": f, "reason": r} for f, r in self.failed],
            "missing": self.missing,
            "empty_masks": self.empty_masks,
            "files": self.files,
        }

    @classmethod
    def from_json(cls, out: Path, data: dict) -> LabelSummary:
        return cls(
            out=out,
            images=data["images"],
            labelled=data["labelled"],
            objects=data["objects"],
            no_objects=data["no_objects"],
            skipped=[(d["file"], d["reason"]) for d in data["skipped"]],
            failed=[(d["file"], d["reason"]) for d in data["failed"]],
            missing=data["missing"],
            empty_masks=data["empty_masks"],
            files=data["files"],
        )

    def lines(self) -> list[str]:
        """The summary for people: one line of counts, then one per skipped/failed file."""
        total = sum(self.objects.values())
        per_class = ", ".join(f"{n} {name}" for name, n in self.objects.items())
        head = (
            f"{self.images} images: {self.labelled} labelled, {len(self.skipped)} skipped, "
            f"{len(self.failed)} failed"
            + (f", {len(self.missing)} not labelled yet" if self.missing else "")
            + f"; {total} objects ({per_class}); {len(self.no_objects)} with no object"
        )
        out = [head]
        if self.empty_masks:
            out.append(f"{self.empty_masks} objects with an empty mask left out")
        out += [f"skipped {f}: {r}" for f, r in self.skipped]
        out += [f"failed {f}: {r}" for f, r in self.failed]
        out += [f"{fmt}: {self.out / path}" for fmt, path in self.files.items()]
        return out


# --------------------------------------------------------------------------- labelling


def _label_one(
    segmenter: TextSegmenter,
    entry: _Entry,
    prompt: str,
    options: dict,
    category_of: Mapping[str, int],
    out: Path,
    per_image: bool,
) -> dict:
    """Segment one image, write its per-image files, and return its record."""
    record: dict = {"file": entry.file, "stamp": _stamp(entry.path)}
    try:
        seg = segmenter.segment(entry.path, prompt, **options)
    except TextsegError as err:  # unreadable or odd image: skipped, listed, never retried
        return {**record, "status": "skipped", "reason": " ".join(str(err).split())}
    except Exception as err:  # noqa: BLE001 - one failure must not stop the data set
        logger.debug("segmenting %s failed", entry.file, exc_info=True)
        return {**record, "status": "failed", "reason": f"{type(err).__name__}: {err}"}
    if per_image:
        try:
            save(seg, out / entry.per_image)
        except OSError as err:  # OutputError included
            reason = f"not saved: {' '.join(str(err).split())}"
            return {**record, "status": "failed", "reason": reason}
    objects, empty = [], 0
    for i, label in enumerate(seg.labels):
        area = int(seg.masks[i].sum())
        if area == 0:
            empty += 1
            continue
        objects.append(
            {
                "category_id": category_of[label],
                "label": label,
                "score": round(float(seg.scores[i]), 6),
                "box_xyxy": [round(float(v), 3) for v in seg.boxes[i]],
                "area": area,
                "rle": mask_to_rle(seg.masks[i]),
            }
        )
    h, w = seg.image_size
    return {
        **record,
        "status": "done",
        "height": int(h),
        "width": int(w),
        "objects": objects,
        "empty_masks": empty,
    }


def label_dataset(
    segmenter: TextSegmenter,
    folder: str | os.PathLike,
    prompt: str,
    *,
    out: str | os.PathLike,
    classes: str | Mapping[str, str] | None = None,
    formats: Sequence[str] = ("coco",),
    segmentation: str = "rle",
    box_threshold: float = 0.35,
    box_thresholds: Mapping[str, float] | None = None,
    text_threshold: float = 0.25,
    nms_iou: float = 0.5,
    max_objects: int | None = None,
    multimask: bool = False,
    detector_size: int | None = None,
    min_text_match: float | None = None,
    per_image: bool = True,
    model: str | None = None,
    progress: bool = True,
    ranks: Ranks | None = None,
) -> LabelSummary:
    """Label every image under `folder` with `prompt` into the data set folder `out`.

    segmenter: a TextSegmenter (TextSegmenter.from_pretrained(...)).
    folder: the images, found recursively (see list_dataset_images).
    prompt: phrases, e.g. "red car, blue car, person"; each is a class unless `classes`
        maps it: "red car=car, blue car=car" (or {"red car": "car", ...}).
    formats: names of textseg.export.DATASET_FORMATS: "coco" (annotations.json) and/or
        "yolo" (images/, labels/, data.yaml).
    segmentation: COCO's "segmentation": "rle" (exact) or "polygon" (outlines; masks with
        holes keep their RLE, since polygons cannot hold holes).
    box_threshold, text_threshold, nms_iou, max_objects, multimask, detector_size,
        min_text_match: as in TextSegmenter.segment.
    box_thresholds: {phrase or class: threshold}, e.g. {"car": 0.4}; the rest keep
        box_threshold.
    per_image: also write each image's overlay, mask PNGs and segmentation.json.
    model: how the recipe names the models (default: read from the segmenter); a resume
        with another is refused.
    progress: a tqdm bar (images/s and ETA) on rank 0.
    ranks: this process's place in a torchrun world (default Ranks.from_env()).
    Returns the LabelSummary (also in out/summary.json). Raises LabelError (one line) when
    the folder, the settings or `out` do not fit; bad images are skipped and listed.
    """
    from tqdm.auto import tqdm  # not at import: tqdm.auto looks for notebook widgets

    root = Path(folder)
    if not root.is_dir():
        raise LabelError(f"{root}: not a folder; pass the folder of images to label")
    parsed = parse_prompt(prompt)
    segmenter.check_prompt(parsed)
    mapping = parse_classes(classes, parsed.phrases)
    categories = _categories(mapping, parsed.phrases)
    per_phrase = _phrase_thresholds(box_thresholds, mapping, parsed.phrases)
    unknown = [f for f in formats if f not in DATASET_FORMATS]
    if unknown or not formats:
        raise LabelError(
            f"formats must be some of {', '.join(DATASET_FORMATS)}, got {list(formats)}"
        )
    if segmentation not in SEGMENTATION_KINDS:
        raise LabelError(f"segmentation must be one of {', '.join(SEGMENTATION_KINDS)}")
    options = dict(
        box_threshold=box_threshold,
        text_threshold=text_threshold,
        nms_iou=nms_iou,
        max_objects=max_objects,
        multimask=multimask,
        detector_size=detector_size,
        min_text_match=min_text_match,
        box_thresholds=per_phrase or None,
    )
    checked = segmenter.check_options(**options)  # bad values fail here, before any write
    recipe = {
        "version": RECIPE_VERSION,
        "folder": str(root.resolve()),
        "prompt": parsed.text,
        "classes": mapping,
        "box_threshold": checked.box_threshold,
        "box_thresholds": per_phrase,
        "text_threshold": checked.text_threshold,
        "nms_iou": checked.nms_iou,
        "max_objects": checked.max_objects,
        "multimask": bool(multimask),
        "detector_size": detector_size,
        "min_text_match": checked.min_text_match,
        "model": model if model is not None else _model_name(segmenter),
    }
    ranks = ranks if ranks is not None else Ranks.from_env()
    dest = Path(out)
    files = list_dataset_images(root, exclude=dest)
    clash = yolo_label_clash(files) if "yolo" in formats else None
    if clash:  # before any image is labelled: the merge would stop at the end on it
        raise LabelError(f"{root}: {clash}, or leave out --format yolo")
    state = dest / STATE_DIR
    records = state / "records"
    resumed = _check_out(dest, recipe)  # every rank checks; only rank 0 writes
    if ranks.is_main:
        try:
            records.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise OutputError(f"--out {dest}: cannot create the folder ({err})") from err
        removed = _remove_temporaries(dest)
        if removed:
            logger.info("removed %d temporary files a killed run left in %s", removed, dest)
        if not resumed:
            write_json_atomic(state / RUN_NAME, recipe)
    ranks.barrier()
    entries = _entries(root.resolve(), files)
    pending = [
        e for e in entries if (r := _read_record(records, e)) is None or r.get("status") == "failed"
    ]
    ranks.barrier()  # every rank has listed the same pending images before any is written
    mine = ranks.shard(pending)
    category_of = {p: categories.index(mapping[p]) + 1 for p in parsed.phrases}
    logger.info(
        "%d images, %d to label, %d on rank %d", len(entries), len(pending), len(mine), ranks.rank
    )
    desc = "label" if not ranks.enabled else f"label (rank 0 of {ranks.world_size})"
    bar = tqdm(mine, desc=desc, unit="img", disable=not progress or not ranks.is_main)
    for entry in bar:
        record = _label_one(segmenter, entry, parsed.text, options, category_of, dest, per_image)
        write_json_atomic(records / entry.record, record)  # the commit point of the image
        if record["status"] != "done":
            logger.warning("%s %s: %s", record["status"], entry.file, record["reason"])
    bar.close()
    ranks.barrier()
    if ranks.is_main:
        summary = merge(dest, entries, categories, formats=formats, segmentation=segmentation)
    ranks.barrier()
    if not ranks.is_main:
        data = json.loads((dest / SUMMARY_NAME).read_text(encoding="utf-8"))
        summary = LabelSummary.from_json(dest, data)
    return summary


# --------------------------------------------------------------------------- the merge


def merge(
    out: Path,
    entries: list[_Entry],
    categories: list[str],
    *,
    formats: Sequence[str],
    segmentation: str,
) -> LabelSummary:
    """Write each format's files and summary.json from the records (the same records give
    the same bytes), in that order; a killed merge is run again."""
    records = out / STATE_DIR / "records"

    def labelled() -> Iterator[tuple[_Entry, dict]]:
        for entry in entries:
            record = _read_record(records, entry)
            yield entry, record

    def images() -> Iterator[LabelledImage]:
        image_id = 0
        for entry, record in labelled():
            if record is None or record["status"] != "done":
                continue
            image_id += 1
            yield LabelledImage(
                id=image_id,
                file=entry.file,
                path=entry.path,
                height=record["height"],
                width=record["width"],
                objects=[
                    LabelledObject(
                        category_id=o["category_id"],
                        label=o["label"],
                        score=o["score"],
                        box_xyxy=o["box_xyxy"],
                        area=o["area"],
                        rle=o["rle"],
                    )
                    for o in record["objects"]
                ],
            )

    info = {"description": "labelled by textseg label", "categories_from": "prompt phrases"}
    data = LabelledSet(categories=categories, images=images, info=info)
    files = {}
    for name in formats:
        written = DATASET_FORMATS[name](out, data, segmentation=segmentation)
        files[name] = Path(written).relative_to(out).as_posix()
    counts: Counter[str] = Counter()
    summary = LabelSummary(out=out, images=len(entries), labelled=0, objects={})
    for entry, record in labelled():
        if record is None:
            summary.missing.append(entry.file)
        elif record["status"] == "skipped":
            summary.skipped.append((entry.file, record["reason"]))
        elif record["status"] == "failed":
            summary.failed.append((entry.file, record["reason"]))
        else:
            summary.labelled += 1
            summary.empty_masks += int(record.get("empty_masks", 0))
            counts.update(categories[o["category_id"] - 1] for o in record["objects"])
            if not record["objects"]:
                summary.no_objects.append(entry.file)
    summary.objects = {name: counts.get(name, 0) for name in categories}
    summary.files = files
    write_json_atomic(out / SUMMARY_NAME, summary.to_json())
    return summary

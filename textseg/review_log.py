"""Review of a labelled data set (`textseg label`): the decisions, saved as they are made,
and the export of what was reviewed.

    log = ReviewLog(dataset, user="ana")       # DATASET/review.jsonl, appended to
    log.decide(item, "accept"); log.decide(item, "relabel", label="truck")
    log.no_object("img3.jpg"); log.add("img3.jpg", label="dog", box_xyxy=..., rle=...)
    export_reviewed(dataset, formats=("coco", "yolo"))   # DATASET/reviewed/annotations.json

The decision file DATASET/review.jsonl holds one JSON object per line, one line per
decision, each appended then flushed and fsynced: a kill, a closed tab or a Colab disconnect
loses at most the decision being written. A torn last line (a kill mid-write) is ignored on
read, with a warning, and cut off before the next append; a bad line elsewhere is refused in
one line naming the file and the line. Fields of a record:

    v 1; action: accept | reject | relabel | add | no_object; user; time (ISO 8601, UTC);
    image: the image's file_name in annotations.json; annotation: its COCO id (None for an
    image's decision); object: the object's key (`object_key`: stable across a re-merge of
    the data set, which renumbers annotation ids); label: the new class (relabel, add);
    added: {box_xyxy, area, rle, score} for an object the user added (its key is new).

Decisions by one user: the latest on an object wins; "no_object" rejects every object the
image had then. Several users (one shared file, or one file each merged with
`merge_reviews`): where users' latest decisions on an object differ, that is a conflict, and
it names both; the export refuses conflicts unless told to take the latest by time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from textseg.errors import TextsegError
from textseg.export import (
    ANNOTATIONS_NAME,
    DATASET_FORMATS,
    SEGMENTATION_KINDS,
    mask_to_rle,
    polygons_to_mask,
    write_json_atomic,
    write_text_atomic,
)
from textseg.label import RUN_NAME, STATE_DIR
from textseg.result import LabelledImage, LabelledObject, LabelledSet

__all__ = [
    "ACTIONS",
    "REVIEW_NAME",
    "Conflict",
    "Decision",
    "ReviewError",
    "ReviewItem",
    "ReviewLog",
    "ReviewState",
    "ReviewSummary",
    "export_reviewed",
    "load_items",
    "merge_reviews",
    "object_key",
    "read_decisions",
    "resolve",
]

REVIEW_NAME = "review.jsonl"
REVIEWED_DIR = "reviewed"  # export_reviewed's default out, inside the data set
ACTIONS = ("accept", "reject", "relabel", "add", "no_object")
CONFLICT_RULES = ("stop", "latest")

logger = logging.getLogger(__name__)


class ReviewError(TextsegError, ValueError):
    """A review cannot go on as asked: no data set, a damaged decision file, conflicts."""


# --------------------------------------------------------------------------- the data set


@dataclass(frozen=True)
class ReviewItem:
    """One object of the data set to review. key: `object_key`; annotation: its COCO id;
    image: file_name; category: its class name; score: the finder's; text_match: SAM 3's
    check, when it ran; bbox: COCO [x, y, w, h]; rle: the mask (compressed COCO RLE)."""

    key: str
    annotation: int
    image: str
    image_id: int
    category: str
    score: float
    text_match: float | None
    bbox: list[float]
    area: int
    rle: dict

    @property
    def sureness(self) -> float:
        """What the queue sorts by, least sure first: text_match when SAM 3 checked, else
        the detector's score."""
        return self.text_match if self.text_match is not None else self.score


def object_key(image: str, rle: dict) -> str:
    """An object's key: a digest of its image and mask, the same after a re-merge."""
    text = image + "\n" + json.dumps(rle.get("counts"), separators=(",", ":"))
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


@dataclass
class DataSet:
    """annotations.json as read: images {id: entry}, categories (names by id order), items
    in annotation order, and the image folder of the labelling run (None if unknown)."""

    root: Path
    images: dict[int, dict]
    categories: list[str]
    items: list[ReviewItem]
    folder: Path | None

    def by_image(self) -> dict[str, list[ReviewItem]]:
        out: dict[str, list[ReviewItem]] = {e["file_name"]: [] for e in self.images.values()}
        for item in self.items:
            out[item.image].append(item)
        return out


def load_items(dataset: str | os.PathLike) -> DataSet:
    """Read DATASET/annotations.json (written by `textseg label`) into review items."""
    root = Path(dataset)
    path = root / ANNOTATIONS_NAME
    try:
        coco = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise ReviewError(
            f"{path}: not found; review a folder written by `textseg label --out DATASET`"
        ) from err
    except (OSError, ValueError) as err:
        raise ReviewError(f"{path}: unreadable ({err}); run `textseg label` again") from err
    images = {int(e["id"]): e for e in coco.get("images", [])}
    names = {int(c["id"]): c["name"] for c in coco.get("categories", [])}
    categories = [names[k] for k in sorted(names)]
    items = []
    for ann in coco.get("annotations", []):
        image = images[int(ann["image_id"])]
        rle = ann["segmentation"]
        if isinstance(rle, list):  # `textseg label --segmentation polygon`: masks without holes
            rle = mask_to_rle(polygons_to_mask(rle, int(image["height"]), int(image["width"])))
        elif not isinstance(rle, dict):
            rle = {}
        key = object_key(image["file_name"], rle) if rle else f"ann-{ann['id']}"
        items.append(
            ReviewItem(
                key=key,
                annotation=int(ann["id"]),
                image=image["file_name"],
                image_id=int(ann["image_id"]),
                category=names[int(ann["category_id"])],
                score=float(ann.get("score", 1.0)),
                text_match=ann.get("text_match"),
                bbox=list(ann["bbox"]),
                area=int(ann["area"]),
                rle=rle,
            )
        )
    folder = None
    try:
        run = json.loads((root / STATE_DIR / RUN_NAME).read_text(encoding="utf-8"))
        folder = Path(run["folder"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return DataSet(root=root, images=images, categories=categories, items=items, folder=folder)


# --------------------------------------------------------------------------- decisions


@dataclass(frozen=True)
class Decision:
    """One line of review.jsonl (see the module's docstring)."""

    action: str
    user: str
    time: str
    image: str
    annotation: int | None = None
    object: str | None = None
    label: str | None = None
    added: dict | None = None

    def to_json(self) -> dict:
        out = {"v": 1, "action": self.action, "user": self.user, "time": self.time}
        out.update(image=self.image, annotation=self.annotation, object=self.object)
        if self.label is not None:
            out["label"] = self.label
        if self.added is not None:
            out["added"] = self.added
        return out

    @classmethod
    def from_json(cls, data: dict) -> Decision:
        if data.get("action") not in ACTIONS:
            raise ValueError(f"action {data.get('action')!r} is not one of {ACTIONS}")
        return cls(
            action=data["action"],
            user=str(data["user"]),
            time=str(data["time"]),
            image=str(data["image"]),
            annotation=data.get("annotation"),
            object=data.get("object"),
            label=data.get("label"),
            added=data.get("added"),
        )

    def describe(self) -> str:
        what = self.action + (f" as {self.label!r}" if self.label else "")
        return f"{self.user} {what} at {self.time}"


def _lines(path: Path) -> tuple[list[tuple[int, str]], int | None]:
    """The complete lines of `path` (number, text) and, when its last line is torn (no
    newline and not JSON), the byte offset where that line starts."""
    data = path.read_bytes()
    torn_at = None
    if data and not data.endswith(b"\n"):
        start = data.rfind(b"\n") + 1
        try:
            json.loads(data[start:].decode("utf-8"))
        except ValueError:
            torn_at = start
            data = data[:start]
    text = data.decode("utf-8", errors="replace")
    return [(n + 1, line) for n, line in enumerate(text.splitlines()) if line.strip()], torn_at


def read_decisions(path: str | os.PathLike) -> list[Decision]:
    """The decisions in one review file, in file order; [] when it does not exist."""
    path = Path(path)
    if not path.exists():
        return []
    lines, torn_at = _lines(path)
    if torn_at is not None:
        logger.warning("%s: the last line was cut off by a kill and is ignored", path)
    out = []
    for number, line in lines:
        try:
            out.append(Decision.from_json(json.loads(line)))
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise ReviewError(
                f"{path}, line {number}: not a review decision ({err}); remove that line"
            ) from err
    return out


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


class ReviewLog:
    """The decision file of one user on one data set, appended to as decisions are made.
    `decisions` holds what was in the file when opened, then every new one."""

    def __init__(
        self, dataset: str | os.PathLike, *, user: str, path: str | os.PathLike | None = None
    ):
        if not str(user).strip():
            raise ReviewError("user: give a name, so that merged decisions say whose they are")
        self.dataset = Path(dataset)
        self.user = str(user).strip()
        self.path = Path(path) if path is not None else self.dataset / REVIEW_NAME
        self.decisions = read_decisions(self.path)
        self.notes: list[str] = []
        if self.path.exists():
            _, torn_at = _lines(self.path)
            if torn_at is not None:  # cut the torn line so the next append starts clean
                with open(self.path, "r+b") as f:
                    f.truncate(torn_at)
                    os.fsync(f.fileno())
                self.notes.append(f"{self.path.name}: a decision cut off by a kill was ignored")

    def append(self, decision: Decision) -> Decision:
        line = json.dumps(decision.to_json(), ensure_ascii=False, separators=(",", ":")) + "\n"
        try:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
        except OSError as err:
            raise ReviewError(f"{self.path}: cannot save the decision ({err})") from err
        self.decisions.append(decision)
        return decision

    def decide(self, item: ReviewItem, action: str, *, label: str | None = None) -> Decision:
        """accept, reject or relabel (label: a class, new or not) one object."""
        if action not in ("accept", "reject", "relabel"):
            raise ReviewError(f"action {action!r}: an object is accepted, rejected or relabelled")
        if action == "relabel":
            label = " ".join(str(label or "").split())
            if not label:
                raise ReviewError("relabel: choose a class or type a new one")
        else:
            label = None
        return self.append(
            Decision(action, self.user, _now(), item.image, item.annotation, item.key, label)
        )

    def no_object(self, image: str) -> Decision:
        """Mark `image` as holding no object: every object it has now is rejected."""
        return self.append(Decision("no_object", self.user, _now(), image))

    def add(
        self, image: str, *, label: str, box_xyxy: Sequence[float], rle: dict, area: int,
        score: float = 1.0,
    ) -> Decision:  # fmt: skip
        """An object the data set missed, with its mask (from SAM 2) and class."""
        label = " ".join(str(label or "").split())
        if not label:
            raise ReviewError("add: choose a class or type a new one for the added object")
        if int(area) <= 0:
            raise ReviewError("add: the mask is empty; click on the object or draw a larger box")
        added = {
            "box_xyxy": [round(float(v), 3) for v in box_xyxy],
            "area": int(area),
            "rle": rle,
            "score": float(score),
        }
        key = "add-" + uuid.uuid4().hex[:12]
        return self.append(Decision("add", self.user, _now(), image, None, key, label, added))


# --------------------------------------------------------------------------- resolving


@dataclass(frozen=True)
class Conflict:
    """Two users' latest decisions on one object differ."""

    image: str
    object: str
    annotation: int | None
    first: Decision
    second: Decision

    def describe(self) -> str:
        ann = f"annotation {self.annotation}" if self.annotation is not None else self.object
        return f"{self.image} {ann}: {self.first.describe()}; {self.second.describe()}"


@dataclass
class ReviewState:
    """What the decisions come to: final[key] = the decision in force on each decided
    object (no_object expanded to a reject per object), added[key] = each added object's
    "add" decision (still in force: a later reject on its key removes it), the images with
    any decision, and the conflicts between users."""

    final: dict[str, Decision] = field(default_factory=dict)
    added: dict[str, Decision] = field(default_factory=dict)
    reviewed_images: set[str] = field(default_factory=set)
    conflicts: list[Conflict] = field(default_factory=list)

    def outcome(self, key: str) -> str | None:
        d = self.final.get(key)
        return None if d is None else d.action


def _fold(
    decisions: Iterable[tuple[int, Decision]], by_image: dict[str, list[str]]
) -> dict[str, tuple[int, Decision]]:
    """One user's (position, decision) in order -> {object key: (position, decision in
    force)}; the position (in the merged list) breaks ties of time between users."""
    final: dict[str, tuple[int, Decision]] = {}
    added_to: dict[str, list[str]] = {}
    for pos, d in decisions:
        if d.action == "no_object":
            for key in [*by_image.get(d.image, []), *added_to.get(d.image, [])]:
                final[key] = (pos, Decision("reject", d.user, d.time, d.image, None, key, None))
        elif d.object is not None:
            if d.action == "add":
                added_to.setdefault(d.image, []).append(d.object)
            final[d.object] = (pos, d)
    return final


def _same(a: Decision, b: Decision) -> bool:
    kept = ("accept", "relabel", "add")
    if (a.action in kept) != (b.action in kept):
        return False
    return a.action == "reject" or (a.label or None) == (b.label or None)


def resolve(decisions: Sequence[Decision], data: DataSet) -> ReviewState:
    """Fold the decisions (of one or several users; time orders them across users)."""
    by_image: dict[str, list[str]] = {}
    for item in data.items:
        by_image.setdefault(item.image, []).append(item.key)
    users: dict[str, list[tuple[int, Decision]]] = {}
    for pos, d in enumerate(decisions):
        users.setdefault(d.user, []).append((pos, d))
    state = ReviewState()
    for d in decisions:
        state.reviewed_images.add(d.image)
        if d.action == "add":
            state.added[d.object] = d  # type: ignore[index]
    ranked: dict[str, tuple[int, Decision]] = {}
    for mine in users.values():
        for key, (pos, d) in _fold(mine, by_image).items():
            if key not in ranked:
                ranked[key] = (pos, d)
                continue
            other_pos, other = ranked[key]
            if not _same(other, d):
                ann = next((x.annotation for x in (other, d) if x.annotation is not None), None)
                first, second = (
                    (other, d) if (other.time, other_pos) < (d.time, pos) else (d, other)
                )
                state.conflicts.append(Conflict(d.image, key, ann, first, second))
            if (d.time, pos) > (other.time, other_pos):  # the latest; same time: the later line
                ranked[key] = (pos, d)
    state.final = {key: d for key, (_, d) in ranked.items()}
    # a relabel of an added object keeps it added, under its new class
    return state


@dataclass
class Merged:
    decisions: list[Decision]
    conflicts: list[Conflict]


def merge_reviews(
    paths: Sequence[str | os.PathLike],
    dataset: str | os.PathLike,
    *,
    out: str | os.PathLike | None = None,
) -> Merged:
    """Merge several users' review files (e.g. review-ana.jsonl, review-ben.jsonl) of
    `dataset`: every decision, ordered by time, and the conflicts, each naming both
    decisions. With `out`, the merged decisions are written there (atomically), as one
    review file that `export_reviewed(reviews=[out])` reads."""
    decisions = sorted(
        (d for p in paths for d in read_decisions(p)), key=lambda d: d.time
    )  # fmt: skip
    state = resolve(decisions, load_items(dataset))
    if out is not None:
        text = "".join(
            json.dumps(d.to_json(), ensure_ascii=False, separators=(",", ":")) + "\n"
            for d in decisions
        )
        write_text_atomic(Path(out), text)
    return Merged(decisions=decisions, conflicts=state.conflicts)


# --------------------------------------------------------------------------- export


@dataclass
class ReviewSummary:
    """What export_reviewed wrote: objects accepted (relabelled ones included), rejected,
    relabelled, added; unreviewed objects left out; images written (those with a
    decision); conflicts resolved by time; files {format: main file}."""

    out: Path
    images: int
    accepted: int
    rejected: int
    relabelled: int
    added: int
    unreviewed: int
    conflicts: int
    categories: list[str]
    files: dict[str, str] = field(default_factory=dict)

    def lines(self) -> list[str]:
        head = (
            f"{self.images} reviewed images: {self.accepted} accepted ({self.relabelled} "
            f"relabelled), {self.rejected} rejected, {self.added} added; {self.unreviewed} "
            "not reviewed, left out"
        )
        out = [head]
        if self.conflicts:
            out.append(f"{self.conflicts} conflicts between users settled by the latest decision")
        out += [f"{fmt}: {self.out / path}" for fmt, path in self.files.items()]
        return out


def export_reviewed(
    dataset: str | os.PathLike,
    *,
    out: str | os.PathLike | None = None,
    formats: Sequence[str] = ("coco",),
    segmentation: str = "rle",
    reviews: Sequence[str | os.PathLike] | None = None,
    on_conflict: str = "stop",
) -> ReviewSummary:
    """Write the reviewed data set: the images with a decision, each with only its accepted
    objects (relabels applied) and its added ones; rejected and unreviewed objects are left
    out. out: DATASET/reviewed by default (never the data set's own annotations.json).
    reviews: the decision files (DATASET/review.jsonl by default; several are merged).
    on_conflict: "stop" refuses conflicts between users (ReviewError naming the first and
    their count), "latest" takes the latest decision. Each file is written atomically."""
    if on_conflict not in CONFLICT_RULES:
        raise ReviewError(f"on_conflict must be one of {CONFLICT_RULES}, got {on_conflict!r}")
    if segmentation not in SEGMENTATION_KINDS:
        raise ReviewError(f"segmentation must be one of {SEGMENTATION_KINDS}, got {segmentation!r}")
    unknown = [f for f in formats if f not in DATASET_FORMATS]
    if unknown:
        raise ReviewError(f"format {unknown[0]!r}: choose from {', '.join(DATASET_FORMATS)}")
    root = Path(dataset)
    data = load_items(root)
    paths = [Path(p) for p in reviews] if reviews else [root / REVIEW_NAME]
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise ReviewError(f"{missing[0]}: no decisions yet; review first (textseg.ui.review)")
    decisions = sorted((d for p in paths for d in read_decisions(p)), key=lambda d: d.time)
    state = resolve(decisions, data)
    if state.conflicts and on_conflict == "stop":
        first = state.conflicts[0]
        raise ReviewError(
            f"{len(state.conflicts)} conflicts between users, e.g. {first.describe()}; decide "
            "again, or export with --on-conflict latest"
        )
    if "yolo" in formats and data.folder is None:
        raise ReviewError(f"{root}: no {STATE_DIR}/{RUN_NAME} names the image folder YOLO needs")
    categories = list(data.categories)

    def category_id(name: str) -> int:
        if name not in categories:
            categories.append(name)  # a new class, after the data set's own
        return categories.index(name) + 1

    # the categories are fixed before any writer runs: one pass over the decisions
    for d in state.final.values():
        if d.label:
            category_id(d.label)
    for d in state.added.values():
        category_id(d.label or "object")
    counts = dict(accepted=0, rejected=0, relabelled=0, added=0, unreviewed=0)
    by_image = data.by_image()
    for item in data.items:
        d = state.final.get(item.key)
        if d is None:
            counts["unreviewed"] += 1
        elif d.action == "reject":
            counts["rejected"] += 1
        else:
            counts["accepted"] += 1
            counts["relabelled"] += d.action == "relabel" and d.label != item.category
    added_in: dict[str, list[Decision]] = {}
    for key, d in state.added.items():
        final = state.final.get(key)
        if final is None or final.action != "reject":
            added_in.setdefault(d.image, []).append(d)
            counts["added"] += 1
    kept_images = [e for e in data.images.values() if e["file_name"] in state.reviewed_images]

    def images() -> Iterator[LabelledImage]:
        for n, entry in enumerate(kept_images, start=1):
            file = entry["file_name"]
            objects = []
            for item in by_image.get(file, []):
                d = state.final.get(item.key)
                if d is None or d.action == "reject":
                    continue
                name = d.label if d.action == "relabel" and d.label else item.category
                x, y, w, h = item.bbox
                objects.append(
                    LabelledObject(
                        category_id=category_id(name), label=name, score=item.score,
                        box_xyxy=[x, y, x + w, y + h], area=item.area, rle=item.rle,
                    )
                )  # fmt: skip
            for d in added_in.get(file, []):
                final = state.final.get(d.object)  # type: ignore[arg-type]
                name = final.label if final is not None and final.label else d.label
                added = d.added or {}
                objects.append(
                    LabelledObject(
                        category_id=category_id(name or "object"), label=name or "object",
                        score=float(added.get("score", 1.0)), box_xyxy=added["box_xyxy"],
                        area=int(added["area"]), rle=added["rle"],
                    )
                )  # fmt: skip
            path = (data.folder / file) if data.folder is not None else Path(file)
            yield LabelledImage(
                id=n, file=file, path=path, height=int(entry["height"]),
                width=int(entry["width"]), objects=objects,
            )  # fmt: skip

    dest = Path(out) if out is not None else root / REVIEWED_DIR
    if dest.resolve() == root.resolve():
        raise ReviewError(
            f"--out {dest}: that is the data set itself, whose annotations.json the review "
            "reads; choose another folder"
        )
    dest.mkdir(parents=True, exist_ok=True)
    info = {"description": "reviewed with textseg review", "reviewed_from": str(root)}
    labelled = LabelledSet(categories=categories, images=images, info=info)
    summary = ReviewSummary(
        out=dest, images=len(kept_images), conflicts=len(state.conflicts),
        categories=list(categories), **counts,
    )  # fmt: skip
    for name in formats:
        written = DATASET_FORMATS[name](dest, labelled, segmentation=segmentation)
        summary.files[name] = Path(written).relative_to(dest).as_posix()
    write_json_atomic(
        dest / "review_summary.json",
        {k: v for k, v in summary.__dict__.items() if k != "out"},
    )
    return summary

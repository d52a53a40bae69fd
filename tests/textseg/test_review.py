"""The review of a labelled data set (textseg.review, textseg.review_log): the queue order,
the filters, accept / reject / relabel / add / no object through the widget's own controls,
reopening, a torn decision file, two users merged, and the reviewed export checked by
pycocotools; on a data set labelled by tiny random models (textseg.testing)."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from textseg import ReviewError, export_reviewed, label_dataset, merge_reviews
from textseg.cli import main
from textseg.export import rle_to_mask
from textseg.review import PAGE_SIZE, build_review, image_event, key_event, queue, show_page
from textseg.review_log import REVIEW_NAME, ReviewLog, load_items, read_decisions
from textseg.testing import make_sample_image

pytest.importorskip("ipywidgets")
pycocotools = pytest.importorskip("pycocotools")
from pycocotools.coco import COCO  # noqa: E402

PROMPT = "car, person"
FORCE = dict(box_threshold=0.0, text_threshold=0.0, max_objects=3)


@pytest.fixture(scope="module")
def labelled(text_segmenter, tmp_path_factory) -> Path:
    photos = tmp_path_factory.mktemp("photos")
    for i in range(3):
        make_sample_image(photos / f"img{i}.jpg", height=64 + 8 * i, width=80, seed=i)
    out = tmp_path_factory.mktemp("labelled") / "dataset"
    label_dataset(text_segmenter, photos, PROMPT, out=out, progress=False, model="tiny", **FORCE)
    return out


@pytest.fixture
def dataset(labelled, tmp_path) -> Path:
    """A fresh copy (decisions are written into the data set); the images stay where the
    labelling run found them."""
    return Path(shutil.copytree(labelled, tmp_path / "dataset"))


def test_the_queue_puts_the_least_sure_first_and_text_match_wins(dataset):
    app = build_review(dataset, user="ana")
    coco = json.loads((dataset / "annotations.json").read_text())
    scores = sorted((a["score"], a["id"]) for a in coco["annotations"])
    assert len(scores) >= 4
    assert [c.item.annotation for c in app.cards] == [i for _, i in scores][:PAGE_SIZE]
    # SAM 3's check, when present, orders the queue instead of the score
    for n, ann in enumerate(coco["annotations"]):
        ann["text_match"] = round(1.0 - 0.1 * n, 3)  # the last annotation is the least sure
    (dataset / "annotations.json").write_text(json.dumps(coco))
    app = build_review(dataset, user="ana")
    assert [c.item.annotation for c in app.cards][:3] == [a["id"] for a in coco["annotations"]][
        ::-1
    ][:3]


def test_filters_by_class_and_by_not_yet_reviewed(dataset):
    app = build_review(dataset, user="ana")
    everything = [c.item for c in app.cards]
    name = everything[0].category
    app.class_filter.value = name
    assert [c.item for c in app.cards] == [it for it in everything if it.category == name]
    app.class_filter.value = "all classes"
    app.cards[0].accept.click()
    app.unreviewed.value = True
    shown = [c.item.key for c in app.cards]
    assert everything[0].key not in shown and len(shown) == len(everything) - 1


def _click_center(app, item) -> None:
    x, y, w, h = item.bbox
    s = app.fix_scale
    image_event(app, {"event": "click", "dataX": (x + w / 2) * s, "dataY": (y + h / 2) * s})


def test_decisions_through_the_controls_reload_and_export_exactly(dataset, text_segmenter):
    app = build_review(dataset, user="ana", segmenter=text_segmenter)
    first, second, third = (c.item for c in app.cards[:3])
    app.cards[0].accept.click()
    app.cards[1].reject.click()
    app.cards[2].label.value = "truck"  # a new class, typed in
    app.cards[2].relabel.click()
    assert "rejected" in app.cards[1].text.value and "truck" in app.cards[2].text.value
    # add an object by a click on the image of the accepted one, through SAM 2
    app.cards[0].fix.click()
    assert app.fixing == first.image
    _click_center(app, first)
    assert len(app.points) == 1
    app.add_label.value = "dog"
    app.add_button.click()
    assert "added dog" in app.status.value, app.status.value
    lines = (dataset / REVIEW_NAME).read_text().splitlines()
    assert [json.loads(x)["action"] for x in lines] == ["accept", "reject", "relabel", "add"]
    assert all(json.loads(x)["user"] == "ana" and json.loads(x)["time"] for x in lines)

    # reopening: the decisions are kept and shown, the page is where the user stopped
    again = build_review(dataset, user="ana")
    assert again.state.final == app.state.final and len(again.state.added) == 1
    texts = {c.item.key: c.text.value for c in again.cards}
    assert "accepted" in texts[first.key] and "rejected" in texts[second.key]

    summary = export_reviewed(dataset)
    assert (summary.accepted, summary.rejected, summary.relabelled, summary.added) == (2, 1, 1, 1)
    coco = COCO(str(dataset / "reviewed" / "annotations.json"))
    names = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
    got = sorted(
        (coco.imgs[a["image_id"]]["file_name"], names[a["category_id"]], a["area"])
        for a in coco.loadAnns(coco.getAnnIds())
    )
    added = next(iter(again.state.added.values()))
    want = sorted(
        [
            (first.image, first.category, first.area),
            (third.image, "truck", third.area),
            (first.image, "dog", added.added["area"]),
        ]
    )
    assert got == want
    images = {first.image, second.image, third.image}
    assert {i["file_name"] for i in coco.dataset["images"]} == images
    for ann in coco.loadAnns(coco.getAnnIds()):
        assert coco.annToMask(ann).sum() == ann["area"]
    dog = next(a for a in coco.loadAnns(coco.getAnnIds()) if names[a["category_id"]] == "dog")
    assert np.array_equal(coco.annToMask(dog).astype(bool), rle_to_mask(added.added["rle"]))


def test_a_data_set_labelled_with_polygons_reviews_and_exports_its_exact_masks(
    text_segmenter, tmp_path
):
    """`textseg label --segmentation polygon` writes outlines, not RLE: the review read no
    mask from them (blank thumbnails, keys by annotation id, which change when photos are
    added) and the export failed with KeyError 'counts'. The outlines now give back the
    very masks, and the same keys, that an RLE data set of the same photos has."""
    from PIL import Image

    photos = tmp_path / "photos"  # flat colours: the tiny models' masks have no holes here
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        pixels = np.zeros((60 + 10 * i, 90, 3), np.uint8) + rng.integers(0, 255, 3, np.uint8)
        pixels[10:40, 20 + 5 * i : 70] = rng.integers(0, 255, 3, np.uint8)
        Image.fromarray(pixels).save(photos / f"flat{i}.png")
    sets = {}
    for kind in ("rle", "polygon"):
        sets[kind] = tmp_path / kind
        label_dataset(
            text_segmenter, photos, PROMPT, out=sets[kind], segmentation=kind, progress=False,
            model="tiny", **FORCE,
        )  # fmt: skip
    written = json.loads((sets["polygon"] / "annotations.json").read_text())["annotations"]
    assert any(isinstance(a["segmentation"], list) for a in written)
    rle_items = load_items(sets["rle"]).items
    items = load_items(sets["polygon"]).items
    assert [(i.key, i.rle) for i in items] == [(i.key, i.rle) for i in rle_items]
    app = build_review(sets["polygon"], user="ana")
    assert len(app.cards) == len(items) <= PAGE_SIZE
    for card in app.cards:
        card.accept.click()
    summary = export_reviewed(sets["polygon"], formats=("coco", "yolo"))
    assert summary.accepted == len(items)
    coco = COCO(str(sets["polygon"] / "reviewed" / "annotations.json"))
    for ann, item in zip(coco.loadAnns(coco.getAnnIds()), rle_items):
        assert np.array_equal(coco.annToMask(ann).astype(bool), rle_to_mask(item.rle))
        assert ann["area"] == item.area


def test_no_object_here_rejects_every_object_of_the_image(dataset):
    app = build_review(dataset, user="ana")
    image = app.cards[0].item.image
    app.cards[0].fix.click()
    app.no_object_button.click()
    of_image = [it for it in app.data.items if it.image == image]
    assert of_image and all(app.state.outcome(it.key) == "reject" for it in of_image)
    summary = export_reviewed(dataset)
    coco = json.loads((dataset / "reviewed" / "annotations.json").read_text())
    assert summary.rejected == len(of_image) and coco["annotations"] == []
    assert [i["file_name"] for i in coco["images"]] == [image]


def test_the_review_shows_each_image_as_it_was_segmented(text_segmenter, tmp_path):
    """A 16-bit PNG and a transparent one: the picture the review tints and crops is the one
    `textseg label` segmented (textseg.load_image), so the masks sit on what they were made
    from. PIL's own RGB conversion shows the 16-bit image all white, the transparency black."""
    from PIL import Image

    from textseg import load_image
    from textseg.review import _picture, thumbnail

    photos = tmp_path / "photos"
    photos.mkdir()
    ramp = np.linspace(0, 65535, 64 * 80).reshape(64, 80).astype(np.uint16)
    Image.fromarray(ramp).save(photos / "depth16.png")  # PIL mode I;16
    rgba = np.asarray(load_image(make_sample_image(photos / "a.png", height=64, width=80)))
    alpha = np.full((64, 80, 1), 255, np.uint8)
    alpha[:32] = 0  # the top half transparent
    Image.fromarray(np.concatenate([rgba, alpha], axis=2), "RGBA").save(photos / "alpha.png")
    out = tmp_path / "dataset"
    label_dataset(text_segmenter, photos, PROMPT, out=out, progress=False, model="tiny", **FORCE)
    app = build_review(out, user="ana")
    for name in ("depth16.png", "alpha.png"):
        shown = np.asarray(_picture(app, name))
        assert np.array_equal(shown, np.asarray(load_image(photos / name))), name
    item = next(it for it in app.data.items if it.image == "depth16.png")
    thumb = np.asarray(Image.open(io.BytesIO(thumbnail(app, item))))
    assert thumb.std() > 10  # a ramp under its mask, not a white square


def test_keys_accept_reject_and_move(dataset):
    app = build_review(dataset, user="ana")
    a, b, c = (card.item for card in app.cards[:3])
    key_event(app, {"type": "keydown", "key": "a"})
    key_event(app, {"type": "keydown", "key": "r"})
    key_event(app, {"type": "keydown", "key": "ArrowRight"})
    assert app.selected == 3
    assert [app.state.outcome(x.key) for x in (a, b, c)] == ["accept", "reject", None]


def test_a_torn_last_line_is_ignored_and_the_next_decision_is_kept(dataset):
    app = build_review(dataset, user="ana")
    app.cards[0].accept.click()
    path = dataset / REVIEW_NAME
    with open(path, "ab") as f:
        f.write(b'{"v":1,"action":"rej')  # a kill in the middle of the next append
    assert [d.action for d in read_decisions(path)] == ["accept"]
    again = build_review(dataset, user="ana")
    assert "cut off" in again.status.value
    again.cards[1].reject.click()
    assert [d.action for d in read_decisions(path)] == ["accept", "reject"]
    (path).write_text(path.read_text() + "not json\n" + '{"v":1}\n')
    with pytest.raises(ReviewError, match=r"line 3: not a review decision"):
        read_decisions(path)


def test_two_users_merge_and_a_conflict_names_both_decisions(dataset):
    data = load_items(dataset)
    items = sorted(data.items, key=lambda it: it.annotation)
    ana = ReviewLog(dataset, user="ana", path=dataset / "review-ana.jsonl")
    ben = ReviewLog(dataset, user="ben", path=dataset / "review-ben.jsonl")
    ana.decide(items[0], "accept")
    ben.decide(items[0], "accept")  # agree
    ana.decide(items[1], "accept")
    ben.decide(items[1], "reject")  # disagree
    ben.decide(items[2], "relabel", label="truck")  # only ben
    paths = [ana.path, ben.path]
    merged = merge_reviews(paths, dataset, out=dataset / REVIEW_NAME)
    assert len(merged.decisions) == 5 and len(merged.conflicts) == 1
    text = merged.conflicts[0].describe()
    assert (
        "ana accept" in text
        and "ben reject" in text
        and f"annotation {items[1].annotation}" in text
    )
    with pytest.raises(ReviewError, match="1 conflicts between users.*ana accept.*ben reject"):
        export_reviewed(dataset, reviews=paths)
    summary = export_reviewed(dataset, reviews=paths, on_conflict="latest")
    assert (summary.accepted, summary.rejected, summary.relabelled) == (2, 1, 1)
    # the merged file opens in the widget with both users' decisions
    app = build_review(dataset, user="cy")
    assert {d.user for d in app.log.decisions} == {"ana", "ben"}


def test_cli_export_reviewed_only_coco_and_yolo(dataset, capsys):
    app = build_review(dataset, user="ana")
    app.cards[0].accept.click()
    app.cards[1].reject.click()
    out = dataset.parent / "export"
    code = main(["export", str(dataset), "--reviewed-only", "--format", "coco", "yolo",
                 "--out", str(out)])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "1 accepted (0 relabelled), 1 rejected, 0 added" in printed
    coco = COCO(str(out / "annotations.json"))
    assert len(coco.getAnnIds()) == 1
    labels = [p.read_text() for p in sorted((out / "labels").rglob("*.txt"))]
    assert sum(len(t.splitlines()) for t in labels) == 1
    with pytest.raises(SystemExit) as info:
        main(["export", str(dataset)])
    assert info.value.code == 2 and "give --reviewed-only" in capsys.readouterr().err
    assert main(["export", str(dataset), "--reviewed-only", "--out", str(dataset)]) == 2
    assert "the data set itself" in capsys.readouterr().err


def test_an_image_gone_since_labelling_stops_the_yolo_export_in_one_line(dataset, capsys):
    """A reviewed image deleted from the folder before the export: the YOLO layout cannot
    link or copy it. That was a FileNotFoundError traceback; now one line naming the image
    and what to do, exit status 2."""
    run = dataset / ".textseg-label" / "run.json"
    recipe = json.loads(run.read_text())
    photos = Path(shutil.copytree(recipe["folder"], dataset.parent / "photos"))
    run.write_text(json.dumps({**recipe, "folder": str(photos)}))  # the shared photos stay
    app = build_review(dataset, user="ana")
    app.cards[0].accept.click()
    (photos / app.cards[0].item.image).unlink()
    code = main(["export", str(dataset), "--reviewed-only", "--format", "coco", "yolo"])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.splitlines()) == 1 and app.cards[0].item.image in err, err
    assert "put the image back" in err


@pytest.mark.parametrize(
    "spelling", [["--format", "coco", "yolo"], ["--format", "coco", "--format", "yolo"]]
)
def test_cli_export_takes_both_spellings_of_two_formats(dataset, spelling, capsys):
    """`--format coco yolo` and `--format coco --format yolo` (textseg label's spelling) both
    write both formats: the second spelling used to keep only the last, silently."""
    build_review(dataset, user="ana").cards[0].accept.click()
    out = dataset.parent / "export"
    assert main(["export", str(dataset), "--reviewed-only", *spelling, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert (out / "annotations.json").is_file(), printed
    assert (out / "data.yaml").is_file(), printed


def test_pages_load_lazily_and_thumbnails_are_cached(dataset, monkeypatch):
    import textseg.review as review

    monkeypatch.setattr(review, "PAGE_SIZE", 2)
    app = build_review(dataset, user="ana")
    assert len(app.cards) == 2
    cached = sorted(p.name for p in app.thumbs.glob("*.jpg"))
    assert cached == sorted(f"{c.item.key}.jpg" for c in app.cards)  # only the shown page
    app.next_button.click()
    assert app.page == 1 and len(list(app.thumbs.glob("*.jpg"))) == 4
    show_page(app, 0)
    assert [c.image.value for c in app.cards] == [
        (app.thumbs / f"{c.item.key}.jpg").read_bytes() for c in app.cards
    ]
    assert len(queue(app)) == len(app.data.items)


class Killed(BaseException):
    """Stands for SIGKILL: not an Exception, so no `except Exception` in the code catches it."""


def test_a_killed_export_run_again_gives_the_same_files(dataset, monkeypatch):
    import contextlib

    import textseg.export as export

    app = build_review(dataset, user="ana")
    app.cards[0].accept.click()
    app.cards[1].label.value = "truck"
    app.cards[1].relabel.click()
    reference = dataset.parent / "reference"
    export_reviewed(dataset, out=reference, formats=("coco", "yolo"))
    want = {p.relative_to(reference).as_posix(): p.read_bytes() for p in reference.rglob("*")
            if p.is_file() and p.name != "data.yaml"}  # fmt: skip
    real = export.atomic_path
    writes = len([p for p in reference.rglob("*") if p.is_file()])
    for kill_at in range(writes):
        out = dataset.parent / f"killed{kill_at}"
        calls = []

        @contextlib.contextmanager
        def dying(path, calls=calls, kill_at=kill_at):
            calls.append(path)
            if len(calls) > kill_at:
                raise Killed
            with real(path) as tmp:
                yield tmp

        monkeypatch.setattr(export, "atomic_path", dying)
        with pytest.raises(Killed):
            export_reviewed(dataset, out=out, formats=("coco", "yolo"))
        monkeypatch.setattr(export, "atomic_path", real)
        export_reviewed(dataset, out=out, formats=("coco", "yolo"))
        got = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*")
               if p.is_file() and p.name != "data.yaml"}  # fmt: skip
        assert got == want, kill_at

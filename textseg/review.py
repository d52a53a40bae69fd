"""The review gallery: accept, reject, relabel and fix what `textseg label` found, least sure
first, every decision saved as it is made (textseg.review_log).

    from textseg.ui import review
    review("dataset/")                     # or review("dataset/", segmenter=ts, user="ana")

A page shows PAGE_SIZE objects of the queue (least sure first: the lowest text_match when
SAM 3 checked the labels, else the lowest detector score), each as a thumbnail of its image
cropped around it with its mask, its class and score, and Accept / Reject / Relabel (a class
of the data set, or a new one typed in). Filters: a class, and "not yet reviewed". "Fix"
on a card opens its image below: click points on a missed object (or two corners of a box)
and press Add (they go to SAM 2 through the point and box prompts), or mark "No object
here". Keys (ipyevents, while the mouse is over the "keys here" pad above the cards): a accept,
r reject, n or → next, p or ← previous, on the card framed in blue. Colab's custom widget manager passes these events;
where ipyevents is not installed in the front end (a plain Voila without the extension,
VS Code's notebooks with old renderers) the buttons still work and the keys do nothing.

Pages load lazily: only the shown page's thumbnails are made, and each is cached on disk
(DATASET/.textseg-review/thumbs/<key>.jpg, written atomically), so reopening and paging
back read small files. Reopening continues where the user stopped: the queue skips to the
first object not yet decided. The callbacks are plain functions of a `ReviewApp`, so tests
drive them through the widgets' own controls without a browser.
"""

from __future__ import annotations

import getpass
import html
import io
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from textseg.draw import color_for
from textseg.errors import ImageLoadError, TextsegError
from textseg.export import atomic_path, mask_to_rle, rle_to_mask
from textseg.images import load_image
from textseg.review_log import (
    DataSet,
    ReviewItem,
    ReviewLog,
    ReviewState,
    load_items,
    resolve,
)

if TYPE_CHECKING:
    from PIL import Image

    from textseg.pipeline import TextSegmenter

__all__ = ["PAGE_SIZE", "ReviewApp", "build_review", "image_event", "key_event", "review"]

PAGE_SIZE = 12  # objects per page: 3 rows of 4 thumbnails
THUMB_SIZE = 160  # pixels, the longer side of a thumbnail
DETAIL_SIZE = (640, 440)  # (W, H) at most, the fixed image's display size
CACHE_DIR = ".textseg-review/thumbs"
ALL_CLASSES = "all classes"

logger = logging.getLogger(__name__)


@dataclass
class Card:
    """The widgets of one object on the page."""

    item: ReviewItem
    root: Any
    image: Any
    text: Any
    accept: Any
    reject: Any
    label: Any
    relabel: Any
    fix: Any


@dataclass
class ReviewApp:
    """The review's widgets and state. data: the data set; log: this user's decision file;
    state: what the decisions come to; page: 0-based; cards: the shown page's; selected:
    the index of the card the keys act on; fixing: the image open for a fix, with the
    clicked points (x, y) and box corners in its pixels."""

    data: DataSet
    log: ReviewLog
    root: Any
    grid: Any
    class_filter: Any
    unreviewed: Any
    prev_button: Any
    next_button: Any
    page_label: Any
    status: Any
    detail: Any
    detail_image: Any
    detail_events: Any
    mode: Any
    add_label: Any
    add_button: Any
    clear_button: Any
    no_object_button: Any
    keys: Any
    segmenter_source: Any = None
    state: ReviewState = field(default_factory=ReviewState)
    page: int = 0
    cards: list[Card] = field(default_factory=list)
    selected: int = 0
    fixing: str | None = None
    fix_scale: float = 1.0
    points: list[tuple[float, float]] = field(default_factory=list)
    corners: list[tuple[float, float]] = field(default_factory=list)
    segmenter: Any = None

    @property
    def thumbs(self) -> Path:
        return self.data.root / CACHE_DIR


def _message(app: ReviewApp, text: str, *, kind: str = "info") -> None:
    color = {"info": "#444", "busy": "#a60", "error": "#b00", "ok": "#070"}[kind]
    app.status.value = f'<span style="color:{color}">{html.escape(text)}</span>'


# --------------------------------------------------------------------------- the queue


def queue(app: ReviewApp) -> list[ReviewItem]:
    """The objects to show, least sure first (then in annotation order), filtered by the
    class menu and the "not yet reviewed" box."""
    wanted = app.class_filter.value
    items = [
        it
        for it in app.data.items
        if (wanted == ALL_CLASSES or it.category == wanted)
        and not (app.unreviewed.value and it.key in app.state.final)
    ]
    return sorted(items, key=lambda it: (it.sureness, it.annotation))


def _pages(n: int) -> int:
    return max(1, -(-n // PAGE_SIZE))


# --------------------------------------------------------------------------- thumbnails


def _picture(app: ReviewApp, file: str) -> Image.Image | None:
    """The image as `textseg label` segmented it (textseg.load_image: upright, alpha on
    white, 16-bit scaled), so masks and picture agree; None when it cannot be read."""
    if app.data.folder is None:
        return None
    try:
        return load_image(app.data.folder / file)
    except ImageLoadError:
        return None


def _tint(picture: Image.Image, mask: np.ndarray, rgb: tuple[int, int, int]) -> Image.Image:
    from PIL import Image

    pixels = np.asarray(picture, dtype=np.float32)
    pixels[mask] = 0.5 * pixels[mask] + 0.5 * np.asarray(rgb, np.float32)
    return Image.fromarray(pixels.astype(np.uint8))


def thumbnail(app: ReviewApp, item: ReviewItem) -> bytes:
    """The JPEG of one object: its image cropped around its box (with a margin), its mask
    tinted; cached on disk by the object's key."""
    from PIL import Image, ImageDraw

    path = app.thumbs / f"{item.key}.jpg"
    try:
        return path.read_bytes()
    except OSError:
        pass
    picture = _picture(app, item.image)
    if picture is None:
        picture = Image.new("RGB", (THUMB_SIZE, THUMB_SIZE), (200, 200, 200))
    else:
        k = app.data.categories.index(item.category) if item.category in app.data.categories else 0
        mask = rle_to_mask(item.rle) if item.rle else np.zeros(picture.size[::-1], bool)
        if mask.shape == picture.size[::-1]:
            picture = _tint(picture, mask, color_for(k))
        x, y, w, h = item.bbox
        margin = 0.25 * max(w, h) + 8
        box = (
            max(0, int(x - margin)), max(0, int(y - margin)),
            min(picture.width, int(x + w + margin) + 1), min(picture.height, int(y + h + margin) + 1),
        )  # fmt: skip
        ImageDraw.Draw(picture).rectangle([x, y, x + w, y + h], outline=(255, 255, 255), width=2)
        if box[2] > box[0] and box[3] > box[1]:
            picture = picture.crop(box)
        picture.thumbnail((THUMB_SIZE, THUMB_SIZE))
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=85)
    data = buffer.getvalue()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
    except OSError:  # a read-only data set still reviews, without the cache
        logger.debug("thumbnail cache not written", exc_info=True)
    return data


# --------------------------------------------------------------------------- the page


def _card_text(app: ReviewApp, item: ReviewItem) -> str:
    d = app.state.final.get(item.key)
    if d is None:
        state = '<span style="color:#888">not reviewed</span>'
    elif d.action == "reject":
        state = '<b style="color:#b00">rejected</b>'
    elif d.action == "relabel":
        state = f'<b style="color:#070">relabelled {html.escape(d.label or "")}</b>'
    else:
        state = '<b style="color:#070">accepted</b>'
    sure = f"score {item.score:.2f}" + (
        f", match {item.text_match:.2f}" if item.text_match is not None else ""
    )
    return (
        f"<b>{html.escape(item.category)}</b> · {sure}<br>"
        f'<span style="font-size:11px">{html.escape(item.image)} #{item.annotation}</span><br>'
        f"{state}"
    )


def _refresh_cards(app: ReviewApp) -> None:
    for i, card in enumerate(app.cards):
        card.text.value = _card_text(app, card.item)
        border = "3px solid #06c" if i == app.selected else "1px solid #ccc"
        card.root.layout.border = border


def _classes(app: ReviewApp) -> list[str]:
    names = list(app.data.categories)
    for d in app.log.decisions:
        if d.label and d.label not in names:
            names.append(d.label)
    return names


def _make_card(app: ReviewApp, item: ReviewItem) -> Card:
    import ipywidgets as w

    image = w.Image(value=thumbnail(app, item), format="jpeg")
    image.layout.max_width = f"{THUMB_SIZE}px"
    text = w.HTML(_card_text(app, item))
    small = w.Layout(width="auto")
    accept = w.Button(description="Accept", button_style="success", layout=small)
    reject = w.Button(description="Reject", button_style="danger", layout=small)
    label = w.Combobox(options=_classes(app), placeholder="class", layout=w.Layout(width="90px"))
    relabel = w.Button(description="Relabel", layout=small)
    fix = w.Button(description="Fix", layout=small)
    root = w.VBox(
        [image, text, w.HBox([accept, reject, fix]), w.HBox([label, relabel])],
        layout=w.Layout(width=f"{THUMB_SIZE + 40}px", padding="4px", border="1px solid #ccc"),
    )
    card = Card(item, root, image, text, accept, reject, label, relabel, fix)
    for name in ("root", "image", "text", "accept", "reject", "label", "relabel", "fix"):
        getattr(card, name).add_class(f"textseg-review-{name.replace('root', 'card')}")
    accept.on_click(lambda _: decide(app, card, "accept"))
    reject.on_click(lambda _: decide(app, card, "reject"))
    relabel.on_click(lambda _: decide(app, card, "relabel", label=card.label.value))
    fix.on_click(lambda _: open_fix(app, card.item.image))
    return card


def show_page(app: ReviewApp, page: int | None = None) -> None:
    """Build the cards of `page` (the current one by default), clamped to the queue."""
    items = queue(app)
    pages = _pages(len(items))
    app.page = min(max(0, app.page if page is None else page), pages - 1)
    shown = items[app.page * PAGE_SIZE : (app.page + 1) * PAGE_SIZE]
    app.cards = [_make_card(app, it) for it in shown]
    app.grid.children = [c.root for c in app.cards]
    app.selected = 0
    app.page_label.value = f"page {app.page + 1} of {pages} · {len(items)} objects"
    app.prev_button.disabled = app.page == 0
    app.next_button.disabled = app.page >= pages - 1
    _refresh_cards(app)


def _first_open_page(app: ReviewApp) -> int:
    """The page of the first object of the queue not yet decided: where the user stopped."""
    for i, item in enumerate(queue(app)):
        if item.key not in app.state.final:
            return i // PAGE_SIZE
    return 0


def _recompute(app: ReviewApp) -> None:
    app.state = resolve(app.log.decisions, app.data)


# --------------------------------------------------------------------------- decisions


def decide(app: ReviewApp, card: Card, action: str, *, label: str | None = None) -> None:
    """Accept, reject or relabel a card's object; saved before the card changes."""
    try:
        app.log.decide(card.item, action, label=label)
    except TextsegError as err:
        _message(app, f"Error: {err}", kind="error")
        return
    _recompute(app)
    if app.cards and card in app.cards:
        app.selected = app.cards.index(card)
    what = f"relabelled as {label}" if action == "relabel" else action + "ed"
    _message(app, f"{card.item.image} #{card.item.annotation}: {what}", kind="ok")
    _refresh_cards(app)
    if action == "relabel":
        for c in app.cards:
            c.label.options = _classes(app)
    if app.fixing == card.item.image:
        _show_fix(app)


def move(app: ReviewApp, step: int) -> None:
    """Select the next (step 1) or previous (-1) card, turning the page at its ends."""
    n = app.selected + step
    if 0 <= n < len(app.cards):
        app.selected = n
        _refresh_cards(app)
    elif n >= len(app.cards) and not app.next_button.disabled:
        show_page(app, app.page + 1)
    elif n < 0 and app.page > 0:
        show_page(app, app.page - 1)
        app.selected = len(app.cards) - 1
        _refresh_cards(app)


def key_event(app: ReviewApp, event: dict) -> None:
    """ipyevents keydown on the gallery: a accept, r reject, n/→ next, p/← previous."""
    key = str(event.get("key", ""))
    if event.get("type", event.get("event")) not in (None, "keydown") or not app.cards:
        return
    card = app.cards[min(app.selected, len(app.cards) - 1)]
    if key.lower() == "a":
        decide(app, card, "accept")
        move(app, 1)
    elif key.lower() == "r":
        decide(app, card, "reject")
        move(app, 1)
    elif key.lower() == "n" or key == "ArrowRight":
        move(app, 1)
    elif key.lower() == "p" or key == "ArrowLeft":
        move(app, -1)


# --------------------------------------------------------------------------- fixing an image


def _show_fix(app: ReviewApp) -> None:
    """The open image with its kept objects tinted, and the clicked points and corners."""
    from PIL import Image, ImageDraw

    if app.fixing is None:
        app.detail.layout.display = "none"
        return
    app.detail.layout.display = ""
    picture = _picture(app, app.fixing)
    if picture is None:
        _message(
            app, f"{app.fixing}: the image cannot be read from {app.data.folder}", kind="error"
        )
        return
    for item in app.data.by_image().get(app.fixing, []):
        d = app.state.final.get(item.key)
        if (d is None or d.action != "reject") and item.rle:
            k = app.data.categories.index(item.category)
            picture = _tint(picture, rle_to_mask(item.rle), color_for(k))
    for key, d in app.state.added.items():
        final = app.state.final.get(key)
        if d.image == app.fixing and (final is None or final.action != "reject"):
            picture = _tint(picture, rle_to_mask(d.added["rle"]), (255, 0, 255))  # type: ignore[index]
    scale = min(1.0, DETAIL_SIZE[0] / picture.width, DETAIL_SIZE[1] / picture.height)
    app.fix_scale = scale
    if scale < 1.0:
        size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
        picture = picture.resize(size, Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(picture)
    for x, y in [*app.points, *app.corners]:
        cx, cy = x * scale, y * scale
        draw.ellipse([cx - 5, cy - 5, cx + 5, cy + 5], fill=(0, 200, 0), outline=(255, 255, 255))
    if len(app.corners) == 2:
        (x0, y0), (x1, y1) = app.corners
        draw.rectangle([min(x0, x1) * scale, min(y0, y1) * scale, max(x0, x1) * scale,
                        max(y0, y1) * scale], outline=(255, 255, 255), width=2)  # fmt: skip
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=88)
    app.detail_image.value = buffer.getvalue()
    app.detail_image.layout.width = f"{picture.width}px"  # its own size, not the page's width


def open_fix(app: ReviewApp, image: str) -> None:
    app.fixing, app.points, app.corners = image, [], []
    _show_fix(app)
    _message(app, f"{image}: click a missed object (or two box corners), press Add")


def image_event(app: ReviewApp, event: dict) -> None:
    """ipyevents click on the open image (dataX/dataY in displayed pixels): a point, or in
    box mode a corner (two make the box; a third starts a new one)."""
    if app.fixing is None or "dataX" not in event:
        return
    if (event.get("event") or event.get("type")) != "click":
        return
    x, y = float(event["dataX"]) / app.fix_scale, float(event["dataY"]) / app.fix_scale
    if app.mode.value == "box":
        app.corners = [*app.corners[-1:], (x, y)] if len(app.corners) < 2 else [(x, y)]
    else:
        app.points.append((x, y))
    _show_fix(app)
    n, box = len(app.points), len(app.corners) == 2
    what = "a box" if box else f"{n} point{'s' * (n != 1)}" if n else "1 corner"
    _message(app, f"{app.fixing}: {what}; choose the class and press Add")


def _segmenter(app: ReviewApp) -> TextSegmenter:
    if app.segmenter is None:
        source = app.segmenter_source
        if source is None:
            from textseg.pipeline import TextSegmenter

            _message(app, "loading models\u2026 (the first time downloads them)", kind="busy")
            app.segmenter = TextSegmenter.from_pretrained()
        elif callable(source) and not hasattr(source, "segment"):
            app.segmenter = source()
        else:
            app.segmenter = source
    return app.segmenter


def add_object(app: ReviewApp) -> None:
    """Callback of Add: the clicked points or box go to SAM 2; the mask is saved as an
    added object of the class typed or chosen."""
    try:
        if app.fixing is None:
            raise TextsegError("press Fix on a card first")
        if not app.points and len(app.corners) < 2:
            raise TextsegError("click the missed object (or two corners of a box) first")
        label = " ".join(str(app.add_label.value or "").split())
        if not label:
            raise TextsegError("choose a class or type a new one for the added object")
        folder = app.data.folder
        if folder is None:
            raise TextsegError("the data set does not say where its images are")
        prompts: dict[str, Any] = {}
        if len(app.corners) == 2:
            (x0, y0), (x1, y1) = app.corners
            prompts["boxes"] = {label: (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))}
        else:
            prompts["points"] = {label: [list(p) for p in app.points]}
        _message(app, "segmenting\u2026", kind="busy")
        seg = _segmenter(app).segment(folder / app.fixing, None, **prompts)
        if not len(seg) or not seg.masks[0].any():
            raise TextsegError("SAM 2 found no mask there; click inside the object")
        mask = seg.masks[0]
        app.log.add(
            app.fixing, label=label, box_xyxy=[float(v) for v in seg.boxes[0]],
            rle=mask_to_rle(mask), area=int(mask.sum()),
        )  # fmt: skip
        app.points, app.corners = [], []
        _recompute(app)
        _show_fix(app)
        for c in app.cards:
            c.label.options = _classes(app)
        app.add_label.options = _classes(app)
        _message(app, f"{app.fixing}: added {label} ({int(mask.sum())} pixels)", kind="ok")
    except (TextsegError, ValueError) as err:
        _message(app, f"Error: {err}", kind="error")


def no_object(app: ReviewApp) -> None:
    if app.fixing is None:
        _message(app, "press Fix on a card first", kind="error")
        return
    app.log.no_object(app.fixing)
    _recompute(app)
    _refresh_cards(app)
    _show_fix(app)
    _message(app, f"{app.fixing}: no object here; its objects are rejected", kind="ok")


# --------------------------------------------------------------------------- building


def build_review(
    dataset: str | os.PathLike,
    *,
    segmenter: TextSegmenter | Callable[[], TextSegmenter] | None = None,
    user: str | None = None,
) -> ReviewApp:
    """Build the review of `dataset` (a folder written by `textseg label`); `app.root` is
    the widget to display. segmenter: for added objects (built on the first Add when a
    function or None). user: names the decisions (the login name by default)."""
    import ipywidgets as w

    data = load_items(dataset)
    log = ReviewLog(dataset, user=user or getpass.getuser())
    class_filter = w.Dropdown(options=[ALL_CLASSES, *data.categories], value=ALL_CLASSES,
                              description="class")  # fmt: skip
    unreviewed = w.Checkbox(value=False, description="not yet reviewed", indent=False)
    prev_button = w.Button(description="\u2190 Previous")
    next_button = w.Button(description="Next \u2192")
    page_label = w.HTML()
    status = w.HTML()
    grid = w.GridBox(layout=w.Layout(grid_template_columns="repeat(4, auto)", grid_gap="6px"))
    detail_image = w.Image(format="jpeg")
    mode = w.ToggleButtons(options=[("point", "point"), ("box", "box")], value="point")
    add_label = w.Combobox(options=list(data.categories), placeholder="class of the added object")
    add_button = w.Button(description="Add", button_style="primary")
    clear_button = w.Button(description="Clear clicks")
    no_object_button = w.Button(description="No object here", button_style="warning")
    detail = w.VBox(
        [w.HBox([mode, add_label, add_button, clear_button, no_object_button]), detail_image],
        layout=w.Layout(display="none"),
    )
    # the keys' own pad: ipyevents takes the focus while the mouse is over its source, so
    # on the whole gallery it would steal the keys typed into a card's class field
    keypad = w.HTML(
        '<div style="padding:4px 8px;border:1px dashed #888;cursor:pointer">keys here: '
        "<b>a</b> accept, <b>r</b> reject, <b>n</b>/\u2192 next, <b>p</b>/\u2190 previous</div>"
    )
    gallery = w.VBox([keypad, grid])
    root = w.VBox(
        [w.HBox([class_filter, unreviewed, prev_button, next_button, page_label]), status,
         gallery, detail],
    )  # fmt: skip
    root.add_class("textseg-review")
    named = dict(status=status, page=page_label, next=next_button, prev=prev_button,
                 unreviewed=unreviewed, detail=detail_image, add=add_button,
                 add_label=add_label, no_object=no_object_button, keys=keypad)  # fmt: skip
    for name, widget in named.items():
        widget.add_class(f"textseg-review-{name.replace('_', '-')}")
    try:
        from ipyevents import Event
    except ImportError:  # the buttons still work
        keys = detail_events = None
    else:
        keys = Event(source=keypad, watched_events=["keydown"])
        detail_events = Event(source=detail_image, watched_events=["click"])
    app = ReviewApp(
        data=data, log=log, root=root, grid=grid, class_filter=class_filter,
        unreviewed=unreviewed, prev_button=prev_button, next_button=next_button,
        page_label=page_label, status=status, detail=detail, detail_image=detail_image,
        detail_events=detail_events, mode=mode, add_label=add_label, add_button=add_button,
        clear_button=clear_button, no_object_button=no_object_button, keys=keys,
        segmenter_source=segmenter,
    )  # fmt: skip
    _recompute(app)
    if keys is not None:
        keys.on_dom_event(lambda e: key_event(app, e))
        detail_events.on_dom_event(lambda e: image_event(app, e))
    class_filter.observe(lambda _: show_page(app, 0), names="value")
    unreviewed.observe(lambda _: show_page(app, 0), names="value")
    prev_button.on_click(lambda _: show_page(app, app.page - 1))
    next_button.on_click(lambda _: show_page(app, app.page + 1))
    add_button.on_click(lambda _: add_object(app))
    no_object_button.on_click(lambda _: no_object(app))

    def clear(_: Any) -> None:
        app.points, app.corners = [], []
        _show_fix(app)

    clear_button.on_click(clear)
    show_page(app, _first_open_page(app))
    done = len(app.state.final)
    note = " ".join(log.notes)
    _message(
        app,
        f"{len(data.items)} objects in {len(data.images)} images; {done} decided so far "
        f"(saved in {log.path.name}). {note}".strip(),
    )
    return app


def review(
    dataset: str | os.PathLike,
    *,
    segmenter: TextSegmenter | Callable[[], TextSegmenter] | None = None,
    user: str | None = None,
) -> Any:
    """Show the review of `dataset` in the notebook (see the module's docstring) and return
    its root widget. Export what it kept with `python -m textseg export DATASET
    --reviewed-only`."""
    from IPython.display import display

    app = build_review(dataset, segmenter=segmenter, user=user)
    display(app.root)
    return app.root

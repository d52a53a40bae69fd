"""A small ipywidgets UI: bring in an image, type a prompt (or click points and boxes), press
Run or Enter, see the masks and a table with a colour key, download masks + JSON.

Three ways in: the Image button (an ipywidgets FileUpload, for small files, see
`upload_limit`), the File box (a path, e.g. a file uploaded with Colab's file browser or on a
mounted Google Drive, or an http(s) URL; any size), and on Colab "Upload (any size)", Colab's
own chunked picker. On Colab the download goes through Colab's `files.download`; elsewhere it
is a link.

    from textseg.ui import launch
    launch()                        # models load (once) on the first Run
    launch(my_text_segmenter)       # or pass a TextSegmenter, or a function that builds one

Clicks on the picture come from ipyevents (a small DOM-event widget library with prebuilt
extensions for JupyterLab, Notebook and Voila, and that runs on Colab with its custom widget
manager): it reports each click in the picture's own pixels, so no plotting canvas is
needed. The callbacks are plain functions of a `SegmentApp` (`run`, `upload_changed`,
`clear`, `image_event`), so tests drive them without a browser, or through the widgets'
messages. Errors show as a message in the widget, never a traceback.

Large pictures are shown downscaled (at most DISPLAY_SIZE); the download keeps full-size
masks. Image-button uploads travel to the kernel in one message, which Jupyter servers drop
silently above 10 MiB (Tornado's default), and Colab from about 1 MB on: a small script in
the page refuses larger files before they are sent, so the UI can say so and name the way in
that takes them.
"""

from __future__ import annotations

import base64
import html
import inspect
import io
import logging
import os
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from textseg import backends, colab
from textseg.backends import DEFAULT_BACKEND
from textseg.errors import TextsegError
from textseg.review import review  # the review gallery lives in its own file: textseg.ui.review

if TYPE_CHECKING:
    from PIL import Image

    from textseg.pipeline import TextSegmenter
    from textseg.result import Segmentation

__all__ = [
    "BACKENDS",
    "DEFAULT_BACKEND",
    "SegmentApp",
    "build_app",
    "clear",
    "colab_upload",
    "download_zip",
    "image_event",
    "launch",
    "open_soon",
    "open_source",
    "review",
    "run",
    "run_soon",
    "upload_changed",
    "upload_limit",
]

logger = logging.getLogger(__name__)

ACCEPT = ".jpg,.jpeg,.png,.webp"
DISPLAY_SIZE = (640, 440)  # (W, H) the picture is shown at most at; fits a 1280×800 screen
# The menu is textseg.backends.BACKENDS, read when an app is built (backends.menu()); this
# (label, name) tuple of it at import is kept for one release.
BACKENDS = tuple(backends.menu())
# Jupyter servers (Tornado) drop websocket messages over 10 MiB (10,485,760 bytes). An N-byte
# upload is a binary frame of N + 619 bytes there (ipywidgets 7.7.1; 8: + 615), so 10 MB leaves
# room. Colab's widget channel fails from about 1 MB on (ipywidgets#3452) and did not carry
# binary frames (colabtools#587): as base64 JSON an N-byte file is 1.3333 N + 608 bytes, so a
# 1,000,000-byte message holds at most 749,544 bytes of file. 700 kB stays under that with room
# for long names. Measured by benchmarks/bench_upload_message.py; see the README's "Large photos".
JUPYTER_UPLOAD_LIMIT = 10_000_000
COLAB_UPLOAD_LIMIT = 700_000
# What the page's upload guard sends instead of a file over the limit.
TOO_LARGE_MARKER = b"textseg: file over the upload limit, not sent"
MODES = (("+ point", "positive"), ("\u2212 point", "negative"), ("box", "box"))
DRAG_PIXELS = 5  # a press and release further apart than this (display pixels) is a drag
SETTLE_SECONDS = 0.3  # Enter / Run wait this long for the prompt's last keystrokes

SegmenterSource = Union["TextSegmenter", Callable[..., "TextSegmenter"], None]

_HELP = (
    "<b>Box score</b>: how sure the detector must be that a box holds one of your phrases "
    "(lower finds more, and more wrong things). <b>Word score</b>: how clearly the box must "
    "match the words of its phrase."
)
_CLICK_HELP = "Click the picture: + on the object, \u2212 off it, or two corners of a box."
_CSS = """<style>
.textseg-table table{border-collapse:collapse;font-size:13px}
.textseg-table th,.textseg-table td{padding:2px 8px;border-bottom:1px solid #ddd;text-align:left}
.textseg-swatch{display:inline-block;width:14px;height:14px;border:1px solid #333;
vertical-align:middle}
.textseg-image img{cursor:crosshair}
</style>"""


def upload_limit() -> int:
    """The largest Image-button upload (bytes) that reaches the kernel here: 10 MB on Jupyter
    servers and Voila (their websocket limit is 10 MiB), 0.7 MB on Colab. The File box and
    Colab's "Upload (any size)" have no such limit."""
    return COLAB_UPLOAD_LIMIT if colab.on_colab() else JUPYTER_UPLOAD_LIMIT


def _guard_html(limit: int) -> str:
    """A hidden element whose error handler installs the upload guard once per page: a
    FileReader that reads a file over `limit` bytes reads TOO_LARGE_MARKER instead, so the
    widget sends a few bytes (and the file's real size) rather than a message the server
    drops. Only files over the limit of a textseg UI on the page are affected."""
    marker = TOO_LARGE_MARKER.decode("ascii")
    script = (
        "(function(){if(window.__textsegGuard)return;window.__textsegGuard=1;"
        "var read=FileReader.prototype.readAsArrayBuffer;"
        "FileReader.prototype.readAsArrayBuffer=function(b){var lim=0;"
        "document.querySelectorAll('[data-textseg-limit]').forEach(function(e){"
        "lim=Math.max(lim,+e.getAttribute('data-textseg-limit'))});"
        f"if(lim>0&&b instanceof File&&b.size>lim){{b=new Blob(['{marker}'])}}"
        "return read.call(this,b)}})()"
    )
    return (
        f'<span data-textseg-limit="{limit}"></span>'
        f'<img src="data:," alt="" style="display:none" onerror="{html.escape(script)}">'
    )


@dataclass
class SegmentApp:
    """The UI's widgets and the state its callbacks share.

    root is the widget to display. factory(backend) builds a TextSegmenter for a backend
    name on its first Run; built ones are kept in `segmenters`. `picture` is the uploaded
    image (full size), `display_scale` = display pixels / picture pixels. `points` are
    (x, y, label) and `boxes` (x0, y0, x1, y1) in the picture's pixels; label 1 = on the
    object, 0 = not on it. `last` holds the latest result.
    """

    root: Any
    upload: Any
    prompt: Any
    box_threshold: Any
    text_threshold: Any
    run_button: Any
    clear_button: Any
    mode: Any
    backend: Any
    status: Any
    image: Any
    events: Any
    table: Any
    download: Any
    factory: Callable[[str], TextSegmenter]
    upload_limit: int = JUPYTER_UPLOAD_LIMIT
    source: Any = None  # the File box: a path or an http(s) URL
    open_button: Any = None
    colab_upload: Any = None  # "Upload (any size)": Colab's own picker (hidden elsewhere)
    picker: Any = None  # on Colab: an Output that shows Colab's picker while it is open
    download_button: Any = None  # on Colab: hands the zip to files.download
    on_colab: bool = False
    zip_path: Path | None = None  # on Colab: the zip the download button hands over
    segmenters: dict[str, TextSegmenter] = field(default_factory=dict)
    picture: Image.Image | None = None
    name: str = ""
    upload_error: str | None = None
    display_scale: float = 1.0
    display_base: Image.Image | None = None
    points: list[tuple[float, float, int]] = field(default_factory=list)
    boxes: list[tuple[float, float, float, float]] = field(default_factory=list)
    corner: tuple[float, float] | None = None
    press: tuple[float, float] | None = None
    dragged: bool = False
    last: Segmentation | None = None
    timer: Any = None  # a pending run_soon
    source_timer: Any = None  # a pending open_soon

    @property
    def segmenter(self) -> TextSegmenter | None:
        """The segmenter of the chosen backend, if built."""
        return self.segmenters.get(self.backend.value)


def _message(app: SegmentApp, text: str, *, kind: str = "info") -> None:
    color = {"info": "#444", "busy": "#a60", "error": "#b00", "ok": "#070"}[kind]
    app.status.value = f'<span style="color:{color}">{html.escape(text)}</span>'


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def _uploaded(value: Any) -> tuple[str, bytes, int]:
    """(name, bytes, size the browser reported) of the uploaded file, for ipywidgets 8
    (tuple of dicts) and 7 (dict)."""
    if isinstance(value, dict):  # ipywidgets 7: {name: {"metadata": ..., "content": ...}}
        value = [{"name": k, **v} for k, v in value.items()]
    files = list(value or ())
    if not files:
        raise TextsegError("upload an image first (jpg, png or webp)")
    first = files[-1]
    meta = first.get("metadata", {})
    name = first.get("name") or meta.get("name", "upload")
    content = bytes(first["content"])
    size = first.get("size", meta.get("size", len(content)))
    return str(name), content, int(size if size is not None else len(content))


# ---- display: a downscaled copy with the clicked prompts drawn on top -------------------


def _display_size(width: int, height: int) -> tuple[int, int, float]:
    scale = min(1.0, DISPLAY_SIZE[0] / width, DISPLAY_SIZE[1] / height)
    return max(1, round(width * scale)), max(1, round(height * scale)), scale


def _display_copy(picture: Image.Image) -> tuple[Image.Image, float]:
    """(the picture at most DISPLAY_SIZE, display pixels per picture pixel): a 12 MP photo is
    downscaled here, in Python, so only a small JPEG travels to the browser."""
    from PIL import Image

    w, h, scale = _display_size(picture.width, picture.height)
    if scale == 1.0:
        return picture.copy(), scale
    return picture.resize((w, h), Image.Resampling.BILINEAR, reducing_gap=2.0), scale


def _display_overlay(seg: Segmentation, picture: Image.Image) -> Image.Image:
    """The overlay drawn on the display-size copy (masks resized nearest, boxes scaled):
    cheap for a 12 MP photo, and the colours are those of the full-size overlay."""
    from PIL import Image

    from textseg.draw import overlay
    from textseg.result import Segmentation

    w, h, scale = _display_size(picture.width, picture.height)
    if scale == 1.0:
        return overlay(picture, seg)
    small = picture.resize((w, h), Image.Resampling.BILINEAR)
    masks = np.stack(
        [np.asarray(Image.fromarray(m).resize((w, h), Image.Resampling.NEAREST)) for m in seg.masks]
    ) if len(seg) else np.zeros((0, h, w), bool)  # fmt: skip
    view = Segmentation(
        boxes=seg.boxes * np.float32(w / picture.width),
        scores=seg.scores, labels=seg.labels, masks=masks.astype(bool),
        mask_scores=seg.mask_scores, image_size=(h, w), prompt=seg.prompt, phrases=seg.phrases,
    )  # fmt: skip
    return overlay(small, view)


def _show(app: SegmentApp) -> None:
    """Draw the points, boxes and a pending box corner over the display base and send it."""
    from PIL import ImageDraw

    if app.display_base is None:
        app.image.value = b""
        app.image.layout.display = "none"  # no broken-image icon before there is a picture
        return
    picture = app.display_base.copy()
    draw = ImageDraw.Draw(picture)
    s = app.display_scale
    r = max(4, round(min(picture.size) / 80))
    for x0, y0, x1, y1 in app.boxes:
        for width, color in ((3, (0, 0, 0)), (1, (255, 255, 255))):
            draw.rectangle([x0 * s, y0 * s, x1 * s, y1 * s], outline=color, width=width)
    for x, y, label in app.points:
        cx, cy = x * s, y * s
        fill = (0, 200, 0) if label == 1 else (220, 0, 0)
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill, outline=(255, 255, 255), width=2)
    if app.corner is not None:
        cx, cy = app.corner[0] * s, app.corner[1] * s
        draw.line([cx - 2 * r, cy, cx + 2 * r, cy], fill=(255, 255, 255), width=2)
        draw.line([cx, cy - 2 * r, cx, cy + 2 * r], fill=(255, 255, 255), width=2)
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=88)
    app.image.value = buffer.getvalue()
    app.image.layout.display = ""


# ---- the result: table with a colour key, download of full-size files --------------------


def _table_html(seg: Segmentation) -> str:
    from textseg.draw import color_for

    if len(seg) == 0:
        return "<p>No objects found; try lower scores or other words.</p>"
    match = getattr(seg, "text_match", None)
    if match is not None and np.ndim(match) == 0:
        match = [match] * len(seg)
    if match is not None and all(m is None for m in match):  # no semantic checker ran
        match = None
    rows = []
    for i, (label, score, mscore, box) in enumerate(
        zip(seg.labels, seg.scores, seg.mask_scores, seg.boxes)
    ):
        r, g, b = color_for(i)
        swatch = f'<span class="textseg-swatch" style="background:rgb({r},{g},{b})"></span>'
        cells = [swatch, str(i), html.escape(label), f"{score:.2f}", f"{mscore:.2f}"]
        if match is not None:
            cells.append("\u2013" if match[i] is None else f"{float(match[i]):.2f}")
        cells.append(", ".join(f"{v:.0f}" for v in box))
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    heads = ["colour", "#", "label", "score", "mask score"]
    if match is not None:
        heads.append("text match")
    heads.append("box (x0, y0, x1, y1)")
    head = "<tr>" + "".join(f"<th>{h}</th>" for h in heads) + "</tr>"
    return f"<table>{head}{''.join(rows)}</table>"


def _zip_bytes(seg: Segmentation) -> bytes:
    from textseg.export import save

    buffer = io.BytesIO()
    with tempfile.TemporaryDirectory() as tmp:
        files = save(seg, tmp, overlay_format="jpeg")  # a 12 MP overlay.png is tens of MB
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in [files.json, files.overlay, *files.masks]:
                zf.write(path, arcname=Path(path).name)
    return buffer.getvalue()


def _download_html(seg: Segmentation, stem: str) -> str:
    """A link to a zip of the full-size masks, JSON and overlay (JPEG); '' when nothing
    was found."""
    if len(seg) == 0:
        return ""
    data = _zip_bytes(seg)
    payload = base64.b64encode(data).decode("ascii")
    name = html.escape(f"{stem}_textseg.zip")
    return (
        f'<a download="{name}" href="data:application/zip;base64,{payload}" '
        f'style="font-weight:bold">Download masks + JSON (zip, {_mb(len(data))})</a>'
    )


# ---- callbacks ---------------------------------------------------------------------------


def _forget_result(app: SegmentApp) -> None:
    app.last = None
    app.table.value = ""
    app.download.value = ""
    app.zip_path = None
    if app.download_button is not None:
        app.download_button.layout.display = "none"


def _large_way(app: SegmentApp) -> str:
    """The way in for files over the Image button's limit here."""
    box = "its path or an http(s) URL in the File box"
    return f"Upload (any size), or {box}" if app.on_colab else box


def _ways_in(app: SegmentApp) -> str:
    return f"Image takes files up to {_mb(app.upload_limit)} here; larger photos: {_large_way(app)}"


def _take(app: SegmentApp, name: str, data: bytes) -> None:
    """Make `data` (the file `name`) the picture: load it at full size, show a preview at
    most DISPLAY_SIZE, forget the old picture, result and clicks. An error leaves no picture
    behind, and says why."""
    from textseg.images import load_image

    _forget_result(app)
    app.picture, app.display_base, app.upload_error = None, None, None
    app.points, app.boxes, app.corner, app.press = [], [], None, None
    app.name = name
    try:
        app.picture = load_image(data, name=name)  # errors name the file
    except TextsegError as err:
        _refuse(app, err)
        return
    app.display_base, app.display_scale = _display_copy(app.picture)
    w, h = app.display_base.size
    _show(app)
    shown = "" if app.display_scale == 1.0 else f", shown at {w}\u00d7{h}"
    _message(
        app,
        f"{name} ({app.picture.width}\u00d7{app.picture.height}, {_size(len(data))}{shown}) "
        "ready; type what to find (or click points) and press Enter or Run",
    )


def _size(n: int) -> str:
    return f"{n / 1024:.0f} KB" if n < 1_000_000 else _mb(n)


def _refuse(app: SegmentApp, err: Exception) -> None:
    """No picture, and the reason in the status line (and again on Run)."""
    app.picture, app.display_base = None, None
    app.upload_error = str(err)
    _message(app, f"Error: {err}", kind="error")
    _show(app)


def upload_changed(app: SegmentApp) -> None:
    """Callback of the Image button (a FileUpload): read its file and take it as the picture
    (see `_take`). A file over the upload limit (see `upload_limit`) is refused with the way
    in that takes it."""
    try:
        name, data, size = _uploaded(app.upload.value)
        if data == TOO_LARGE_MARKER or size > app.upload_limit:
            raise TextsegError(
                f"{name} is {_mb(size)}, over the {_mb(app.upload_limit)} upload limit here "
                f"(larger files never reach Python); use {_large_way(app)}"
            )
    except TextsegError as err:
        if app.upload.value:
            _forget_result(app)
            app.name = ""
            _refuse(app, err)
        else:
            _forget_result(app)
            app.picture, app.display_base, app.upload_error = None, None, None
            _message(app, f"{err}; {_ways_in(app)}")
            _show(app)
        return
    _take(app, name, data)


def open_source(app: SegmentApp) -> None:
    """Callback of the File box (Enter or Open): read the path or http(s) URL typed there
    (`textseg.images.read_source`: a size cap and a timeout for URLs) and take it as the
    picture. Any size: the bytes do not travel through the widget."""
    from textseg.images import read_source

    text = app.source.value.strip()
    _message(app, f"reading {text}\u2026" if text else "reading\u2026", kind="busy")
    try:
        name, data = read_source(text)
    except TextsegError as err:
        _forget_result(app)
        app.name = ""
        _refuse(app, err)
        return
    _take(app, name, data)


def colab_upload(app: SegmentApp) -> None:
    """Callback of "Upload (any size)" on Colab: Colab's own picker, which sends the file in
    chunks (no size limit); the chosen file becomes the picture."""
    _message(app, "choose a file in Colab's picker below\u2026", kind="busy")
    try:
        if app.picker is not None:
            with app.picker:
                chosen = colab.upload()
            app.picker.clear_output()
        else:
            chosen = colab.upload()
    except Exception as err:  # noqa: BLE001 - Colab's picker failed: say so, keep the UI
        logger.debug("Colab upload failed", exc_info=True)
        _message(app, f"Error: Colab's upload failed ({type(err).__name__}: {err})", kind="error")
        return
    if not chosen:
        _message(app, "no file chosen; " + _ways_in(app))
        return
    name, data = chosen[-1]
    _take(app, name, data)


def _colab_zip(seg: Segmentation, stem: str) -> Path:
    """The result's zip written (kill-safe: temporary name, fsync, rename) where Colab's
    download can take it."""
    folder = Path(tempfile.gettempdir()) / "textseg-downloads"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}_textseg.zip"
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(_zip_bytes(seg))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def download_zip(app: SegmentApp) -> None:
    """Callback of the download button on Colab: hand the result's zip to the browser."""
    if app.zip_path is None:
        _message(app, "nothing to download yet: press Run first")
        return
    try:
        colab.download(app.zip_path)
    except Exception as err:  # noqa: BLE001 - the widget shows a message, not a traceback
        logger.debug("Colab download failed", exc_info=True)
        _message(app, f"Error: Colab's download failed ({type(err).__name__}: {err})", kind="error")


def _accepts(segmenter: Any, name: str) -> bool:
    try:
        return name in inspect.signature(segmenter.segment).parameters
    except (TypeError, ValueError):
        return False


def _segmenter(app: SegmentApp) -> TextSegmenter:
    backend = app.backend.value
    if backend not in app.segmenters:
        _message(app, "loading models\u2026 (the first time downloads them)", kind="busy")
        app.segmenters[backend] = app.factory(backend)
    return app.segmenters[backend]


def run(app: SegmentApp) -> None:
    """Callback of Run and of Enter in the prompt: segment the uploaded picture with the
    prompt and the clicked points and boxes."""
    from textseg.export import folder_name

    app.run_button.disabled = app.clear_button.disabled = True
    _forget_result(app)
    # The outcome is shown last, once Run and Clear take clicks again: the front end applies
    # the messages in order, so a status that says done never sits above a disabled Clear
    # (the browser test clicked Clear at "3 objects" and the click was lost).
    outcome, kind = "", "info"
    try:
        if app.upload_error:
            raise TextsegError(app.upload_error)
        if app.picture is None:
            raise TextsegError(f"upload an image first (jpg, png or webp); {_ways_in(app)}")
        segmenter = _segmenter(app)
        clicks: dict[str, Any] = {}
        if app.points or app.boxes:
            if not _accepts(segmenter, "points"):
                raise TextsegError(
                    "this segmenter takes no clicked points or boxes; press Clear to remove them"
                )
            if app.boxes:
                clicks["boxes"] = np.array(app.boxes, dtype=np.float32).reshape(-1, 4)
            if app.points:
                clicks["points"] = np.array([p[:2] for p in app.points], dtype=np.float32)
                clicks["point_labels"] = np.array([p[2] for p in app.points], dtype=np.int64)
        text = app.prompt.value
        prompt = text if text.strip() or not clicks else None
        _message(app, f"segmenting {app.name}\u2026", kind="busy")
        seg = segmenter.segment(
            app.picture, prompt, box_threshold=app.box_threshold.value,
            text_threshold=app.text_threshold.value, **clicks,
        )  # fmt: skip
        seg.source = app.name  # the upload is not a path: name the result after the file
        app.display_base = _display_overlay(seg, app.picture)
        _show(app)
        app.table.value = _table_html(seg)
        if app.on_colab and app.download_button is not None:
            if len(seg):  # a data: link is blocked in Colab's output frame when large
                app.zip_path = _colab_zip(seg, folder_name(app.name))
                size = _mb(app.zip_path.stat().st_size)
                app.download_button.description = f"Download masks + JSON (zip, {size})"
                app.download_button.layout.display = ""
        else:
            app.download.value = _download_html(seg, folder_name(app.name))
        app.last = seg
        outcome, kind = f"{app.name}: {seg.summary()}", "ok"
    except (TextsegError, ValueError) as err:
        outcome, kind = f"Error: {err}", "error"
    except Exception as err:  # noqa: BLE001 - the widget shows a message, not a traceback
        logger.debug("textseg UI run failed", exc_info=True)
        outcome, kind = f"Unexpected error ({type(err).__name__}): {err}", "error"
    finally:
        app.run_button.disabled = app.clear_button.disabled = False
    _message(app, outcome, kind=kind)


def run_soon(app: SegmentApp, *, delay: float = SETTLE_SECONDS) -> None:
    """Run once the prompt has settled: `delay` seconds after the last Enter, Run or
    change of the prompt while a run waits. The browser holds back the prompt's latest
    keystrokes while the kernel is busy, but sends Enter and clicks at once, so a run
    started at once can see "c" of a fast-typed "cat". Without an event loop (plain
    Python, tests) it runs at once."""
    import asyncio

    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        run(app)
        return
    if app.timer is not None:
        app.timer.cancel()

    def fire() -> None:
        app.timer = None
        run(app)

    app.timer = loop.call_later(delay, fire)


def open_soon(app: SegmentApp, *, delay: float = SETTLE_SECONDS) -> None:
    """Open the File box's path or URL once the box has settled: like `run_soon`, since Enter
    and Open overtake the box's last keystrokes on their way from the browser."""
    import asyncio

    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        open_source(app)
        return
    if app.source_timer is not None:
        app.source_timer.cancel()

    def fire() -> None:
        app.source_timer = None
        open_source(app)

    app.source_timer = loop.call_later(delay, fire)


def clear(app: SegmentApp) -> None:
    """Callback of Clear: remove the clicked points and boxes and the result; the picture
    and the prompt stay."""
    app.points, app.boxes, app.corner, app.press, app.dragged = [], [], None, None, False
    _forget_result(app)
    if app.picture is not None:
        app.display_base, _ = _display_copy(app.picture)
        _message(app, f"{app.name}: cleared; type what to find (or click points), press Run")
    _show(app)


def image_event(app: SegmentApp, event: dict) -> None:
    """Callback of ipyevents on the picture (click, mousedown, mouseup; dataX/dataY in the
    displayed picture's pixels). Point modes add a point per click; box mode takes two
    clicks (corners) or one drag."""
    if app.picture is None or "dataX" not in event:
        return
    s = app.display_scale
    x = min(max(float(event["dataX"]) / s, 0.0), float(app.picture.width))
    y = min(max(float(event["dataY"]) / s, 0.0), float(app.picture.height))
    kind, mode = event.get("event") or event.get("type"), app.mode.value
    if kind == "mousedown":
        app.press, app.dragged = (x, y), False
        return
    if kind == "mouseup":
        start, app.press = app.press, None
        if mode == "box" and start is not None:
            far = max(abs(x - start[0]), abs(y - start[1])) * s > DRAG_PIXELS
            if far:  # a drag: one box from press to release; the click that follows is not a corner
                app.boxes.append(_box(start, (x, y)))
                app.corner, app.dragged = None, True
                _clicked(app)
        return
    if kind != "click":
        return
    if app.dragged:
        app.dragged = False
        return
    if mode in ("positive", "negative"):
        app.points.append((x, y, 1 if mode == "positive" else 0))
    elif app.corner is None:
        app.corner = (x, y)
    else:
        box = _box(app.corner, (x, y))
        app.corner = None
        if box[2] - box[0] >= 1 and box[3] - box[1] >= 1:
            app.boxes.append(box)
    _clicked(app)


def _clicked(app: SegmentApp) -> None:
    _show(app)
    n, m = len(app.points), len(app.boxes)
    _message(
        app, f"{n} point{'s' * (n != 1)}, {m} box{'es' * (m != 1)}; press Run (Clear removes them)"
    )


def _box(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float, float, float]:
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[0], b[0]), max(a[1], b[1]))


# ---- building ----------------------------------------------------------------------------


def _factory(segmenter: SegmenterSource) -> Callable[[str], TextSegmenter]:
    """factory(backend): the backend name goes to from_pretrained only when it is not the
    default, so that a textseg without backends still works."""

    def hub(backend: str) -> TextSegmenter:
        from textseg.pipeline import TextSegmenter

        extra = {} if backend == DEFAULT_BACKEND else {"backend": backend}
        return TextSegmenter.from_pretrained(**extra)

    if segmenter is None:
        return hub
    if callable(segmenter) and not hasattr(segmenter, "segment"):
        try:
            takes_backend = "backend" in inspect.signature(segmenter).parameters
        except (TypeError, ValueError):
            takes_backend = False
        fn = segmenter

        def custom(backend: str) -> TextSegmenter:
            if backend == DEFAULT_BACKEND:
                return fn()
            return fn(backend=backend) if takes_backend else hub(backend)

        return custom
    return lambda backend: segmenter  # type: ignore[return-value]


def _tip(widget_class: type, text: str) -> dict:
    """The keyword that gives `widget_class` a hover text: `tooltip` on ipywidgets 8 (and on
    7's buttons), `description_tooltip` on 7's other widgets (Colab has 7.7.1), where an
    unknown `tooltip=` is dropped with a warning."""
    traits = widget_class.class_trait_names()
    if "tooltip" in traits:
        return {"tooltip": text}
    return {"description_tooltip": text} if "description_tooltip" in traits else {}


def build_app(
    segmenter: SegmenterSource = None, *, max_upload_bytes: int | None = None
) -> SegmentApp:
    """Build the widgets and wire the callbacks; `app.root` is the widget to display.

    segmenter: a TextSegmenter, a function returning one (called on the first Run, so
    models load lazily; it may take a `backend=` keyword for the backend menu), or None for
    `TextSegmenter.from_pretrained()`.
    max_upload_bytes: refuse larger uploads with a message (default `upload_limit()`).
    """
    import ipywidgets as w
    from ipyevents import Event

    limit = int(max_upload_bytes or upload_limit())
    on_colab = colab.on_colab()
    upload = w.FileUpload(
        accept=ACCEPT, multiple=False, description="Image",
        **_tip(w.FileUpload, f"files up to {_mb(limit)} here"),
    )  # fmt: skip
    upload.add_class("textseg-upload")
    source = w.Text(
        placeholder="or a path or http(s) URL, then Enter", description="File",
        layout=w.Layout(width="300px"), style={"description_width": "40px"},
        **_tip(w.Text, "a file in the file browser, on a mounted Drive, or a URL; any size"),
    )  # fmt: skip
    source.add_class("textseg-source")
    open_button = w.Button(
        description="Open", icon="folder-open", layout=w.Layout(width="auto"),
        **_tip(w.Button, "or Enter"),
    )  # fmt: skip
    open_button.add_class("textseg-open")
    big_upload = w.Button(
        description="Upload (any size)", icon="upload",
        layout=w.Layout(width="auto", display="" if on_colab else "none"),
        **_tip(w.Button, "Colab's own upload: no size limit"),
    )  # fmt: skip
    big_upload.add_class("textseg-colab-upload")
    # Only on Colab, whose own frontend draws it. In the classic Notebook, widgetsnbextension
    # 3.6.7 to 3.6.10 (what pip installs next to any ipywidgets 7; Colab has 3.6.10) cannot
    # make an Output's model ("_deserialize_state is not a function"): the UI would not draw.
    picker = w.Output() if on_colab else None
    download_button = w.Button(
        description="Download masks + JSON", icon="download", button_style="success",
        layout=w.Layout(width="auto", display="none"),
    )  # fmt: skip
    download_button.add_class("textseg-download-button")
    prompt = w.Text(
        placeholder="what to find, e.g. skateboard, cap", description="Prompt",
        layout=w.Layout(width="360px"),
    )  # fmt: skip
    prompt.add_class("textseg-prompt")
    tip_box = "How sure the detector must be that a box holds one of your phrases"
    tip_text = "How clearly the box must match the words of its phrase"
    slider = dict(min=0.0, max=1.0, step=0.01, style={"description_width": "80px"})
    box = w.FloatSlider(
        value=0.35, description="Box score", **_tip(w.FloatSlider, tip_box), **slider
    )
    text = w.FloatSlider(
        value=0.25, description="Word score", **_tip(w.FloatSlider, tip_text), **slider
    )
    button = w.Button(
        description="Run", button_style="primary", icon="play", **_tip(w.Button, "or Enter")
    )
    button.add_class("textseg-run")
    clear_button = w.Button(
        description="Clear", icon="eraser", **_tip(w.Button, "remove clicks and result")
    )
    clear_button.add_class("textseg-clear")
    mode = w.ToggleButtons(
        options=MODES, value="positive", **_tip(w.ToggleButtons, "what a click on the picture adds"),
        tooltips=["a point on the object", "a point not on the object", "two corners of a box (or drag)"],
        style={"button_width": "70px"},
    )  # fmt: skip
    mode.add_class("textseg-mode")
    backend = w.Dropdown(options=backends.menu(), value=DEFAULT_BACKEND, description="Models")
    status = w.HTML()
    status.add_class("textseg-status")
    image = w.Image(format="jpeg", layout=w.Layout(max_width="100%", display="none"))
    image.add_class("textseg-image")
    events = Event(
        source=image, watched_events=["click", "mousedown", "mouseup"], prevent_default_action=True
    )
    table = w.HTML()
    table.add_class("textseg-table")
    download = w.HTML()
    download.add_class("textseg-download")
    help_text = w.HTML(f"{_CSS}<small>{_HELP}</small>{_guard_html(limit)}")
    root = w.VBox(
        [
            w.HBox(  # one row on a 1280-pixel screen, so the picture fits below
                [upload, big_upload, source, open_button, prompt, button, clear_button],
                layout=w.Layout(flex_flow="row wrap"),
            ),
            *([picker] if picker is not None else []),
            w.HBox([box, text]),
            help_text,
            w.HBox([w.Label("Click adds"), mode, backend, w.HTML(f"<small>{_CLICK_HELP}</small>")]),
            status,
            w.HBox(
                [
                    image,
                    w.VBox(
                        [table, download, download_button], layout=w.Layout(margin="0 0 0 12px")
                    ),
                ],
                layout=w.Layout(align_items="flex-start", flex_flow="row wrap"),
            ),
        ]
    )
    root.add_class("textseg-ui")
    app = SegmentApp(
        root=root, upload=upload, prompt=prompt, box_threshold=box, text_threshold=text,
        run_button=button, clear_button=clear_button, mode=mode, backend=backend,
        status=status, image=image, events=events, table=table, download=download,
        factory=_factory(segmenter), upload_limit=limit, source=source,
        open_button=open_button, colab_upload=big_upload, picker=picker,
        download_button=download_button, on_colab=on_colab,
    )  # fmt: skip
    if segmenter is not None and hasattr(segmenter, "segment"):
        app.segmenters[DEFAULT_BACKEND] = segmenter  # type: ignore[assignment]
        backend.disabled = True  # the caller chose the models
    upload.observe(lambda _change: upload_changed(app), names="value")
    open_button.on_click(lambda _button: open_soon(app))
    big_upload.on_click(lambda _button: colab_upload(app))
    download_button.on_click(lambda _button: download_zip(app))
    source.on_msg(
        lambda _w, content, _b: content.get("event") == "submit" and open_soon(app)
    )  # Enter in the File box
    source.observe(lambda _change: app.source_timer is not None and open_soon(app), names="value")
    button.on_click(lambda _button: run_soon(app))
    clear_button.on_click(lambda _button: clear(app))
    events.on_dom_event(lambda event: image_event(app, event))

    def submitted(_widget: Any, content: dict, _buffers: Any) -> None:
        if content.get("event") == "submit":  # Enter in the prompt (Text sends "submit")
            run_soon(app)

    prompt.on_msg(submitted)
    prompt.observe(lambda _change: app.timer is not None and run_soon(app), names="value")
    _message(
        app, f"upload an image (jpg, png or webp; {_ways_in(app)}), type what to find, "
        "press Enter or Run",
    )  # fmt: skip
    return app


def launch(segmenter: SegmenterSource = None, *, max_upload_bytes: int | None = None) -> Any:
    """Return the UI widget (display it, or leave it as a cell's last expression).

    segmenter: a TextSegmenter, a function that builds one, or None for the defaults;
    models load once, on the first Run. max_upload_bytes: see `build_app`.
    On Colab this turns on Colab's custom widget manager, which the picture's click events
    (ipyevents) need.
    """
    colab.enable_widgets()
    return build_app(segmenter, max_upload_bytes=max_upload_bytes).root

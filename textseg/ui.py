"""A small ipywidgets UI: upload an image, type a prompt, press Run, see masks and a table.

    from textseg.ui import launch
    launch()                        # models load (once) on the first Run
    launch(my_text_segmenter)       # or pass a TextSegmenter, or a function that builds one

The callbacks are plain functions of a `SegmentApp` (`run`, `upload_changed`), so tests
drive them without a browser. Errors show as a message in the widget, never a traceback.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from textseg.errors import TextsegError

if TYPE_CHECKING:
    from textseg.pipeline import TextSegmenter
    from textseg.result import Segmentation

__all__ = ["SegmentApp", "build_app", "launch", "run", "upload_changed"]

logger = logging.getLogger(__name__)

ACCEPT = ".jpg,.jpeg,.png,.webp"
SegmenterSource = Union["TextSegmenter", Callable[[], "TextSegmenter"], None]


@dataclass
class SegmentApp:
    """The UI's widgets and the state its callbacks share.

    root is the widget to display; segmenter is built by `factory` on the first run when
    it is None; last holds the latest result.
    """

    root: Any
    upload: Any
    prompt: Any
    box_threshold: Any
    text_threshold: Any
    run_button: Any
    status: Any
    image: Any
    table: Any
    download: Any
    factory: Callable[[], TextSegmenter]
    segmenter: TextSegmenter | None = None
    last: Segmentation | None = None


def _message(app: SegmentApp, text: str, *, kind: str = "info") -> None:
    color = {"info": "#444", "busy": "#a60", "error": "#b00", "ok": "#070"}[kind]
    app.status.value = f'<span style="color:{color}">{html.escape(text)}</span>'


def _uploaded(value: Any) -> tuple[str, bytes]:
    """(name, bytes) of the uploaded file, for ipywidgets 8 (tuple of dicts) and 7 (dict)."""
    if isinstance(value, dict):  # ipywidgets 7: {name: {"metadata": ..., "content": ...}}
        value = [{"name": k, **v} for k, v in value.items()]
    files = list(value or ())
    if not files:
        raise TextsegError("upload an image first (jpg, png or webp)")
    first = files[-1]
    name = first.get("name") or first.get("metadata", {}).get("name", "upload")
    return str(name), bytes(first["content"])


def _table_html(seg: Segmentation) -> str:
    if len(seg) == 0:
        return "<p>No objects found; try lower thresholds or other words.</p>"
    rows = "".join(
        f"<tr><td>{i}</td><td>{html.escape(label)}</td><td>{score:.2f}</td>"
        f"<td>{mscore:.2f}</td><td>{', '.join(f'{v:.0f}' for v in box)}</td></tr>"
        for i, (label, score, mscore, box) in enumerate(
            zip(seg.labels, seg.scores, seg.mask_scores, seg.boxes)
        )
    )
    head = "<tr><th>#</th><th>label</th><th>score</th><th>mask score</th><th>box (x0, y0, x1, y1)</th></tr>"
    return f'<table class="textseg">{head}{rows}</table>'


def _zip_bytes(seg: Segmentation) -> bytes:
    from textseg.export import save

    buffer = io.BytesIO()
    with tempfile.TemporaryDirectory() as tmp:
        files = save(seg, tmp)
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in [files.json, files.overlay, *files.masks]:
                zf.write(path, arcname=Path(path).name)
    return buffer.getvalue()


def _download_html(seg: Segmentation, stem: str) -> str:
    payload = base64.b64encode(_zip_bytes(seg)).decode("ascii")
    name = html.escape(f"{stem}_textseg.zip")
    return (
        f'<a download="{name}" href="data:application/zip;base64,{payload}" '
        'style="font-weight:bold">Download masks + JSON (zip)</a>'
    )


def upload_changed(app: SegmentApp) -> None:
    """Callback for a new upload: clear the old result and name the file."""
    app.image.value = b""
    app.table.value = ""
    app.download.value = ""
    try:
        name, data = _uploaded(app.upload.value)
    except TextsegError as err:
        _message(app, str(err))
        return
    _message(app, f"{name} ({len(data) / 1024:.0f} KB) ready; type a prompt and press Run")


def run(app: SegmentApp) -> None:
    """Callback of the Run button: segment the uploaded image with the prompt."""
    from textseg.draw import overlay
    from textseg.images import load_image

    app.run_button.disabled = True
    app.image.value, app.table.value, app.download.value = b"", "", ""
    try:
        name, data = _uploaded(app.upload.value)
        image = load_image(data, name=name)  # errors name the uploaded file
        if app.segmenter is None:
            _message(app, "loading models… (the first time downloads them)", kind="busy")
            app.segmenter = app.factory()
        _message(app, f"segmenting {name}…", kind="busy")
        seg = app.segmenter.segment(
            image, app.prompt.value,
            box_threshold=app.box_threshold.value, text_threshold=app.text_threshold.value,
        )  # fmt: skip
        # The upload is not a path, so name the result after the file here.
        seg.source = name
        picture = overlay(seg.image, seg)
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        app.image.value = buffer.getvalue()
        app.table.value = _table_html(seg)
        app.download.value = _download_html(seg, Path(name).stem or "image")
        app.last = seg
        _message(app, f"{name}: {seg.summary()}", kind="ok")
    except (TextsegError, ValueError) as err:
        _message(app, f"Error: {err}", kind="error")
    except Exception as err:  # noqa: BLE001 - the widget shows a message, not a traceback
        logger.debug("textseg UI run failed", exc_info=True)
        _message(app, f"Unexpected error ({type(err).__name__}): {err}", kind="error")
    finally:
        app.run_button.disabled = False


def _factory(segmenter: SegmenterSource) -> Callable[[], TextSegmenter]:
    if segmenter is None:

        def default() -> TextSegmenter:
            from textseg.pipeline import TextSegmenter

            return TextSegmenter.from_pretrained()

        return default
    if callable(segmenter) and not hasattr(segmenter, "segment"):
        return segmenter
    return lambda: segmenter  # type: ignore[return-value]


def build_app(segmenter: SegmenterSource = None) -> SegmentApp:
    """Build the widgets and wire the callbacks; `app.root` is the widget to display.

    segmenter: a TextSegmenter, a zero-argument function returning one (called on the
    first Run, so models load lazily), or None for `TextSegmenter.from_pretrained()`.
    """
    import ipywidgets as w

    upload = w.FileUpload(accept=ACCEPT, multiple=False, description="Image")
    prompt = w.Text(placeholder="skateboard, cap", description="Prompt")
    box = w.FloatSlider(value=0.35, min=0.0, max=1.0, step=0.01, description="Box thr.")
    text = w.FloatSlider(value=0.25, min=0.0, max=1.0, step=0.01, description="Text thr.")
    button = w.Button(description="Run", button_style="primary", icon="play")
    status = w.HTML()
    image = w.Image(format="png", layout=w.Layout(max_width="100%"))
    table = w.HTML()
    download = w.HTML()
    root = w.VBox(
        [w.HBox([upload, prompt]), w.HBox([box, text]), button, status, image, table, download]
    )
    app = SegmentApp(
        root=root, upload=upload, prompt=prompt, box_threshold=box, text_threshold=text,
        run_button=button, status=status, image=image, table=table, download=download,
        factory=_factory(segmenter),
        segmenter=segmenter if hasattr(segmenter, "segment") else None,  # type: ignore[arg-type]
    )  # fmt: skip
    upload.observe(lambda _change: upload_changed(app), names="value")
    button.on_click(lambda _button: run(app))
    _message(app, "upload an image (jpg, png or webp), type what to find, press Run")
    return app


def launch(segmenter: SegmenterSource = None) -> Any:
    """Return the UI widget (display it, or leave it as a cell's last expression).

    segmenter: a TextSegmenter, a function that builds one, or None for the defaults;
    models load once, on the first Run.
    """
    return build_app(segmenter).root

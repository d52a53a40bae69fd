"""The ipywidgets UI, driven through its plain callback functions (no browser)."""

from __future__ import annotations

import base64
import datetime
import io
import json
import re
import zipfile

import numpy as np
import pytest
from PIL import Image

from textseg.ui import build_app, launch, run, upload_changed


def _upload(name: str, data: bytes, kind: str = "image/png") -> tuple[dict, ...]:
    """What ipywidgets 8's FileUpload.value holds after a browser upload."""
    return (
        {
            "name": name,
            "type": kind,
            "size": len(data),
            "content": memoryview(data),
            "last_modified": datetime.datetime.now(tz=datetime.timezone.utc),
        },
    )


def _png(sample_image) -> bytes:
    buf = io.BytesIO()
    Image.open(sample_image).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def app(text_segmenter):
    app = build_app(text_segmenter)
    app.box_threshold.value = 0.0
    app.text_threshold.value = 0.0
    return app


def test_upload_then_run_shows_overlay_table_and_download(app, sample_image):
    app.upload.value = _upload("street.png", _png(sample_image))
    assert "street.png" in app.status.value and "ready" in app.status.value
    app.prompt.value = "cat, remote"
    run(app)
    assert not app.run_button.disabled
    shown = Image.open(io.BytesIO(bytes(app.image.value)))
    assert shown.format == "PNG" and shown.size == (320, 240)
    seg = app.last
    assert seg is not None and len(seg) > 0
    rows = re.findall(r"<tr><td>(\d+)</td><td>([^<]*)</td>", app.table.value)
    assert len(rows) == len(seg) and {label for _, label in rows} <= {"cat", "remote"}
    assert "street.png" in app.status.value and f"{len(seg)} object" in app.status.value
    payload = re.search(r'href="data:application/zip;base64,([^"]+)"', app.download.value).group(1)
    with zipfile.ZipFile(io.BytesIO(base64.b64decode(payload))) as zf:
        names = zf.namelist()
        data = json.loads(zf.read("segmentation.json"))
    assert "overlay.png" in names and sum(n.startswith("mask_") for n in names) == len(seg)
    assert data["source"] == "street.png" and len(data["objects"]) == len(seg)


def test_models_load_lazily_once_with_a_visible_loading_state(text_segmenter, sample_image):
    seen = []

    def factory():
        seen.append((app.status.value, app.run_button.disabled))
        return text_segmenter

    app = build_app(factory)
    assert seen == []  # nothing loads before the first Run
    app.upload.value = _upload("a.png", _png(sample_image))
    app.prompt.value = "cat"
    run(app)
    run(app)
    assert len(seen) == 1
    status, disabled = seen[0]
    assert "loading models" in status and disabled  # the button is off while it works
    assert not app.run_button.disabled and "a.png" in app.status.value


@pytest.mark.parametrize(
    ("upload", "prompt", "message"),
    [
        ((), "cat", "upload an image first"),
        (
            _upload("notes.txt", b"hello, not pixels", "text/plain"),
            "cat",
            "notes.txt: not an image",
        ),
        (_upload("empty.png", b""), "cat", r"empty.png: the file is empty"),
        ("PNG", "   ", "no words to look for"),
        ("PNG", ", ".join(f"thing {i}" for i in range(120)), "at most 256"),
    ],
)
def test_errors_show_as_a_message_not_a_traceback(app, sample_image, upload, prompt, message):
    app.upload.value = _upload("ok.png", _png(sample_image)) if upload == "PNG" else upload
    app.prompt.value = prompt
    run(app)
    assert re.search(message, app.status.value)
    assert "Error" in app.status.value and "Traceback" not in app.status.value
    assert not app.run_button.disabled
    assert app.image.value in (b"", None) or len(bytes(app.image.value)) == 0


def test_a_new_upload_clears_the_old_result(app, sample_image):
    app.upload.value = _upload("one.png", _png(sample_image))
    app.prompt.value = "cat"
    run(app)
    assert len(bytes(app.image.value)) > 0
    gray = io.BytesIO()
    Image.fromarray(np.full((20, 30), 128, np.uint8)).save(gray, format="PNG")
    app.upload.value = _upload("two.png", gray.getvalue())
    upload_changed(app)
    assert (
        len(bytes(app.image.value)) == 0 and app.table.value == "" and "two.png" in app.status.value
    )


def test_launch_returns_a_widget_with_the_controls(text_segmenter):
    import ipywidgets as w

    root = launch(text_segmenter)
    assert isinstance(root, w.VBox)

    def walk(widget):
        yield widget
        for child in getattr(widget, "children", ()):
            yield from walk(child)

    kinds = {type(x).__name__ for x in walk(root)}
    assert {"FileUpload", "Text", "FloatSlider", "Button", "Image", "HTML"} <= kinds
    upload = next(x for x in walk(root) if isinstance(x, w.FileUpload))
    assert upload.accept == ".jpg,.jpeg,.png,.webp"

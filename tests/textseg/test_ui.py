"""The ipywidgets UI, driven through its callbacks and through the widgets' own messages
(the ones the browser sends: Enter in the prompt, ipyevents clicks on the picture)."""

from __future__ import annotations

import base64
import datetime
import io
import json
import re
import warnings
import zipfile

import numpy as np
import pytest
from PIL import Image

from textseg import Segmentation
from textseg.draw import color_for
from textseg.ui import (
    DEFAULT_BACKEND,
    TOO_LARGE_MARKER,
    build_app,
    clear,
    launch,
    run,
    upload_changed,
)

# The UI needs ipywidgets and ipyevents: a skip, not a collection error, where they are missing
# (the lent GPU machine has neither).
pytest.importorskip("ipywidgets")
pytest.importorskip("ipyevents")


def _upload(name: str, data: bytes, kind: str = "image/png", size: int | None = None):
    """What ipywidgets 8's FileUpload.value holds after a browser upload."""
    return (
        {
            "name": name,
            "type": kind,
            "size": len(data) if size is None else size,
            "content": memoryview(data),
            "last_modified": datetime.datetime.now(tz=datetime.UTC),
        },
    )


def _set_upload(widget, value) -> None:
    """Deliver `value` (in ipywidgets 8's FileUpload.value form) as the browser does: on 8 the
    value itself; on 7 (Colab's 7.7.1), where value is read-only, the metadata and data lists,
    then the counter that makes the value from them."""
    if not widget.traits()["value"].read_only:
        widget.value = value
        return
    files = list(value)
    widget.metadata = [
        {"name": f["name"], "type": f["type"], "size": f["size"],
         "lastModified": int(f["last_modified"].timestamp() * 1000)}
        for f in files
    ]  # fmt: skip
    widget.data = [bytes(f["content"]) for f in files]
    widget._counter += 1


def _png(image: str | Image.Image) -> bytes:
    buf = io.BytesIO()
    (Image.open(image) if not isinstance(image, Image.Image) else image).save(buf, format="PNG")
    return buf.getvalue()


def _message(widget, content: dict) -> None:
    """Deliver a custom message from the browser to the widget, as the kernel does."""
    widget._handle_msg(
        {"content": {"data": {"method": "custom", "content": content}}, "buffers": []}
    )


def _click(app, x: float, y: float, kind: str = "click") -> None:
    _message(app.events, {"event": kind, "type": kind, "dataX": x, "dataY": y})


def _shown(app) -> Image.Image:
    return Image.open(io.BytesIO(bytes(app.image.value)))


def _zip(app) -> zipfile.ZipFile:
    payload = re.search(r'href="data:application/zip;base64,([^"]+)"', app.download.value).group(1)
    return zipfile.ZipFile(io.BytesIO(base64.b64decode(payload)))


class FakeSegmenter:
    """Records what the UI passes; one object, its box the first clicked box (or fixed)."""

    def __init__(self, found: int = 1):
        self.calls: list[dict] = []
        self.found = found
        self.text_match = None

    def segment(self, image, prompt=None, *, box_threshold=0.35, text_threshold=0.25,
                boxes=None, points=None, point_labels=None):  # fmt: skip
        call = dict(prompt=prompt, box_threshold=box_threshold, text_threshold=text_threshold)
        call.update({k: v for k, v in (("boxes", boxes), ("points", points),
                                       ("point_labels", point_labels)) if v is not None})  # fmt: skip
        self.calls.append(call)
        h, w = image.height, image.width
        n = self.found
        masks = np.zeros((n, h, w), bool)
        masks[:, h // 4 : h // 2, w // 4 : w // 2] = True
        seg = Segmentation(
            boxes=np.tile([w / 4, h / 4, w / 2, h / 2], (n, 1)), scores=np.full(n, 0.8),
            labels=["cat"] * n, masks=masks, mask_scores=np.full(n, 0.9), image_size=(h, w),
            prompt="cat.", phrases=("cat",), image=image,
        )  # fmt: skip
        if self.text_match is not None:
            seg.text_match = self.text_match[:n]
        return seg


class TextOnlySegmenter(FakeSegmenter):
    def segment(self, image, prompt, *, box_threshold=0.35, text_threshold=0.25):
        return super().segment(image, prompt, box_threshold=box_threshold)


@pytest.fixture
def app(text_segmenter):
    app = build_app(text_segmenter)
    app.box_threshold.value = 0.0
    app.text_threshold.value = 0.0
    return app


def test_nothing_shown_before_upload_then_a_preview(app, sample_image):
    assert app.image.layout.display == "none" and len(bytes(app.image.value)) == 0
    _set_upload(app.upload, _upload("street.png", _png(sample_image)))
    assert "street.png" in app.status.value and "ready" in app.status.value
    assert app.image.layout.display != "none" and _shown(app).size == (320, 240)
    assert app.table.value == "" and app.download.value == ""


def test_upload_then_run_shows_overlay_table_with_colour_key_and_download(app, sample_image):
    _set_upload(app.upload, _upload("street.png", _png(sample_image)))
    app.prompt.value = "cat, remote"
    run(app)
    assert not app.run_button.disabled and not app.clear_button.disabled
    assert _shown(app).size == (320, 240)
    seg = app.last
    assert seg is not None and len(seg) > 0
    rows = re.findall(
        r'<tr><td><span class="textseg-swatch" style="background:rgb\((\d+),(\d+),(\d+)\)">'
        r"</span></td><td>(\d+)</td><td>([^<]*)</td>",
        app.table.value,
    )
    assert len(rows) == len(seg) and {row[4] for row in rows} <= {"cat", "remote"}
    assert [tuple(map(int, row[:3])) for row in rows] == [color_for(i) for i in range(len(seg))]
    assert "text match" not in app.table.value  # the tiny pipeline gives no text_match
    assert "street.png" in app.status.value and f"{len(seg)} object" in app.status.value
    with _zip(app) as zf:
        names = zf.namelist()
        data = json.loads(zf.read("segmentation.json"))
    assert "overlay.jpg" in names and sum(n.startswith("mask_") for n in names) == len(seg)
    assert data["source"] == "street.png" and len(data["objects"]) == len(seg)


@pytest.mark.parametrize("prompt", ["cat, remote", "   "])  # a result, and an error
def test_the_outcome_is_shown_once_run_and_clear_take_clicks_again(app, sample_image, prompt):
    """The front end applies widget changes in the order they are sent: a status that says
    done, sent before the buttons were enabled, let a click on Clear at that moment be lost
    (the browser test on stack (b) timed out waiting for "cleared")."""
    _set_upload(app.upload, _upload("street.png", _png(sample_image)))
    app.prompt.value = prompt
    changes: list[tuple[str, object]] = []
    app.status.observe(lambda c: changes.append(("status", c["new"])), "value")
    for name in ("run_button", "clear_button"):
        button = getattr(app, name)
        button.observe(lambda c, name=name: changes.append((name, c["new"])), "disabled")
    run(app)
    assert changes[-1][0] == "status"
    assert ("Error" in changes[-1][1]) == (not prompt.strip())
    enabled = [i for i, (what, new) in enumerate(changes) if what != "status" and new is False]
    assert len(enabled) == 2 and max(enabled) < len(changes) - 1


def test_enter_in_the_prompt_runs(sample_image):
    fake = FakeSegmenter()
    app = build_app(fake)
    _set_upload(app.upload, _upload("a.png", _png(sample_image)))
    app.prompt.value = "cat"
    _message(app.prompt, {"event": "submit"})  # what the browser sends on Enter
    assert len(fake.calls) == 1 and fake.calls[0]["prompt"] == "cat"
    assert app.last is not None and "1 object" in app.status.value


def test_enter_waits_for_the_last_keystrokes_of_the_prompt(sample_image):
    """In the browser, Enter overtakes the prompt's held-back keystrokes: the run waits for
    the prompt to settle, and runs once with its final value."""
    import asyncio

    fake = FakeSegmenter()
    app = build_app(fake)
    _set_upload(app.upload, _upload("a.png", _png(sample_image)))

    async def typing_fast_then_enter():
        app.prompt.value = "c"
        _message(app.prompt, {"event": "submit"})  # arrives before "ca", "cat"
        await asyncio.sleep(0.05)
        app.prompt.value = "ca"
        await asyncio.sleep(0.05)
        app.prompt.value = "cat"
        assert fake.calls == []
        await asyncio.sleep(0.5)

    asyncio.run(typing_fast_then_enter())
    assert [c["prompt"] for c in fake.calls] == ["cat"]
    assert app.timer is None


def test_large_pictures_are_shown_small_and_downloaded_full_size(sample_image):
    big = Image.open(sample_image).resize((3000, 2000))
    app = build_app(FakeSegmenter())
    _set_upload(app.upload, _upload("big.png", _png(big)))
    assert _shown(app).size == (640, 427)
    app.prompt.value = "cat"
    run(app)
    assert _shown(app).size == (640, 427) and len(bytes(app.image.value)) < 200_000
    with _zip(app) as zf:
        mask = Image.open(io.BytesIO(zf.read("mask_00_cat.png")))
        overlay = Image.open(io.BytesIO(zf.read("overlay.jpg")))
    assert mask.size == (3000, 2000) and overlay.size == (3000, 2000)


def test_a_too_large_upload_says_the_limit_and_drops_the_old_picture(sample_image):
    fake = FakeSegmenter()
    app = build_app(fake, max_upload_bytes=5_000_000)
    _set_upload(app.upload, _upload("ok.png", _png(sample_image)))
    assert app.picture is not None
    # The page's guard sends a marker instead of the 12 MB file; its real size comes along.
    _set_upload(app.upload, _upload("huge.png", TOO_LARGE_MARKER, size=12_345_678))
    assert "huge.png is 12.3 MB, over the 5.0 MB upload limit" in app.status.value
    assert app.picture is None and app.image.layout.display == "none"
    app.prompt.value = "cat"
    run(app)
    assert fake.calls == [] and "upload limit" in app.status.value  # the old picture is gone
    # Without the guard (e.g. a server with a raised limit) the size still decides.
    _set_upload(app.upload, _upload("big.png", _png(sample_image), size=6_000_000))
    assert "over the 5.0 MB upload limit" in app.status.value and app.picture is None


def test_download_only_when_something_was_found(sample_image):
    app = build_app(FakeSegmenter(found=0))
    _set_upload(app.upload, _upload("a.png", _png(sample_image)))
    app.prompt.value = "cat"
    run(app)
    assert app.last is not None and len(app.last) == 0
    assert app.download.value == "" and "No objects found" in app.table.value


def test_models_load_lazily_once_with_a_visible_loading_state(text_segmenter, sample_image):
    seen = []

    def factory():
        seen.append((app.status.value, app.run_button.disabled))
        return text_segmenter

    app = build_app(factory)
    assert seen == []  # nothing loads before the first Run
    _set_upload(app.upload, _upload("a.png", _png(sample_image)))
    app.prompt.value = "cat"
    run(app)
    run(app)
    assert len(seen) == 1
    status, disabled = seen[0]
    assert "loading models" in status and disabled  # the button is off while it works
    assert not app.run_button.disabled and "a.png" in app.status.value


def test_the_backend_menu_reaches_from_pretrained_only_when_not_the_default(
    monkeypatch, sample_image
):
    from textseg.pipeline import TextSegmenter

    calls = []

    def from_pretrained(**kwargs):
        calls.append(kwargs)
        return FakeSegmenter()

    monkeypatch.setattr(TextSegmenter, "from_pretrained", staticmethod(from_pretrained))
    app = build_app()
    _set_upload(app.upload, _upload("a.png", _png(sample_image)))
    app.prompt.value = "cat"
    assert app.backend.value == DEFAULT_BACKEND
    run(app)
    app.backend.value = "sam3"
    run(app)
    run(app)  # built once per backend
    assert calls == [{}, {"backend": "sam3"}]
    assert set(app.segmenters) == {DEFAULT_BACKEND, "sam3"}


def test_a_factory_may_take_the_backend(sample_image):
    asked = []

    def factory(backend=None):
        asked.append(backend)
        return FakeSegmenter()

    app = build_app(factory)
    _set_upload(app.upload, _upload("a.png", _png(sample_image)))
    app.prompt.value = "cat"
    app.backend.value = "sam3"
    run(app)
    assert asked == ["sam3"]


def test_text_match_is_a_table_column_when_present(sample_image):
    fake = FakeSegmenter(found=2)
    fake.text_match = [0.91, None]
    app = build_app(fake)
    _set_upload(app.upload, _upload("a.png", _png(sample_image)))
    app.prompt.value = "cat"
    run(app)
    assert "<th>text match</th>" in app.table.value
    assert "<td>0.91</td>" in app.table.value and "<td>\u2013</td>" in app.table.value


def test_clicks_become_points_and_boxes_in_picture_pixels(sample_image):
    fake = FakeSegmenter()
    app = build_app(fake)
    big = Image.open(sample_image).resize((1280, 880))  # shown at 640×440: scale 0.5
    _set_upload(app.upload, _upload("a.png", _png(big)))
    before = np.asarray(_shown(app)).astype(int)
    _click(app, 100, 50)  # + point
    app.mode.value = "negative"
    _click(app, 300, 200)
    app.mode.value = "box"
    _click(app, 10, 20)  # two corners...
    _click(app, 60, 80)
    _click(app, 400, 300, "mousedown")  # ... or a drag, then the click the browser adds
    _click(app, 500, 420, "mouseup")
    _click(app, 500, 420)
    assert app.points == [(200.0, 100.0, 1), (600.0, 400.0, 0)]
    assert app.boxes == [(20.0, 40.0, 120.0, 160.0), (800.0, 600.0, 1000.0, 840.0)]
    assert "2 points, 2 boxes" in app.status.value
    after = np.asarray(_shown(app)).astype(int)
    g = after[50, 100]
    assert g[1] > 150 and g[0] < 100 and np.abs(after[50, 100] - before[50, 100]).sum() > 60
    r = after[200, 300]
    assert r[0] > 150 and r[1] < 100  # the negative point is drawn red
    run(app)
    call = fake.calls[-1]
    np.testing.assert_allclose(call["points"], [[200, 100], [600, 400]])
    np.testing.assert_array_equal(call["point_labels"], [1, 0])
    np.testing.assert_allclose(call["boxes"], [[20, 40, 120, 160], [800, 600, 1000, 840]])
    assert call["prompt"] is None  # no words typed: the clicks alone
    app.prompt.value = "cat"
    run(app)
    assert fake.calls[-1]["prompt"] == "cat" and "boxes" in fake.calls[-1]


def test_clear_removes_clicks_and_result_and_text_only_runs_pass_no_clicks(sample_image):
    fake = FakeSegmenter()
    app = build_app(fake)
    _set_upload(app.upload, _upload("a.png", _png(sample_image)))
    preview = bytes(app.image.value)
    _click(app, 10, 10)
    app.prompt.value = "cat"
    run(app)
    assert app.last is not None and app.download.value
    _message(app.clear_button, {"event": "click"})  # the Clear button's message
    assert app.points == [] and app.boxes == [] and app.last is None
    assert app.table.value == "" and app.download.value == ""
    assert bytes(app.image.value) == preview and app.prompt.value == "cat"
    run(app)
    assert set(fake.calls[-1]) == {"prompt", "box_threshold", "text_threshold"}


def test_clicks_with_a_segmenter_that_takes_none_say_so(sample_image):
    app = build_app(TextOnlySegmenter())
    _set_upload(app.upload, _upload("a.png", _png(sample_image)))
    _click(app, 10, 10)
    app.prompt.value = "cat"
    run(app)
    assert "takes no clicked points" in app.status.value and "Clear" in app.status.value
    clear(app)
    run(app)
    assert app.last is not None  # text only works with it


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
    _set_upload(app.upload, _upload("ok.png", _png(sample_image)) if upload == "PNG" else upload)
    app.prompt.value = prompt
    run(app)
    assert re.search(message, app.status.value)
    assert "Error" in app.status.value and "Traceback" not in app.status.value
    assert not app.run_button.disabled
    assert app.last is None and app.table.value == "" and app.download.value == ""


def test_a_new_upload_clears_the_old_result(app, sample_image):
    _set_upload(app.upload, _upload("one.png", _png(sample_image)))
    app.prompt.value = "cat"
    run(app)
    assert app.last is not None and app.download.value
    gray = Image.fromarray(np.full((20, 30), 128, np.uint8))
    _set_upload(app.upload, _upload("two.png", _png(gray)))
    upload_changed(app)
    assert app.table.value == "" and app.download.value == "" and app.last is None
    assert "two.png" in app.status.value and _shown(app).size == (30, 20)


def test_launch_returns_a_widget_with_the_controls(text_segmenter):
    import ipywidgets as w

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        root = launch(text_segmenter)
    # ipywidgets 7 (Colab's 7.7.1) warns of keywords it does not know, e.g. a slider's tooltip=
    assert not [str(x.message) for x in caught if "unrecognized arguments" in str(x.message)]
    assert isinstance(root, w.VBox)

    def walk(widget):
        yield widget
        for child in getattr(widget, "children", ()):
            yield from walk(child)

    kinds = {type(x).__name__ for x in walk(root)}
    assert {"FileUpload", "Text", "FloatSlider", "Button", "Image", "HTML", "Dropdown"} <= kinds
    upload = next(x for x in walk(root) if isinstance(x, w.FileUpload))
    assert upload.accept == ".jpg,.jpeg,.png,.webp"
    sliders = [x for x in walk(root) if isinstance(x, w.FloatSlider)]
    # the thresholds are explained (ipywidgets 8: tooltip; 7: description_tooltip)
    assert all(getattr(s, "tooltip", None) or s.description_tooltip for s in sliders)


# ---- every way in: the Image button, the File box (path or URL), Colab's Upload (any size) --


class FakeColabFiles:
    """google.colab.files as the kernel sees it: upload() returns what the user picked in
    Colab's picker ({name: bytes}); download(path) records what was handed to the browser."""

    def __init__(self):
        self.picked: dict[str, bytes] = {}
        self.downloads: list[tuple[str, bytes]] = []

    def upload(self):
        return dict(self.picked)

    def download(self, path):
        with open(path, "rb") as f:
            self.downloads.append((str(path), f.read()))


@pytest.fixture
def fake_colab(monkeypatch):
    """A Colab runtime for the UI: a `google.colab` module with files and output."""
    import importlib.util
    import sys
    import types

    files = FakeColabFiles()
    colab = types.ModuleType("google.colab")
    colab.files = types.ModuleType("google.colab.files")
    colab.files.upload, colab.files.download = files.upload, files.download
    colab.output = types.ModuleType("google.colab.output")
    colab.output.enable_custom_widget_manager = lambda: None
    if importlib.util.find_spec("google") is None:
        monkeypatch.setitem(sys.modules, "google", types.ModuleType("google"))
    for name, module in (("google.colab", colab), ("google.colab.files", colab.files),
                         ("google.colab.output", colab.output)):  # fmt: skip
        monkeypatch.setitem(sys.modules, name, module)
    return files


@pytest.fixture(scope="module")
def phone_photo(tmp_path_factory) -> tuple[str, bytes]:
    """A 4000×3000 JPEG of about 6 MB (noise, so that JPEG cannot make it small)."""
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (3000, 4000, 3), dtype=np.uint8))
    for quality in range(50, 96, 5):
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=quality)
        if len(buf.getvalue()) >= 6_000_000:
            break
    data = buf.getvalue()
    assert 6_000_000 <= len(data) < 7_500_000
    path = tmp_path_factory.mktemp("photos") / "phone.jpg"
    path.write_bytes(data)
    return str(path), data


@pytest.fixture
def served(tmp_path):
    """A folder served over http on 127.0.0.1 by a thread: (folder, base URL)."""
    import functools
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield tmp_path, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _open(app, text: str) -> None:
    """Type `text` in the File box and press Enter, as the browser sends it."""
    app.source.value = text
    _message(app.source, {"event": "submit"})


def _ran_at_full_size(app, fake: FakeSegmenter) -> None:
    """The picture is shown downscaled and segmented at full size."""
    assert app.picture.size == (4000, 3000)
    assert _shown(app).size == (587, 440) and len(bytes(app.image.value)) < 300_000
    assert "4000\u00d73000" in app.status.value and "shown at 587\u00d7440" in app.status.value
    app.prompt.value = "cat"
    run(app)
    assert fake.calls and app.last.image_size == (3000, 4000)  # the segmenter saw full size
    assert _shown(app).size == (587, 440)


def test_the_file_box_takes_a_local_file_and_a_url(served, sample_image):
    folder, url = served
    photo = folder / "street photo.png"
    photo.write_bytes(_png(sample_image))
    fake = FakeSegmenter()
    app = build_app(fake)
    _open(app, f"  '{photo}'  ")  # pasted with quotes and spaces
    assert app.picture is not None and app.picture.size == (320, 240)
    assert "street photo.png (320\u00d7240" in app.status.value and "ready" in app.status.value
    app.prompt.value = "cat"
    run(app)
    assert app.last is not None and "street photo.png: 1 object" in app.status.value
    assert app.download.value  # off Colab: the link
    # A URL, on a server on 127.0.0.1; the click on Open does the same as Enter.
    app.source.value = f"{url}/street%20photo.png"
    _message(app.open_button, {"event": "click"})
    assert app.picture is not None and app.name == "street photo.png"
    assert app.last is None and app.download.value == ""  # the old result is gone
    run(app)
    assert len(fake.calls) == 2 and "street photo.png: 1 object" in app.status.value


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "type a file path or an http(s) URL first"),
        ("/no/such/photo.jpg", "/no/such/photo.jpg: no such file"),
        ("/content/drive/MyDrive/photo.jpg", "Google Drive is not mounted"),
        ("ftp://example.com/a.jpg", "only http(s) URLs and file paths"),
        ("{url}/missing.jpg", "the server answered 404"),
        ("{url}/notes.txt", "notes.txt: not an image"),
        ("http://127.0.0.1:9/a.jpg", "cannot be downloaded"),
    ],
)
def test_the_file_box_says_what_was_wrong_in_one_line(served, sample_image, text, message):
    folder, url = served
    (folder / "notes.txt").write_text("hello, not pixels")
    fake = FakeSegmenter()
    app = build_app(fake)
    _open(app, "")
    _set_upload(app.upload, _upload("ok.png", _png(sample_image)))
    assert app.picture is not None
    _open(app, text.format(url=url))
    assert message in app.status.value and "Error" in app.status.value
    assert "\n" not in app.status.value and "Traceback" not in app.status.value
    assert app.picture is None and app.image.layout.display == "none"
    app.prompt.value = "cat"
    run(app)
    assert fake.calls == [] and message in app.status.value  # the old picture is gone


def test_a_url_download_has_a_size_cap_and_a_timeout(served):
    import http.server
    import threading

    from textseg.errors import ImageLoadError
    from textseg.images import read_source

    folder, url = served
    (folder / "big.bin").write_bytes(b"x" * 200_000)
    with pytest.raises(ImageLoadError, match=r"big.bin: 0.2 MB, over the 0 MB limit for URLs"):
        read_source(f"{url}/big.bin", max_bytes=100_000)

    class NoLength(http.server.BaseHTTPRequestHandler):  # no Content-Length: the cap on read
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            if self.path == "/slow":
                threading.Event().wait(3)
            self.wfile.write(b"y" * 200_000)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NoLength)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with pytest.raises(ImageLoadError, match="over the 0 MB limit for URLs"):
            read_source(f"{base}/stream", max_bytes=100_000)
        name, data = read_source(f"{base}/stream", max_bytes=300_000)
        assert name == "stream" and len(data) == 200_000
        with pytest.raises(ImageLoadError, match=r"/slow: no answer within 0.5 s"):
            read_source(f"{base}/slow", timeout=0.5)
    finally:
        server.shutdown()
        server.server_close()


def test_a_6mb_phone_photo_through_each_way_in_on_colab(fake_colab, phone_photo, served):
    path, data = phone_photo
    folder, url = served
    (folder / "phone.jpg").write_bytes(data)
    fake = FakeSegmenter()
    app = build_app(fake)
    assert app.on_colab and app.upload_limit == 700_000
    assert app.colab_upload.layout.display != "none" and app.picker in app.root.children
    assert "Image takes files up to 0.7 MB here" in app.status.value
    assert "Upload (any size)" in app.status.value

    # The Image button: the page's guard sends a marker; the status names the ways that work.
    _set_upload(app.upload, _upload("phone.jpg", TOO_LARGE_MARKER, "image/jpeg", size=len(data)))
    status = app.status.value
    assert f"phone.jpg is {len(data) / 1e6:.1f} MB, over the 0.7 MB upload limit here" in status
    assert "use Upload (any size), or its path or an http(s) URL in the File box" in status
    assert app.picture is None

    # Colab's Upload (any size): the picker's file becomes the picture.
    fake_colab.picked = {"phone.jpg": data}
    _message(app.colab_upload, {"event": "click"})
    _ran_at_full_size(app, fake)
    # On Colab the zip goes through files.download, not a data: link.
    assert app.download.value == "" and app.download_button.layout.display != "none"
    assert "Download masks + JSON (zip," in app.download_button.description
    _message(app.download_button, {"event": "click"})
    (sent, zipped), = fake_colab.downloads  # fmt: skip
    assert sent.endswith("phone_textseg.zip")
    with zipfile.ZipFile(io.BytesIO(zipped)) as zf:
        assert Image.open(io.BytesIO(zf.read("mask_00_cat.png"))).size == (4000, 3000)
        assert json.loads(zf.read("segmentation.json"))["source"] == "phone.jpg"

    # The File box: a path (a file in Colab's file browser) and a URL.
    for text in (path, f"{url}/phone.jpg"):
        _open(app, text)
        assert app.last is None and app.download_button.layout.display == "none"
        _ran_at_full_size(app, fake)

    # Nothing picked in Colab's picker: the picture stays, the status says what to do.
    fake_colab.picked = {}
    _message(app.colab_upload, {"event": "click"})
    assert "no file chosen" in app.status.value and app.picture is not None


def test_a_6mb_phone_photo_through_each_way_in_elsewhere(phone_photo, served):
    path, data = phone_photo
    folder, url = served
    (folder / "phone.jpg").write_bytes(data)
    fake = FakeSegmenter()
    app = build_app(fake)
    assert not app.on_colab and app.colab_upload.layout.display == "none"
    # No Output off Colab: the classic Notebook's widgetsnbextension 3.6.7+ cannot draw one,
    # and then draws nothing of the UI (the browser test on stack (b) shows it).
    import ipywidgets as w

    def tree(widget):
        yield widget
        for child in getattr(widget, "children", ()):
            yield from tree(child)

    assert app.picker is None and not [x for x in tree(app.root) if isinstance(x, w.Output)]
    assert "larger photos: its path or an http(s) URL in the File box" in app.status.value
    _set_upload(app.upload, _upload("phone.jpg", data, "image/jpeg"))  # under the 10 MB limit
    _ran_at_full_size(app, fake)
    assert _zip(app).namelist()  # off Colab: the data: link
    for text in (path, f"{url}/phone.jpg"):
        _open(app, text)
        _ran_at_full_size(app, fake)
    # Over the limit: the File box is the way.
    small = build_app(FakeSegmenter(), max_upload_bytes=1_000_000)
    _set_upload(small.upload, _upload("phone.jpg", TOO_LARGE_MARKER, size=len(data)))
    assert "use its path or an http(s) URL in the File box" in small.status.value


def test_enter_in_the_file_box_waits_for_its_last_keystrokes(tmp_path, sample_image):
    """Enter overtakes the box's held-back keystrokes in the browser (as in the prompt): the
    box is read once it has settled, with its final value."""
    import asyncio

    photo = tmp_path / "photo.png"
    photo.write_bytes(_png(sample_image))
    app = build_app(FakeSegmenter())

    async def typing_fast_then_enter():
        app.source.value = str(photo)[:1]  # "/"
        _message(app.source, {"event": "submit"})
        await asyncio.sleep(0.05)
        app.source.value = str(photo)
        assert app.picture is None
        await asyncio.sleep(0.5)

    asyncio.run(typing_fast_then_enter())
    assert app.picture is not None and app.name == "photo.png" and app.source_timer is None

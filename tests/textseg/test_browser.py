"""The upload-and-prompt UI in a real browser: a notebook served on 127.0.0.1, driven by
Debian's chromium + chromium-driver through selenium, with tiny local models.

The server is chosen by the ipywidgets major version (``FRONTENDS``): on ipywidgets 8, Voila
(which draws only 8's models); on 7 (Colab's 7.7.1), the classic Notebook server whose
widgetsnbextension draws 7's, with the notebook's own chrome hidden, so the page shows what Voila
shows. The interactions and assertions are the same on both.

Run it alone:  python -m pytest -m browser -v
Screenshots go to $TEXTSEG_SCREENSHOTS (e.g. docs/, for the README) or a temporary folder.
Widget updates arrive asynchronously, so every wait is a MutationObserver in the page that
resolves when a condition holds (no polling of text from Python).
"""

from __future__ import annotations

import base64
import contextlib
import inspect
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

import textseg

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO = Path(textseg.__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

if CHROMIUM is None or CHROMEDRIVER is None:
    pytest.skip(
        "browser test needs Debian's chromium and chromium-driver "
        "(apt-get install -y chromium chromium-driver)",
        allow_module_level=True,
    )
selenium = pytest.importorskip("selenium", reason="browser test needs selenium (the dev extra)")
_widgets = pytest.importorskip("ipywidgets")
WIDGETS_MAJOR = int(_widgets.__version__.split(".")[0])
if WIDGETS_MAJOR >= 8:
    pytest.importorskip("voila", reason="browser test needs voila (the dev extra)")
else:
    # Voila 0.5 draws widgets with JupyterLab 4's manager (jupyterlab_widgets 3), which knows
    # ipywidgets 8's models only ("@jupyter-widgets/controls ^1.5.0 is not registered"), and
    # Voila 0.4 needs nbclient < 0.8 (Colab has 0.10.4): ipywidgets 7 is drawn by the classic
    # Notebook's widgetsnbextension (Colab's stack pins notebook 6.5.7, widgetsnbextension 3.6).
    _notebook = pytest.importorskip(
        "notebook", reason="browser test on ipywidgets 7 needs the classic notebook (< 7)"
    )
    pytest.importorskip("widgetsnbextension", reason="browser test on ipywidgets 7 needs it")
    if int(_notebook.__version__.split(".")[0]) >= 7:
        pytest.skip(
            f"ipywidgets {_widgets.__version__} needs the classic notebook (< 7) to be drawn; "
            f"notebook {_notebook.__version__} is JupyterLab-based",
            allow_module_level=True,
        )

from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import TimeoutException  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402

NOTEBOOK = """\
import functools, sys, types
sys.path.insert(0, {repo!r})
from transformers.utils import logging
logging.disable_progress_bar()
from textseg import TextSegmenter
from textseg.ui import build_app
ts = TextSegmenter.from_pretrained(detector={detector!r}, segmenter={segmenter!r}, device="cpu")
# random-weight models: scores near 0.5, so any threshold finds all; keep 3 for the table
few = types.SimpleNamespace(segment=functools.partial(ts.segment, max_objects=3))
app = build_app(few)
app.box_threshold.value = app.text_threshold.value = 0.0
app.root
"""

WAIT_JS = """
const body = arguments[0], done = arguments[arguments.length - 1];
const check = new Function(body);
let observer = null, finished = false;
const attempt = () => {
  if (finished) return;
  let value = null;
  try { value = check(); } catch (e) { value = null; }
  if (value) { finished = true; if (observer) observer.disconnect(); done(value); }
};
observer = new MutationObserver(attempt);
observer.observe(document.documentElement,
                 {subtree: true, childList: true, characterData: true, attributes: true});
attempt();
"""

# ipywidgets 8 keeps FileUpload's <input type=file> out of the page and clicks it to open
# the file dialog: put it into the page instead, so send_keys can reach it.
CATCH_FILE_INPUT_JS = """
if (!window.__fileInputCaught) {
  window.__fileInputCaught = true;
  const click = HTMLInputElement.prototype.click;
  HTMLInputElement.prototype.click = function () {
    if (this.type !== 'file') return click.call(this);
    this.id = 'textseg-test-file'; this.style.display = 'block';
    if (!this.isConnected) document.body.appendChild(this);
  };
}
"""


# The classic notebook around the UI: its menus and toolbar, the cell's code and prompts, and
# the container's width limit; hidden, so the UI stands at the top of the page as in Voila.
HIDE_NOTEBOOK_CHROME_CSS = """
#header, .input, .prompt, .output_prompt, .out_prompt_overlay { display: none !important; }
#site { height: 100vh !important; }  /* the notebook sized it for the page with its header */
#notebook { padding-top: 0 !important; }
#notebook-container { width: auto !important; padding: 0 8px !important; box-shadow: none; }
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(driver, body: str, what: str, timeout: float = 60):
    """Wait until the JS function body `body` returns something truthy (re-checked on each
    DOM mutation); returns that value."""
    driver.set_script_timeout(timeout)
    try:
        start = time.monotonic()
        value = driver.execute_async_script(WAIT_JS, body)
        print(f"waited {time.monotonic() - start:.1f}s for {what}")
        return value
    except TimeoutException:
        status = driver.execute_script(
            "const e = document.querySelector('.textseg-status')"
            " || document.querySelector('.textseg-review-status'); return e && e.textContent"
        )
        raise AssertionError(
            f"timed out waiting for {what}; status: {status!r}{_page_errors(driver)}"
        ) from None


def _page_errors(driver) -> str:
    """The browser console's errors so far (e.g. a widget model the page could not make), as
    lines to add to a failure's message; '' when there are none."""
    errors = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    return "".join(f"\n  console: {message[:300]}" for message in errors[-8:])


def _wait_status(driver, pattern: str, timeout: float = 60, where: str = ".textseg-status") -> str:
    body = (
        f"const e = document.querySelector({json.dumps(where)});"
        f"return e && new RegExp({json.dumps(pattern)}).test(e.textContent) && e.textContent;"
    )
    return _wait(driver, body, f"status matching {pattern!r}", timeout)


def _image_src(driver) -> str:
    return driver.execute_script(
        "const i = document.querySelector('.textseg-image'); return i ? i.src || '' : '';"
    )


def _upload(driver, path: Path) -> None:
    driver.execute_script(CATCH_FILE_INPUT_JS)
    driver.find_element(By.CSS_SELECTOR, ".textseg-upload").click()
    field = driver.find_element(By.ID, "textseg-test-file")
    field.send_keys(str(path))


def _screenshot(driver, name: str) -> Path:
    """A JPEG of the page, at most 150 KB."""
    from PIL import Image

    folder = Path(os.environ.get("TEXTSEG_SCREENSHOTS") or tempfile.gettempdir())
    folder.mkdir(parents=True, exist_ok=True)
    shot = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")
    shot = shot.resize((shot.width * 3 // 4, shot.height * 3 // 4), Image.Resampling.LANCZOS)
    path = folder / name
    for quality in (80, 70, 60, 50, 40):
        shot.save(path, format="JPEG", quality=quality, optimize=True)
        if path.stat().st_size <= 150_000:
            break
    assert path.stat().st_size <= 150_000
    return path


def _voila(port: int, name: str) -> list[str]:
    return [sys.executable, "-m", "voila", name, "--no-browser", f"--port={port}",
            "--Voila.ip=127.0.0.1", "--show_tracebacks=True"]  # fmt: skip


def _classic_notebook(port: int, name: str) -> list[str]:
    return [sys.executable, "-m", "notebook", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
            "--NotebookApp.token=", "--NotebookApp.password=", "--allow-root"]  # fmt: skip


# Resolves with the enabled nbextensions once each has loaded (they load asynchronously, next to
# the kernel's start) and ipywidgets' has made the kernel's widget manager: before that, a cell's
# widgets would not be drawn.
NBEXTENSIONS_LOADED_JS = """
const done = arguments[arguments.length - 1], nb = Jupyter.notebook;
require(['base/js/utils'], utils => nb.config.loaded.then(() => {
  const on = nb.config.data.load_extensions || {};
  const wanted = Object.keys(on).filter(name => on[name]);
  const check = () => wanted.every(utils.is_loaded) && nb.kernel.widget_manager
    ? done(wanted) : setTimeout(check, 50);
  check();
}));
"""


def _run_all_cells(driver: WebDriver) -> None:
    """In the classic notebook: once the kernel is up and idle and the widgets' nbextensions are
    loaded, hide the chrome and run every cell."""
    _wait(driver, "return window.Jupyter && Jupyter.notebook && Jupyter.notebook.kernel &&"
          " Jupyter.notebook.kernel.is_connected() &&"
          " document.querySelector('#kernel_indicator_icon.kernel_idle_icon');",
          "the notebook's kernel", timeout=90)  # fmt: skip
    driver.set_script_timeout(60)
    try:
        loaded = driver.execute_async_script(NBEXTENSIONS_LOADED_JS)
    except TimeoutException:
        raise AssertionError(
            "the notebook's nbextensions did not load (is widgetsnbextension enabled? "
            "jupyter nbextension enable --py widgetsnbextension --sys-prefix)"
        ) from None
    assert "jupyter-js-widgets/extension" in loaded, f"ipywidgets' nbextension is off: {loaded}"
    driver.execute_script(
        "const style = document.createElement('style'); style.textContent = arguments[0];"
        "document.head.appendChild(style); Jupyter.notebook.execute_all_cells();",
        HIDE_NOTEBOOK_CHROME_CSS,
    )


@dataclass(frozen=True)
class Frontend:
    """A server that shows the UI notebook in the browser: its command line (given a port), the
    page to open, and what to do there before the UI draws itself."""

    name: str
    command: Callable[[int, str], list[str]]  # (port, notebook name)
    path: str  # the page of notebook {name}
    start: Callable[[WebDriver], None]


FRONTENDS = {  # by ipywidgets major version
    8: Frontend("voila", _voila, "", lambda driver: None),
    7: Frontend("notebook", _classic_notebook, "notebooks/{name}", _run_all_cells),
}


@pytest.fixture(scope="module")
def frontend() -> Frontend:
    """The server that draws this ipywidgets version's widgets (see FRONTENDS)."""
    return FRONTENDS[max(7, min(WIDGETS_MAJOR, 8))]


def _notebook(root: Path, name: str, source: str) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)])
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, root / name)


@contextlib.contextmanager
def _served(frontend: Frontend, root: Path, name: str, ready: str, where: str = ".textseg-status"):
    """`frontend`'s server on a free port serving root/name, and headless Chromium showing it
    once `ready` shows in the status (the element `where`)."""
    port = _free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    # the user's own Jupyter config stays out (the environment's, with its extensions, stays in)
    env.update(
        JUPYTER_RUNTIME_DIR=str(root / "runtime"),
        JUPYTER_CONFIG_DIR=str(root / "config"),
        HF_HUB_OFFLINE="1",
    )
    log_path = root / f"{frontend.name}.log"
    log = open(log_path, "wb")  # noqa: SIM115 - closed below
    server = subprocess.Popen(
        frontend.command(port, name), cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}/" + frontend.path.format(name=name)
    driver = None
    try:
        deadline = time.monotonic() + 60
        while True:
            try:  # the server listens: connect to the port
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{frontend.name} did not start: {log_path.read_text()[-2000:]}"
                    ) from None
                time.sleep(0.3)
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in (
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", "--window-size=1280,800", f"--user-data-dir={root / 'chrome'}",
        ):  # fmt: skip
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "SEVERE"})  # for _page_errors
        service = webdriver.ChromeService(executable_path=CHROMEDRIVER)
        driver = webdriver.Chrome(options=options, service=service)
        driver.set_page_load_timeout(90)
        driver.get(url)
        frontend.start(driver)
        _wait_status(driver, ready, timeout=90, where=where)
        yield driver, root
    finally:
        if driver is not None:
            driver.quit()
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


@pytest.fixture(scope="module")
def page(model_dirs, tmp_path_factory, frontend):
    """`frontend`'s server serving the UI notebook, and headless Chromium showing the UI (its
    status says "upload an image")."""
    root = tmp_path_factory.mktemp("browser")
    source = NOTEBOOK.format(
        repo=str(REPO), detector=str(model_dirs["detector"]), segmenter=str(model_dirs["segmenter"])
    )
    _notebook(root, "ui.ipynb", source)
    with _served(frontend, root, "ui.ipynb", "upload an image") as served:
        yield served


def test_the_ui_in_a_real_browser(page, sample_image, tmp_path):
    driver, _ = page
    # Before any upload: no picture at all (no broken-image icon).
    assert not driver.find_element(By.CSS_SELECTOR, ".textseg-image").is_displayed()

    # An error: a text file renamed .png shows a message, not a traceback.
    fake = tmp_path / "notes.png"
    fake.write_text("hello, not pixels")
    _upload(driver, fake)
    text = _wait_status(driver, "Error")
    assert "notes.png: not an image" in text and "Traceback" not in text

    # A large upload: refused in the page, and the kernel says so with the limit.
    huge = tmp_path / "huge.png"
    huge.write_bytes(os.urandom(10_500_000))
    _upload(driver, huge)
    text = _wait_status(driver, "upload limit")
    assert "huge.png is 10.5 MB, over the 10.0 MB upload limit" in text
    _screenshot(driver, "textseg_ui_large_upload.jpg")

    # Upload, preview, prompt, Enter.
    from textseg.testing import make_sample_image

    photo = make_sample_image(tmp_path / "street.jpg", height=960, width=1280)  # shown at half
    _upload(driver, photo)
    _wait_status(driver, "street.jpg .* ready")
    preview = _wait(driver, "const i = document.querySelector('.textseg-image');"
                    "return i && i.offsetWidth > 0 && i.src;", "the preview")  # fmt: skip
    prompt = driver.find_element(By.CSS_SELECTOR, ".textseg-prompt input")
    prompt.send_keys("cat, remote", Keys.ENTER)
    text = _wait_status(driver, "street.jpg: 3 objects")
    _wait(driver, f"return document.querySelector('.textseg-image').src !== {json.dumps(preview)};",
          "the overlay")  # fmt: skip

    # The overlay, the table and the download fit a 1280×800 window.
    geometry = driver.execute_script(
        "const r = s => document.querySelector(s).getBoundingClientRect();"
        "return {w: window.innerWidth, h: window.innerHeight, img: r('.textseg-image'),"
        " table: r('.textseg-table table'), link: r('.textseg-download a'),"
        " rows: document.querySelectorAll('.textseg-table tr').length - 1,"
        " swatches: document.querySelectorAll('.textseg-swatch').length};"
    )
    assert geometry["rows"] == 3 and geometry["swatches"] == 3
    labels = driver.execute_script(
        "return [...document.querySelectorAll('.textseg-table tr')].slice(1)"
        ".map(r => r.children[2].textContent);"
    )
    assert set(labels) <= {"cat", "remote"}, labels  # the whole prompt, not its first keys
    assert geometry["img"]["right"] <= geometry["w"] and geometry["img"]["height"] == 440
    for part in ("img", "table", "link"):
        assert geometry[part]["bottom"] <= geometry["h"], (part, geometry)
    _screenshot(driver, "textseg_ui_result.jpg")

    # The download holds the full-size files.
    href = driver.find_element(By.CSS_SELECTOR, ".textseg-download a").get_attribute("href")
    assert href.startswith("data:application/zip;base64,")
    with zipfile.ZipFile(io.BytesIO(base64.b64decode(href.split(",", 1)[1]))) as zf:
        data = json.loads(zf.read("segmentation.json"))
        masks = [n for n in zf.namelist() if n.startswith("mask_")]
    assert data["source"] == "street.jpg" and len(data["objects"]) == 3 and len(masks) == 3
    assert data["image"] == {"height": 960, "width": 1280}  # full size, not the display's
    from PIL import Image

    with zipfile.ZipFile(io.BytesIO(base64.b64decode(href.split(",", 1)[1]))) as zf:
        assert Image.open(io.BytesIO(zf.read(masks[0]))).size == (1280, 960)

    # Clear, then Run with the button, then Clear again.
    driver.find_element(By.CSS_SELECTOR, ".textseg-clear").click()
    _wait_status(driver, "cleared")
    assert not driver.find_elements(By.CSS_SELECTOR, ".textseg-download a")
    assert not driver.find_elements(By.CSS_SELECTOR, ".textseg-table table")
    driver.find_element(By.CSS_SELECTOR, ".textseg-run").click()
    _wait_status(driver, "street.jpg: 3 objects")
    assert driver.find_elements(By.CSS_SELECTOR, ".textseg-download a")
    driver.find_element(By.CSS_SELECTOR, ".textseg-clear").click()
    _wait_status(driver, "cleared")


def test_a_click_on_the_picture_is_a_point_prompt(page, sample_image, tmp_path):
    from textseg import TextSegmenter

    if "points" not in inspect.signature(TextSegmenter.segment).parameters:
        pytest.skip(
            "TextSegmenter.segment takes no points yet (issue 8's prompts API, branch i8, "
            "is not merged); the click wiring is tested through widget messages in test_ui.py"
        )
    driver, _ = page
    photo = tmp_path / "clicks.jpg"
    shutil.copy(sample_image, photo)
    _upload(driver, photo)
    _wait_status(driver, "clicks.jpg .* ready")
    driver.find_element(By.CSS_SELECTOR, ".textseg-prompt input").send_keys(Keys.CONTROL, "a")
    driver.find_element(By.CSS_SELECTOR, ".textseg-prompt input").send_keys(Keys.DELETE)
    image = driver.find_element(By.CSS_SELECTOR, ".textseg-image")
    ActionChains(driver).move_to_element_with_offset(image, -40, 20).click().perform()
    _wait_status(driver, "1 point, 0 boxes")
    driver.find_element(By.CSS_SELECTOR, ".textseg-run").click()
    text = _wait_status(driver, "clicks.jpg: .*object")
    assert "Error" not in text
    _screenshot(driver, "textseg_ui_point.jpg")


def test_the_file_box_opens_a_path_typed_in_the_browser(page, tmp_path):
    """Issue 16: a photo over the Image button's limit comes in through the File box: its
    path typed in the page and Enter (then a wrong path: one line, no picture)."""
    from PIL import Image

    from textseg.testing import make_sample_image

    driver, _ = page
    big = make_sample_image(tmp_path / "big photo.png", height=1500, width=2000)
    noise = Image.effect_noise((2000, 1500), 90).convert("RGB")  # so PNG stays large
    Image.blend(Image.open(big).convert("RGB"), noise, 0.5).save(big)
    assert big.stat().st_size > 1_000_000
    box = driver.find_element(By.CSS_SELECTOR, ".textseg-source input")
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(Keys.DELETE)
    box.send_keys(str(big), Keys.ENTER)
    text = _wait_status(driver, "big photo.png .* ready")
    assert "2000\u00d71500" in text and "shown at 587\u00d7440" in text
    shown = _wait(
        driver,
        "const i = document.querySelector('.textseg-image');"
        "return i && i.offsetWidth > 0 && i.naturalWidth > 0 && [i.naturalWidth, i.naturalHeight];",
        "the preview of the opened file",
    )
    assert shown == [587, 440]  # downscaled in Python: only the small JPEG reached the page
    prompt = driver.find_element(By.CSS_SELECTOR, ".textseg-prompt input")
    prompt.send_keys(Keys.CONTROL, "a")
    prompt.send_keys("cat", Keys.ENTER)
    _wait_status(driver, "big photo.png: .*object")
    href = driver.find_element(By.CSS_SELECTOR, ".textseg-download a").get_attribute("href")
    with zipfile.ZipFile(io.BytesIO(base64.b64decode(href.split(",", 1)[1]))) as zf:
        data = json.loads(zf.read("segmentation.json"))
    assert data["image"] == {"height": 1500, "width": 2000}  # segmented at full size
    # The Open button, with a path that does not exist.
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(str(tmp_path / "nope.jpg"))
    driver.find_element(By.CSS_SELECTOR, ".textseg-open").click()
    text = _wait_status(driver, "no such file")
    assert text.startswith("Error: ") and "nope.jpg" in text and "\n" not in text
    assert not driver.find_element(By.CSS_SELECTOR, ".textseg-image").is_displayed()


REVIEW_NOTEBOOK = """\
import sys
sys.path.insert(0, {repo!r})
from transformers.utils import logging
logging.disable_progress_bar()
from textseg import TextSegmenter
from textseg.review import build_review
ts = TextSegmenter.from_pretrained(detector={detector!r}, segmenter={segmenter!r}, device="cpu")
app = build_review({dataset!r}, segmenter=ts, user="browser")
app.root
"""


def _review_status(driver, pattern: str, timeout: float = 60) -> str:
    return _wait_status(driver, pattern, timeout, where=".textseg-review-status")


def test_the_review_in_a_real_browser(model_dirs, text_segmenter, tmp_path, frontend):
    """Accept, reject, relabel and add (a click through SAM 2) in the review, reload the
    page, see the decisions kept, export, and check the COCO file with pycocotools."""
    pytest.importorskip("pycocotools")
    from pycocotools.coco import COCO

    from textseg import export_reviewed, label_dataset
    from textseg.review_log import load_items
    from textseg.testing import make_sample_image

    photos = tmp_path / "photos"
    for i in range(2):
        make_sample_image(photos / f"img{i}.jpg", height=96, width=128, seed=i)
    dataset = tmp_path / "dataset"
    label_dataset(text_segmenter, photos, "car, person", out=dataset, progress=False,
                  model="tiny", box_threshold=0.0, text_threshold=0.0, max_objects=3)  # fmt: skip
    items = sorted(load_items(dataset).items, key=lambda it: (it.sureness, it.annotation))
    assert len(items) >= 3
    first, _, third = items[:3]
    source = REVIEW_NOTEBOOK.format(
        repo=str(REPO), detector=str(model_dirs["detector"]),
        segmenter=str(model_dirs["segmenter"]), dataset=str(dataset),
    )  # fmt: skip
    _notebook(tmp_path, "review.ipynb", source)
    with _served(
        frontend, tmp_path, "review.ipynb", "objects in .* images", ".textseg-review-status"
    ) as (
        driver,
        _,
    ):
        cards = driver.find_elements(By.CSS_SELECTOR, ".textseg-review-card")
        assert len(cards) == len(items)
        cards[0].find_element(By.CSS_SELECTOR, ".textseg-review-accept").click()
        _review_status(driver, f"#{items[0].annotation}: accepted")
        cards[1].find_element(By.CSS_SELECTOR, ".textseg-review-reject").click()
        _review_status(driver, f"#{items[1].annotation}: rejected")
        cards[2].find_element(By.CSS_SELECTOR, ".textseg-review-label input").send_keys(
            "truck", Keys.TAB
        )
        time.sleep(0.5)  # the typed value (sent on leaving the field) reaches the kernel
        cards[2].find_element(By.CSS_SELECTOR, ".textseg-review-relabel").click()
        _review_status(driver, "relabelled as truck")
        cards[0].find_element(By.CSS_SELECTOR, ".textseg-review-fix").click()
        _review_status(driver, "click a missed object")
        _wait(driver, "const i = document.querySelector('.textseg-review-detail');"
                      "return i && i.src && i.naturalWidth > 0;", "the image to fix")  # fmt: skip
        x, y, w, h = first.bbox
        image = driver.find_element(By.CSS_SELECTOR, ".textseg-review-detail")
        shown = image.size["width"] / 128  # the page's pixels per image pixel
        dx, dy = (x + w / 2 - 64) * shown, (y + h / 2 - 48) * shown  # from the centre
        ActionChains(driver).move_to_element_with_offset(
            image, round(dx), round(dy)
        ).click().perform()
        _review_status(driver, "1 point; choose the class")
        driver.find_element(By.CSS_SELECTOR, ".textseg-review-add-label input").send_keys(
            "dog", Keys.TAB
        )
        time.sleep(0.5)
        driver.find_element(By.CSS_SELECTOR, ".textseg-review-add").click()
        _review_status(driver, "added dog", timeout=120)
        driver.execute_script("window.scrollTo(0, 0);")
        _screenshot(driver, "textseg_review.jpg")

        driver.refresh()  # the review reopens from review.jsonl
        frontend.start(driver)
        _review_status(driver, "4 decided so far", timeout=90)
        texts = driver.execute_script(
            "return [...document.querySelectorAll('.textseg-review-text')].map(e => e.textContent);"
        )
        assert "accepted" in texts[0] and "rejected" in texts[1] and "truck" in texts[2], texts

    summary = export_reviewed(dataset)
    assert (summary.accepted, summary.rejected, summary.relabelled, summary.added) == (2, 1, 1, 1)
    coco = COCO(str(dataset / "reviewed" / "annotations.json"))
    names = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
    got = sorted(
        (coco.imgs[a["image_id"]]["file_name"], names[a["category_id"]])
        for a in coco.loadAnns(coco.getAnnIds())
    )
    assert got == sorted([(first.image, first.category), (third.image, "truck"),
                          (first.image, "dog")])  # fmt: skip
    for ann in coco.loadAnns(coco.getAnnIds()):
        assert coco.annToMask(ann).sum() == ann["area"] > 0

"""Both notebooks as a fresh Colab runs them: *Run all* with no cell edited, after
``scripts/set_repo_url.py`` wrote the repository's URL; then a disconnect and *Run all* again.

Colab is faked in the kernel (UI wiring, not the thing under test): a ``google.colab`` module
whose ``drive.mount`` is recorded (or refused, as a closed consent popup is), a ``pip`` that
records its command instead of installing, the packages hidden from import until that ``pip``
"installs" them, as on a fresh runtime, and, where a test says so, the runtime's GPU (none, or
one with a name).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# (a module-level skip, not an ImportError: a bare machine, e.g. the lent GPU one, still runs
# the rest of the suite)
nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")

pytestmark = [pytest.mark.notebook, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
URL = "https://github.com/someone/vitcifar-textseg"
SAM2_COMMIT = "2b90b9f5ceec907a1c18123530e92e794ad901a4"

FAKE_COLAB = """
import importlib.abc, importlib.util, subprocess, sys, types

HIDDEN = set({hidden!r})
PIP_CALLS, MOUNTS = [], []


class _NotInstalledYet(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HIDDEN:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None


sys.meta_path.insert(0, _NotInstalledYet())
_real_run = subprocess.run


def _fake_run(cmd, *args, **kwargs):
    if list(cmd[1:4]) == ["-m", "pip", "install"]:
        PIP_CALLS.append({{"cmd": list(cmd), "SAM2_BUILD_CUDA": (kwargs.get("env") or {{}}).get("SAM2_BUILD_CUDA")}})
        line = " ".join(cmd)
        if "facebookresearch/sam2" in line:
            HIDDEN.discard("sam2")
        if {url!r} in line:
            HIDDEN.difference_update({{"vitcifar", "textseg"}})
        return subprocess.CompletedProcess(cmd, 0)
    return _real_run(cmd, *args, **kwargs)


subprocess.run = _fake_run
if {kaggle!r}:
    import os
    os.environ["KAGGLE_KERNEL_RUN_TYPE"] = "Interactive"
colab = types.ModuleType("google.colab")
colab.drive = types.ModuleType("google.colab.drive")
colab._message = types.ModuleType("google.colab._message")


class MessageError(Exception):  # what google.colab raises when the browser side fails
    pass


colab._message.MessageError = MessageError


def _mount(path, **kw):
    MOUNTS.append(path)
    if {refuse_mount!r}:
        raise MessageError("Error: credential propagation was unsuccessful")


colab.drive.mount = _mount
_GPU = {gpu!r}  # None: the machine as it is; "": no GPU; else the GPU's name
if _GPU is not None:
    import torch

    torch.cuda.is_available = lambda: bool(_GPU)
    torch.cuda.get_device_name = lambda device=None: _GPU
colab.output = types.ModuleType("google.colab.output")
colab.output.enable_custom_widget_manager = lambda: None
if importlib.util.find_spec("google") is None:
    sys.modules["google"] = types.ModuleType("google")
if not {kaggle!r}:
    sys.modules.update({{"google.colab": colab, "google.colab.drive": colab.drive, "google.colab.output": colab.output}})
"""
REPORT = 'import json\nprint("COLAB-REPORT " + json.dumps({"pip": PIP_CALLS, "mounts": MOUNTS}))'


@pytest.fixture(scope="module")
def notebooks(tmp_path_factory) -> Path:
    """A copy of the repository's URL-carrying files, with the URL set by the real script."""
    root = tmp_path_factory.mktemp("fork")
    for name in (
        "pyproject.toml",
        "README.md",
        "notebooks/q1_vit.ipynb",
        "notebooks/q2_dino_sam.ipynb",
    ):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, root / name)
    script = REPO / "scripts" / "set_repo_url.py"
    done = subprocess.run(
        [sys.executable, str(script), URL, "--root", str(root)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    check = subprocess.run(
        [sys.executable, str(script), "--check", "--root", str(root)],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stderr
    assert f'Repository = "{URL}"' in (root / "pyproject.toml").read_text()
    readme = (root / "README.md").read_text()
    for name in ("q1_vit", "q2_dino_sam"):
        badge = f"https://colab.research.google.com/github/someone/vitcifar-textseg/blob/main/notebooks/{name}.ipynb"
        assert badge in readme
    assert f"pip install -q --no-deps git+{URL}" in readme  # the Kaggle line
    return root / "notebooks"


def run_on_fake_colab(
    nb, hidden: set[str], cwd: Path, *, kaggle: bool = False, refuse_mount: bool = False,
    gpu: str | None = None,
) -> tuple[dict, str]:  # fmt: skip
    from nbclient import NotebookClient

    code = FAKE_COLAB.format(
        hidden=sorted(hidden), url=URL, kaggle=kaggle, refuse_mount=refuse_mount, gpu=gpu
    )
    nb.cells.insert(0, nbformat.v4.new_code_cell(code))
    nb.cells.append(nbformat.v4.new_code_cell(REPORT))
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
    ).execute()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    report = json.loads(text.split("COLAB-REPORT ", 1)[1].splitlines()[0])
    return report, text


def with_parameters(nb, **params):
    idx = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    src = "\n".join(f"{k} = {v!r}" for k, v in params.items())
    nb.cells.insert(idx + 1, nbformat.v4.new_code_cell(src))
    return nb


def test_repository_files_carry_the_url_in_pyproject():
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "set_repo_url.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr


def test_q1_run_all_on_colab_saves_to_drive_and_run_all_again_continues(
    notebooks, image_folder, tmp_path
):
    drive = tmp_path / "MyDrive" / "vitcifar-runs"
    params = dict(
        DATA=str(image_folder),
        EPOCHS=2,
        STOP_AFTER=1,  # the session "dies" after one epoch
        BATCH_SIZE=16,
        SUBSET=32,
        VAL_SIZE=8,
        DEVICE="cpu",
        NUM_WORKERS=0,
        RUN_NAME="colab",
        DRIVE_FOLDER=str(drive),
        PROGRESS=False,
    )
    session = tmp_path / "content"  # the runtime's working folder: no checkout around it
    session.mkdir()
    for attempt, expect in ((1, "(new)"), (2, "(resumes)")):
        nb = with_parameters(nbformat.read(notebooks / "q1_vit.ipynb", as_version=4), **params)
        report, text = run_on_fake_colab(nb, {"vitcifar"}, session)
        assert [c["cmd"][-1] for c in report["pip"]] == [f"git+{URL}"]
        assert "--no-deps" in report["pip"][0]["cmd"]
        assert re.search(rf"installing vitcifar from {re.escape(URL)} \u2026 done in \d+ s", text)
        assert report["mounts"] == ["/content/drive"]
        assert expect in text
        history = [
            json.loads(x) for x in (drive / "colab" / "metrics.jsonl").read_text().splitlines()
        ]
        assert [r["epoch"] for r in history] == list(range(1, attempt + 1))
    assert not (session / "runs").exists()  # nothing in the session folder that a disconnect loses


def test_q2_set_up_on_colab_installs_metas_sam2_then_the_package(notebooks, tmp_path):
    nb = nbformat.read(notebooks / "q2_dino_sam.ipynb", as_version=4)
    nb.cells = [c for c in nb.cells if "setup" in c.metadata.get("tags", [])]
    assert len(nb.cells) == 1
    report, text = run_on_fake_colab(nb, {"sam2", "textseg"}, tmp_path)
    sam2, extras, package = report["pip"]
    assert extras["cmd"][-2:] == ["ipyevents>=2.0", "av>=14"]  # not on Colab, not in --no-deps
    assert sam2["cmd"][-1] == f"git+https://github.com/facebookresearch/sam2.git@{SAM2_COMMIT}"
    assert "--no-build-isolation" in sam2["cmd"] and sam2["SAM2_BUILD_CUDA"] == "0"
    assert package["cmd"][-2:] == ["--no-deps", f"git+{URL}"]
    assert "textseg from" in text
    steps = re.findall(r"^installing (.+) \u2026 done in \d+ s$", text, flags=re.MULTILINE)
    assert steps == [
        "Meta's SAM 2 (builds from source, about a minute)",
        "ipyevents and av",
        f"textseg from {URL}",
    ]  # one line per install step, with its time


def test_notebook_without_a_url_stops_with_a_clear_message_on_colab(tmp_path):
    nb = nbformat.read(REPO / "notebooks" / "q1_vit.ipynb", as_version=4)
    if '"https://github.com/OWNER/' not in "".join(c.source for c in nb.cells):
        pytest.skip("this fork's notebooks carry a real URL")
    nb.cells = [c for c in nb.cells if "setup" in c.metadata.get("tags", [])]
    from nbclient.exceptions import CellExecutionError

    with pytest.raises(CellExecutionError, match="set_repo_url.py URL"):
        run_on_fake_colab(nb, {"vitcifar"}, tmp_path)


def test_q1_set_up_on_kaggle_installs_from_the_url(notebooks, tmp_path):
    nb = nbformat.read(notebooks / "q1_vit.ipynb", as_version=4)
    nb.cells = [c for c in nb.cells if "setup" in c.metadata.get("tags", [])]
    report, text = run_on_fake_colab(nb, {"vitcifar"}, tmp_path, kaggle=True)
    assert [c["cmd"][-2:] for c in report["pip"]] == [["--no-deps", f"git+{URL}"]]
    assert "vitcifar from" in text and report["mounts"] == []


def _q1_cells(notebooks, tags: set[str], **params):
    """q1's cells with one of `tags`, and the parameters overridden."""
    nb = nbformat.read(notebooks / "q1_vit.ipynb", as_version=4)
    nb.cells = [c for c in nb.cells if tags & set(c.metadata.get("tags", []))]
    return with_parameters(nb, **params)


def test_q1_without_a_gpu_stops_in_its_first_cell_with_one_line(notebooks, tmp_path):
    from nbclient.exceptions import CellExecutionError

    nb = with_parameters(nbformat.read(notebooks / "q1_vit.ipynb", as_version=4), SUBSET=32)
    with pytest.raises(CellExecutionError):  # DEVICE = "auto", and the runtime has no GPU
        run_on_fake_colab(nb, {"vitcifar"}, tmp_path, gpu="")
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]  # fmt: skip
    assert len(errors) == 1 and errors[0].ename == "SystemExit"
    assert errors[0].evalue == "no GPU: Runtime \u2192 Change runtime type \u2192 T4 GPU"
    stopped = next(
        i for i, c in enumerate(nb.cells) if c.cell_type == "code" and errors[0] in c.outputs
    )
    first = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    assert stopped == first + 2  # the first cell after the parameters (and their overrides)
    assert not any(c.get("outputs") for c in nb.cells[stopped + 1 :])  # nothing slow ran
    assert "MOUNTS.append" not in "".join(o.get("text", "") for o in errors)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "data").exists()


def test_q1_with_a_gpu_prints_its_name_and_run_name_follows_the_preset(notebooks, tmp_path):
    drive = tmp_path / "MyDrive" / "vitcifar-runs"
    nb = _q1_cells(notebooks, {"setup", "parameters", "run-folder"}, PRESET="vit-fast",
                   DRIVE_FOLDER=str(drive))  # fmt: skip
    assert len(nb.cells) == 4
    report, text = run_on_fake_colab(nb, {"vitcifar"}, tmp_path, gpu="Tesla T4")
    assert "GPU: Tesla T4\n" in text
    assert f"run folder: {drive / 'vit-fast'} (new)" in text  # RUN_NAME = None: the preset's
    assert report["mounts"] == ["/content/drive"]


def test_q1_with_drive_refused_runs_in_the_session_folder_and_says_so_once(
    notebooks, image_folder, tmp_path
):
    drive = tmp_path / "MyDrive" / "vitcifar-runs"
    session = tmp_path / "content"
    session.mkdir()
    nb = with_parameters(
        nbformat.read(notebooks / "q1_vit.ipynb", as_version=4),
        DATA=str(image_folder), EPOCHS=1, BATCH_SIZE=16, SUBSET=32, VAL_SIZE=8, DEVICE="cpu",
        NUM_WORKERS=0, RUN_NAME="colab", DRIVE_FOLDER=str(drive), PROGRESS=False,
    )  # fmt: skip
    report, text = run_on_fake_colab(nb, {"vitcifar"}, session, refuse_mount=True, gpu="")
    assert report["mounts"] == ["/content/drive"]  # asked, and refused
    assert 'device: CPU (DEVICE = "cpu")' in text
    warnings = [line for line in text.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1
    assert "Google Drive was not mounted" in warnings[0]
    assert "credential propagation was unsuccessful" in warnings[0]
    assert f"({session / 'runs'})" in warnings[0] and "lost when the session ends" in warnings[0]
    assert "run folder: runs/colab (new)" in text
    # Run all went on: trained, evaluated, predicted, in the session folder; nothing on "Drive"
    assert (session / "runs" / "colab" / "metrics.json").is_file()
    assert "test accuracy" in text and text.count("  predicted ") == 8
    assert not drive.exists()


def test_q1_on_drive_trains_in_the_session_mirrors_to_drive_and_speaks_in_its_parameters(
    notebooks, image_folder, tmp_path
):
    from nbclient.exceptions import CellExecutionError

    from vitcifar.checkpoint import load_checkpoint

    drive = tmp_path / "MyDrive" / "vitcifar-runs"
    session = tmp_path / "content"
    session.mkdir()
    # MIRROR_MINUTES = 0: a copy after every epoch, but 1 kB of Drive churn pays for none after
    # the first: the rest waits for the end, and one warning says so in the notebook's terms
    params = dict(
        DATA=str(image_folder), EPOCHS=3, BATCH_SIZE=16, SUBSET=32, VAL_SIZE=8, DEVICE="cpu",
        NUM_WORKERS=0, RUN_NAME="colab", DRIVE_FOLDER=str(drive), PROGRESS=False,
        MIRROR_MINUTES=0, DRIVE_TRASH_GB=1e-6,
    )  # fmt: skip
    nb = with_parameters(nbformat.read(notebooks / "q1_vit.ipynb", as_version=4), **params)
    _, text = run_on_fake_colab(nb, {"vitcifar"}, session)
    # PROGRESS = False: still one line per epoch, with the run's ETA
    lines = re.findall(r"^epoch (\d)/3  loss .* img/s  ETA (.+)$", text, flags=re.MULTILINE)
    assert [n for n, _ in lines] == ["1", "2", "3"] and lines[-1][1] == "0s"
    assert re.fullmatch(r"\d+s|\d+m \d\ds", lines[0][1])
    assert (
        f"training in session-runs/colab, copied to {drive / 'colab'} every 0 min and at the end"
        in text
    )
    (budget,) = [line for line in text.splitlines() if "DRIVE_TRASH_GB" in line]
    assert "to replace at most 1000 bytes there over the run (DRIVE_TRASH_GB)" in budget
    assert "copied only at the end of this call" in budget and "raise DRIVE_TRASH_GB" in budget
    local, mirror = session / "session-runs" / "colab", drive / "colab"
    assert load_checkpoint(mirror / "last.pt")["epoch"] == 3  # the end of the call is mirrored
    ours, theirs = load_checkpoint(local / "last.pt"), load_checkpoint(mirror / "last.pt")
    assert all(torch_equal(ours["model"][k], theirs["model"][k]) for k in ours["model"])
    assert "optimizer" not in load_checkpoint(mirror / "best.pt")  # weights only on Drive
    assert (mirror / "metrics.json").is_file() and "test accuracy" in text  # evaluated from Drive
    # Run all again with another LR: refused in the notebook's terms, nothing overwritten
    before = (mirror / "last.pt").read_bytes()
    nb = with_parameters(
        nbformat.read(notebooks / "q1_vit.ipynb", as_version=4), **{**params, "LR": 0.1}
    )
    with pytest.raises(CellExecutionError):
        run_on_fake_colab(nb, {"vitcifar"}, session)
    (error,) = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
                if o.output_type == "error"]  # fmt: skip
    assert re.search(r"is a run with other settings \(.*lr: \S+ -> 0\.1", error.evalue)
    assert "set RESUME = True to continue it with its own settings" in error.evalue
    assert error.evalue.endswith("or choose another RUN_NAME") and "--" not in error.evalue
    assert (mirror / "last.pt").read_bytes() == before


def torch_equal(a, b) -> bool:
    import torch

    return torch.equal(a, b)

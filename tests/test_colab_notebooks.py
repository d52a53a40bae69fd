"""Both notebooks as a fresh Colab runs them: *Run all* with no cell edited, after
``scripts/set_repo_url.py`` wrote the repository's URL; then a disconnect and *Run all* again.

Colab is faked in the kernel (UI wiring, not the thing under test): a ``google.colab`` module
whose ``drive.mount`` is recorded, a ``pip`` that records its command instead of installing, and
the packages hidden from import until that ``pip`` "installs" them, as on a fresh runtime.
"""

from __future__ import annotations

import json
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
colab.drive.mount = lambda path, **kw: MOUNTS.append(path)
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


def run_on_fake_colab(nb, hidden: set[str], cwd: Path, *, kaggle: bool = False) -> tuple[dict, str]:
    from nbclient import NotebookClient

    code = FAKE_COLAB.format(hidden=sorted(hidden), url=URL, kaggle=kaggle)
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

"""The supported stacks: constraints/colab.txt follows a pasted `pip freeze`, the floors in
pyproject.toml and requirements.txt are the versions CI tests (Colab's), and a run on a stack
(STACK=colab or STACK=gpu-machine, set by .ci/run) really has that stack's versions."""

from __future__ import annotations

import importlib.metadata as md
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "colab_constraints.py"
FREEZE = """\
torch==2.11.0+cu128
torchvision==0.26.0+cu128
Jinja2==3.1.6
nvidia-cublas-cu12==12.8.4.1
cuda-toolkit==12.8.1
google-colab @ file:///colabtools/dist/google_colab-1.0.0.tar.gz
ipywidgets==7.7.1
"""


def pins(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            out[name] = version
    return out


def floors(lines: list[str]) -> dict[str, str]:
    out = {}
    for line in lines:
        match = re.match(r"^([A-Za-z0-9_.-]+)>=([0-9.]+)", line.strip().strip('",'))
        if match:
            out[re.sub(r"[-_.]+", "-", match.group(1)).lower()] = match.group(2)
    return out


def test_constraints_follow_a_pasted_freeze(tmp_path):
    out = tmp_path / "colab.txt"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "-", "--source", "a test", "--date", "2026-01-02", "--out", str(out)],
        input=FREEZE, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "4 pins (1 left out)" in done.stdout
    text = out.read_text()
    assert "Source: a test; date: 2026-01-02; Python 3.13." in text
    assert "google-colab" in text.splitlines()[4]  # named as left out, in the header
    assert pins(out) == {  # local labels dropped, names normalised, CUDA runtime left out
        "ipywidgets": "7.7.1", "jinja2": "3.1.6", "torch": "2.11.0", "torchvision": "0.26.0",
    }  # fmt: skip


def test_a_freeze_without_torch_or_a_bad_date_is_refused_and_nothing_is_written(tmp_path):
    out = tmp_path / "colab.txt"
    out.write_text("kept\n")
    for freeze, date, says in (
        ("numpy==2.1.3\n", "2026-01-02", "pins no torch"),
        (FREEZE, "yesterday", "YYYY-MM-DD"),
    ):
        done = subprocess.run(
            [sys.executable, str(SCRIPT), "-", "--source", "x", "--date", date, "--out", str(out)],
            input=freeze, capture_output=True, text=True,
        )  # fmt: skip
        assert done.returncode == 2 and says in done.stderr
    assert out.read_text() == "kept\n"


def test_floors_are_colabs_versions_the_lowest_ci_tests():
    colab = pins(REPO / "constraints" / "colab.txt")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = floors(project["dependencies"])
    assert floors((REPO / "requirements.txt").read_text().splitlines()) == declared
    pinned_by_colab = {name: v for name, v in declared.items() if name in colab}
    assert {"torch", "torchvision", "transformers", "ipywidgets", "numpy", "pillow"} <= set(
        pinned_by_colab
    )
    assert pinned_by_colab == {name: colab[name] for name in pinned_by_colab}
    assert (
        project["requires-python"] == ">=3.11"
    )  # 3.11 (newest stack), 3.12 (GPU machine), 3.13 (Colab)


STACK_VERSIONS = {  # what the README's table says each stack runs on
    "colab": ("3.13", REPO / "constraints" / "colab.txt"),
    "gpu-machine": ("3.12", REPO / "constraints" / "gpu-machine.txt"),
}


@pytest.mark.skipif(
    os.environ.get("STACK") not in STACK_VERSIONS,
    reason="not run on a named stack (STACK=colab|gpu-machine)",
)
def test_this_run_is_on_the_stack_it_names():
    python, constraints = STACK_VERSIONS[os.environ["STACK"]]
    assert sys.version.startswith(python), (
        f"stack {os.environ['STACK']} is Python {python}, not {sys.version}"
    )
    wanted = pins(constraints)
    for name in ("torch", "torchvision", "transformers", "ipywidgets", "numpy", "pillow"):
        if name not in wanted:
            continue
        try:
            have = md.version(name).split("+")[0]
        except md.PackageNotFoundError:
            continue  # the GPU machine has no ipywidgets
        assert have == wanted[name], f"{name} {have}, but the stack pins {wanted[name]}"

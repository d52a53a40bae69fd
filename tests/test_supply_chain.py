"""The installed sam2 is Meta's code: its files match Meta's hashes at commit 2b90b9f."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "verify_sam2.py"
HASHES = REPO / "scripts" / "sam2-meta-2b90b9f.sha256"
SHARED = REPO.parent / "shared" / "supply-chain" / "sam2-meta-2b90b9f.sha256"


def verify(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True)


def test_installed_sam2_matches_metas_files():
    done = verify()
    assert done.returncode == 0, done.stderr
    assert "all 34 files match" in done.stdout


def test_hash_list_is_the_shared_reference_where_that_is_at_hand():
    lines = [x for x in HASHES.read_text().splitlines() if x and not x.startswith("#")]
    assert len(lines) == 34 and all(len(x.split()[0]) == 64 for x in lines)
    if SHARED.exists():  # beside the checkout on developers' machines and in CI
        assert HASHES.read_text() == SHARED.read_text()


def test_any_changed_or_missing_file_is_named(tmp_path):
    site = Path(next(iter(importlib.util.find_spec("sam2").submodule_search_locations))).parent
    shutil.copytree(site / "sam2", tmp_path / "sam2")
    assert verify("--site", str(tmp_path)).returncode == 0
    predictor = tmp_path / "sam2" / "sam2_image_predictor.py"
    predictor.write_text(predictor.read_text() + "\nimport os  # an upload that differs\n")
    (tmp_path / "sam2" / "build_sam.py").unlink()
    done = verify("--site", str(tmp_path))
    assert done.returncode == 1
    assert "differs from Meta's: sam2/sam2_image_predictor.py" in done.stderr
    assert "missing: sam2/build_sam.py" in done.stderr
    assert "2 of 34 files are not Meta's" in done.stderr

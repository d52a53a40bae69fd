"""Write the repository's URL into every place that needs it, from one source.

    python scripts/set_repo_url.py https://github.com/you/vitcifar-textseg   # set it everywhere
    python scripts/set_repo_url.py                                          # re-sync from pyproject
    python scripts/set_repo_url.py --check                                  # exit 1 if out of sync

The source is ``[project.urls] Repository`` in pyproject.toml. From it, this writes
``REPO_URL = "..."`` in the set-up cells of notebooks/q1_vit.ipynb and notebooks/q2_dino_sam.ipynb
(Colab and Kaggle install the package from there), and in README.md every mention of the old URL
and the "Open in Colab" badge links (GitHub URLs only). After a fork: run it once with the fork's URL and commit; Colab's *Run all*
then needs no edited cell. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ("notebooks/q1_vit.ipynb", "notebooks/q2_dino_sam.ipynb")
PYPROJECT_LINE = re.compile(r'^(Repository\s*=\s*)"[^"]*"', re.MULTILINE)
NOTEBOOK_LINE = re.compile(r'^(REPO_URL\s*=\s*)"[^"]*"', re.MULTILINE)
BADGE = re.compile(r"https://colab\.research\.google\.com/github/[^/\s)]+/[^/\s)]+/blob/")
GITHUB = re.compile(r"^https://github\.com/([A-Za-z0-9_.-]+)/([A-Za-z0-9_.-]+?)(?:\.git)?/?$")


def read_url(root: Path = ROOT) -> str:
    """The URL in pyproject.toml's ``[project.urls] Repository``."""
    m = PYPROJECT_LINE.search((root / "pyproject.toml").read_text())
    if m is None:
        raise SystemExit("set_repo_url: pyproject.toml has no [project.urls] Repository line")
    return m.group(0).split('"')[1]


def _notebook_with_url(path: Path, url: str) -> str:
    nb = json.loads(path.read_text())
    found = False
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        src = "".join(cell["source"])
        new, n = NOTEBOOK_LINE.subn(lambda m: f'{m.group(1)}"{url}"', src)
        if n:
            found = True
            cell["source"] = new.splitlines(keepends=True)
    if not found:
        raise SystemExit(f"set_repo_url: {path} has no REPO_URL = line in a code cell")
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


def _readme_with_url(text: str, url: str) -> str:
    m = GITHUB.match(url)
    if m is None:  # badges open notebooks on GitHub only
        return text
    return BADGE.sub(
        f"https://colab.research.google.com/github/{m.group(1)}/{m.group(2)}/blob/", text
    )


def planned(root: Path, url: str) -> dict[Path, str]:
    """{file: its new content} for every file that carries the URL."""
    files = {}
    pyproject = root / "pyproject.toml"
    files[pyproject] = PYPROJECT_LINE.sub(lambda m: f'{m.group(1)}"{url}"', pyproject.read_text())
    for name in NOTEBOOKS:
        files[root / name] = _notebook_with_url(root / name, url)
    readme = root / "README.md"
    text = readme.read_text().replace(read_url(root), url)  # e.g. the Kaggle install line
    files[readme] = _readme_with_url(text, url)
    return files


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("url", nargs="?", help="e.g. https://github.com/you/vitcifar-textseg")
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 if out of sync")
    p.add_argument("--root", type=Path, default=ROOT, help="repository root (default: this one)")
    args = p.parse_args(argv)
    url = args.url or read_url(args.root)
    if not re.match(r"^https://\S+$", url):
        p.error(f"{url!r} is not an https URL (e.g. https://github.com/you/vitcifar-textseg)")
    url = url.rstrip("/").removesuffix(".git")
    changed = [f for f, text in planned(args.root, url).items() if f.read_text() != text]
    if args.check:
        for f in changed:
            print(f"set_repo_url: {f} does not carry {url}", file=sys.stderr)
        return 1 if changed else 0
    for f, text in planned(args.root, url).items():
        if f in changed:
            f.write_text(text)
    print(f"set_repo_url: {url} in " + (", ".join(str(f) for f in changed) or "every file already"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Check the installed ``sam2`` against Meta's files at commit 2b90b9f (sha256 per file).

    python scripts/verify_sam2.py                 # the sam2 that this Python imports
    python scripts/verify_sam2.py --site DIR      # the sam2 package inside DIR (a site-packages)

PyPI's ``sam2`` is packaged by a third party, not by Meta: this proves that what got installed is
Meta's code. Exit status 0 when every listed file matches, 1 naming each file that differs or is
missing, 2 when there is no sam2 to check. Standard library only (it runs before anything else).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import sys
from pathlib import Path

HASHES = Path(__file__).with_name("sam2-meta-2b90b9f.sha256")


def expected_hashes(path: Path = HASHES) -> dict[str, str]:
    """{path relative to site-packages: sha256} from a ``sha256sum``-style file ('#' comments)."""
    out = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            digest, name = line.split(maxsplit=1)
            out[name.strip()] = digest
    return out


def differences(site: Path, hashes: dict[str, str]) -> list[str]:
    """One line per listed file under ``site`` that is missing or whose sha256 differs."""
    bad = []
    for name, digest in sorted(hashes.items()):
        f = site / name
        if not f.is_file():
            bad.append(f"missing: {name}")
        elif hashlib.sha256(f.read_bytes()).hexdigest() != digest:
            bad.append(f"differs from Meta's: {name}")
    return bad


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--site", type=Path, help="folder that holds the sam2 package")
    p.add_argument("--hashes", type=Path, default=HASHES, help="default: %(default)s")
    args = p.parse_args(argv)
    if args.site is None:
        spec = importlib.util.find_spec("sam2")
        if spec is None or not spec.submodule_search_locations:
            print("verify_sam2: no sam2 is installed for this Python", file=sys.stderr)
            return 2
        args.site = Path(next(iter(spec.submodule_search_locations))).parent
    hashes = expected_hashes(args.hashes)
    bad = differences(args.site, hashes)
    for line in bad:
        print(f"verify_sam2: {line} ({args.site})", file=sys.stderr)
    if bad:
        print(
            f"verify_sam2: {len(bad)} of {len(hashes)} files are not Meta's SAM 2 at commit 2b90b9f; "
            "do not use this install (reinstall with scripts/setup.sh)",
            file=sys.stderr,
        )
        return 1
    print(f"verify_sam2: all {len(hashes)} files match Meta's SAM 2 at commit 2b90b9f")
    return 0


if __name__ == "__main__":
    sys.exit(main())

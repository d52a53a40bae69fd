"""Rewrite constraints/colab.txt from a pasted `pip freeze` of Colab's runtime.

    python scripts/colab_constraints.py FREEZE.txt --source "googlecolab/backend-info pip-freeze.gpu.txt" --date 2026-08-19
    pip freeze | python scripts/colab_constraints.py - --source "a Colab T4 session" --date "$(date -I)"

Every pinned line is kept (pip applies a constraint only to what it installs), so the file
covers whatever the notebooks and tests import. Local version labels are dropped (torch
2.11.0+cu128 becomes torch==2.11.0, the build PyPI serves); lines that name a URL or a path
(`pkg @ git+https://...`, `pkg @ file:///...`) are left out, as pip cannot constrain them, and
so are CUDA's runtime libraries (nvidia-*, cuda-*): Colab's torch is the cu128 build, PyPI's
another, and each asks for its own; neither changes what runs on a CPU.
`--python` records the runtime's Python in the header (Colab: 3.13).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

_CUDA_RUNTIME = re.compile(r"^(nvidia|cuda)-")
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;#]+)")


def constraints(freeze: str) -> tuple[list[str], list[str]]:
    """(sorted `name==version` lines, names installed from a URL or path) from pip-freeze
    text, CUDA's runtime libraries left out."""
    pins: dict[str, str] = {}
    left_out: list[str] = []
    for raw in freeze.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", "-")):
            continue
        match = _PIN.match(line)
        if match is None:
            left_out.append(line.split()[0])
            continue
        name = re.sub(r"[-_.]+", "-", match.group(1)).lower()
        if _CUDA_RUNTIME.match(name):
            continue
        pins[name] = match.group(3).split("+", 1)[0]
    return [f"{name}=={version}" for name, version in sorted(pins.items())], left_out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("freeze", help="a file of `pip freeze` output, or - for standard input")
    parser.add_argument("--source", required=True, help="where the freeze came from")
    parser.add_argument("--date", required=True, help="the freeze's date, YYYY-MM-DD")
    parser.add_argument("--python", default="3.13", help="the runtime's Python (default 3.13)")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parents[1] / "constraints" / "colab.txt"
    )
    args = parser.parse_args(argv)
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", args.date):
        parser.error(f"--date must be YYYY-MM-DD, got {args.date!r}")
    text = sys.stdin.read() if args.freeze == "-" else Path(args.freeze).read_text()
    pins, left_out = constraints(text)
    if not any(p.startswith("torch==") for p in pins):
        parser.error("the freeze pins no torch: is it a `pip freeze` of Colab's runtime?")
    header = [
        "# Colab's GPU runtime, as pip constraints (pip install -c constraints/colab.txt ...).",
        f"# Source: {args.source}; date: {args.date}; Python {args.python}.",
        "# Written by scripts/colab_constraints.py: rerun it on a new `pip freeze` to follow Colab.",
        "# Left out: CUDA's runtime libraries (nvidia-*, cuda-*: PyPI's torch build asks for its own),",
        f"# and what was installed from a URL or path: {', '.join(left_out) or 'none'}.",
    ]
    tmp = args.out.with_suffix(".tmp")
    tmp.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text("\n".join(header + pins) + "\n")
    tmp.replace(args.out)
    print(f"wrote {args.out}: {len(pins)} pins ({len(left_out)} left out)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

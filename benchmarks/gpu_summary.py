"""The summary table of benchmarks/gpu_check.sh: every step's outcome and every figure.

    python benchmarks/gpu_summary.py LOGS      # reads LOGS/steps.tsv and LOGS/*.json

steps.tsv holds one line per step, "name<TAB>exit status<TAB>seconds<TAB>verdict"; a step's
figures are in LOGS/<name>.json (written by the benchmark's --json) and its pytest counts are
read from LOGS/<name>.log (pytest -v lines, so a step stopped at its cap still counts what ran).
Writes LOGS/summary.md and prints it. Standard library only.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

OUTCOMES = ("PASSED", "FAILED", "ERROR", "SKIPPED", "XFAIL", "XPASS")


def test_counts(log: Path) -> str:
    """'412 passed, 1 failed, ...' from a pytest -v log (what ran, even if stopped), or ''."""
    if not log.is_file():
        return ""
    text = log.read_text(errors="replace")
    # "tests/x.py::test_a PASSED" (pytest -v) or "[gw0] [ 5%] PASSED tests/x.py::test_a" (xdist)
    counts = {o: len(re.findall(rf"(?:::\S+ {o}\b|\] {o} \S+::)", text)) for o in OUTCOMES}
    collected = re.search(r"collected (\d+) items?(?: / \d+ deselected / (\d+) selected)?", text)
    listed = re.search(r"^(\d+)(?:/\d+)? tests? collected", text, re.M)  # --collect-only -q
    parts = [f"{n} {o.lower()}" for o, n in counts.items() if n]
    if collected:
        picked = f"{collected.group(2)} selected of " if collected.group(2) else ""
        parts.insert(0, f"{picked}{collected.group(1)} collected")
    elif listed:
        parts.insert(0, f"{listed.group(1)} collected")
    return ", ".join(parts)


def figures(data: dict) -> list[tuple[str, str]]:
    """(figure, value) rows of one benchmark's JSON."""
    kind = data.get("benchmark")
    if kind == "step":
        return [
            ("images/s ours (deit-tiny)", f"{data['images_per_s_ours']:.0f}"),
            ("images/s timm", f"{data['images_per_s_timm']:.0f}"),
            ("ours / timm", f"{data['ours_over_timm']:.2f}"),
        ]
    if kind == "time_to_accuracy":
        per_epoch = data.get("seconds_per_epoch") or []
        rest = per_epoch[1:] or per_epoch  # the first epoch pays the warm-up (and compile)
        preset = data["preset"]
        return [
            (f"{preset}: s/epoch (first; mean of the rest)",
             f"{per_epoch[0]:.1f}; {sum(rest) / len(rest):.2f}" if per_epoch else "?"),
            (f"{preset}: test accuracy after {data['epochs']} epochs (best.pt / last.pt)",
             f"{data['test_acc_best']:.4f} / {data['test_acc_last']:.4f}"),
            (f"{preset}: training minutes", f"{data['train_minutes']:.2f}"),
        ]  # fmt: skip
    if kind == "textseg":
        s = data["s_per_image"]
        return [
            (f"textseg s/image, plain composition (SAM 2 {data['sam2_dtype']})",
             f"{s['plain']:.3f}"),
            ("textseg s/image, first prompt", f"{s['first']:.3f}"),
            ("textseg s/image, second prompt", f"{s['second']:.3f}"),
            ("textseg first / plain; second / first",
             f"{data['first_over_plain']:.2f}; {data['second_over_first']:.2f}"),
        ]  # fmt: skip
    return [(str(kind), json.dumps(data)[:80])]


def summary(logs: Path) -> str:
    lines = ["| step | exit | seconds | outcome |", "|---|---|---|---|"]
    steps = logs / "steps.tsv"
    names = []
    for row in steps.read_text().splitlines() if steps.is_file() else []:
        name, rc, seconds, verdict = (row.split("\t") + ["", "", ""])[:4]
        names.append(name)
        counts = test_counts(logs / f"{name}.log") if name.startswith("tests") else ""
        lines.append(f"| {name} | {rc} | {seconds} | {verdict}{'; ' + counts if counts else ''} |")
    lines += ["", "| figure | value |", "|---|---|"]
    found = 0
    for name in names:
        path = logs / f"{name}.json"
        if path.is_file():
            try:
                rows = figures(json.loads(path.read_text()))
            except (ValueError, KeyError, TypeError, IndexError) as err:
                rows = [(name, f"unreadable figures in {path.name}: {err}")]
            lines += [f"| {k} | {v} |" for k, v in rows]
            found += 1
    if not found:
        lines.append("| (no figures: every benchmark was skipped or failed) | |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    logs = Path(argv[0])
    text = summary(logs)
    (logs / "summary.md").write_text(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

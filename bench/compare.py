"""Two commits side by side in one run: the warm-federation figures of `make bench` — the warm
1,000-row PSI p50 and jobs per minute (bench/fanout.py) and the 1M RR22 warm ÷ bare-library
ratio (bench/psi_node.py) — measured for each commit in turn, round after round (before, after,
before, after …), so that both meet the same machine load. Each commit runs from a worktree of
its own (git worktree, under var/compare/), with its own code on PYTHONPATH; the results stay in
each worktree's bench/results/. No time is asserted: the medians and every round are printed.

  .venv/bin/python bench/compare.py ac8b8b1            # that commit vs. the work tree's HEAD
  .venv/bin/python bench/compare.py ac8b8b1 HEAD --rounds 3 --jobs 30
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
console = Console(width=None if sys.stdout.isatty() else 140)


def worktree(ref: str, base: Path) -> Path:
    """A worktree of `ref` (made once, reused), sharing this checkout's .venv."""
    sha = subprocess.run(
        ["git", "rev-parse", "--short", ref], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.strip()
    tree = base / sha
    if not tree.exists():
        subprocess.run(["git", "worktree", "add", "-q", "--detach", str(tree), sha], cwd=ROOT,
                       check=True)  # fmt: skip
        (tree / ".venv").symlink_to(ROOT / ".venv")
    return tree


def newest(tree: Path, prefix: str, before: set[Path]) -> dict:
    """The result file this run wrote in `tree` (the one that was not there before)."""
    made = sorted(set((tree / "bench" / "results").glob(f"{prefix}-*.json")) - before)
    if not made:
        raise RuntimeError(f"{tree}: bench/{prefix}.py wrote no result")
    return json.loads(made[-1].read_text())


def run(tree: Path, script: str, args: list[str], log: Path) -> dict:
    prefix = script.removesuffix(".py")
    before = set((tree / "bench" / "results").glob(f"{prefix}-*.json"))
    env = {**os.environ, "PYTHONPATH": str(tree)}
    with open(log, "a") as out:
        done = subprocess.run(
            [str(ROOT / ".venv/bin/python"), f"bench/{script}", *args],
            cwd=tree, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"{tree}: bench/{script} failed (exit {done.returncode}); see {log}")
    return newest(tree, prefix, before)


def measure(tree: Path, jobs: int, rows: int, log: Path) -> dict[str, float | None]:
    fan = run(tree, "fanout.py", ["--modes", "warm", "--jobs", str(jobs)], log)
    warm = fan["summary"]["warm"]
    node = run(tree, "psi_node.py", ["--rows", str(rows), "--protocols", "RR22",
                                      "--stack-modes", "warm"], log)  # fmt: skip
    ratio = next((r.get("warm_ratio") for r in node.get("runs", []) if r["rows"] == rows), None)
    return {
        "p50_s": warm["p50"],
        "jobs_per_min": warm["jobs_per_min"],
        "right": warm["correct"] / max(1, warm["jobs"]),
        "ratio": ratio,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench/compare.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("before", help="the commit measured first in each round")
    ap.add_argument("after", nargs="?", default="HEAD", help="the other commit (default: HEAD)")
    ap.add_argument("--rounds", type=int, default=2, help="rounds of both (default: 2)")
    ap.add_argument("--jobs", type=int, default=20, help="warm jobs per fanout run (default: 20)")
    ap.add_argument("--rows", type=int, default=1_000_000, help="psi_node rows (default: 1M)")
    args = ap.parse_args(argv)
    base = ROOT / "var" / "compare"
    base.mkdir(parents=True, exist_ok=True)
    trees = {name: worktree(ref, base) for name, ref in (("before", args.before),
                                                          ("after", args.after))}  # fmt: skip
    log = base / "compare.log"
    console.print(f"trees: {trees}; every benchmark's output: {log}")
    rounds: dict[str, list[dict]] = {"before": [], "after": []}
    for i in range(args.rounds):
        for name, tree in trees.items():
            got = measure(tree, args.jobs, args.rows, log)
            rounds[name].append(got)
            console.print(f"round {i + 1} {name} ({tree.name}): {got}")
    table = Table(title=f"{args.before} (before) vs. {args.after} (after), "
                        f"{args.rounds} rounds, medians (each round)")  # fmt: skip
    for col in ("measure", "before", "after", "after ÷ before"):
        table.add_column(col, justify="left" if col == "measure" else "right")
    for key, label, fmt in (
        ("p50_s", "warm 1,000-row PSI, submit → SUCCEEDED p50 (s)", ".3f"),
        ("jobs_per_min", "back-to-back warm jobs per minute", ".0f"),
        ("ratio", f"{args.rows:,}-row RR22 warm ÷ bare library", ".2f"),
        ("right", "jobs right (share)", ".2f"),
    ):
        cells = []
        medians = []
        for name in ("before", "after"):
            vals = [r[key] for r in rounds[name] if r[key] is not None]
            med = statistics.median(vals) if vals else None
            medians.append(med)
            each = ", ".join(format(v, fmt) for v in vals)
            cells.append(f"{format(med, fmt)} ({each})" if med is not None else "—")
        b, a = medians
        table.add_row(label, *cells, f"{a / b:.2f}" if a is not None and b else "—")
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The warm-federation goals (issue 11) in one table, from the latest results of
bench/psi_node.py and bench/fanout.py (or the files named): each measure, its goal, and where
the number comes from. `make bench` runs both benchmarks, then this."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

RESULTS = Path(__file__).resolve().parent / "results"
console = Console(width=None if sys.stdout.isatty() else 160)


def latest(prefix: str, pred=lambda d: True) -> tuple[Path, dict] | None:
    """The newest bench/results/<prefix>-*.json whose content satisfies `pred`."""
    for path in sorted(RESULTS.glob(f"{prefix}-*.json"), reverse=True):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if pred(data):
            return path, data
    return None


def _run(node: dict, rows: int, protocol: str) -> dict | None:
    return next(
        (r for r in node.get("runs", []) if r["rows"] == rows and r["protocol"] == protocol), None
    )


def _has(rows: int, protocol: str):
    return lambda d: (r := _run(d, rows, protocol)) is not None and r.get("warm_ratio")


def _party_mb(run: dict, key: str) -> float | None:
    """The larger party's peak at the moment of its RSS peak: total (RSS) or PSS."""
    vals = [
        ((p.get("memory_job") or {}).get("at_peak") or {}).get(key)
        for p in (run.get("warm") or {}).get("parties", {}).values()
    ]
    vals = [v for v in vals if v is not None]
    return max(vals) if vals else None


def _f(v: Any, fmt: str) -> str:
    return "—" if v is None else format(v, fmt)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench/goals.py", description=__doc__)
    ap.add_argument("--node", type=Path, help="a psi_node-*.json (default: the newest with 1M)")
    ap.add_argument("--fanout", type=Path, help="a fanout-*.json (default: the newest warm one)")
    ap.add_argument("--scale", type=Path, help="a psi_node-*.json with 10M rows (default: newest)")
    args = ap.parse_args(argv)

    def load(path: Path | None, prefix: str, pred) -> tuple[Path, dict] | None:
        return (path, json.loads(path.read_text())) if path else latest(prefix, pred)

    node = load(args.node, "psi_node", _has(1_000_000, "RR22"))
    fan = load(args.fanout, "fanout", lambda d: "warm" in d.get("summary", {}))
    big = load(args.scale, "psi_node", _has(10_000_000, "RR22"))
    t = Table(title="warm federation goals (issue 11): measured ÷ goal", title_justify="left")
    for c in ("measure", "measured", "goal", "from"):
        t.add_column(c, justify="left" if c in ("measure", "from") else "right")
    if fan:
        w = fan[1]["summary"]["warm"]
        src = f"{fan[0].name} ({w['jobs']} jobs, {w['correct']} right)"
        t.add_row(
            "1,000-row RR22, warm, submit → SUCCEEDED p50", _f(w["p50"], ".2f") + " s", "≤ 3 s", src
        )
        t.add_row("back-to-back jobs per minute", _f(w["jobs_per_min"], ".0f"), "≥ 20", src)
        t.add_row("degradation (p50 last k ÷ first k)", _f(w["degradation"], ".2f"), "≤ 1.1", src)
    for proto, goal in (("RR22", "≤ 1.3×"), ("ECDH", "≤ 1.1×")):
        run = _run(node[1], 1_000_000, proto) if node else None
        ratio = run.get("warm_ratio") if run else None
        wall = ((run or {}).get("warm") or {}).get("wall_s")
        floor = ((run or {}).get("floor") or {}).get("wall_s")
        t.add_row(
            f"1M×1M {proto} warm ÷ bare library",
            f"{_f(ratio, '.2f')}× ({_f(wall, '.1f')} s ÷ {_f(floor, '.1f')} s)",
            goal,
            node[0].name if node else "no run",
        )
    run = _run(node[1], 1_000_000, "RR22") if node else None
    if run:
        rss, pss = _party_mb(run, "total_mb"), _party_mb(run, "pss_mb")
        t.add_row(
            "whole party at 1M RR22 warm: RSS sum (PSS)",
            f"{_f(rss, ',.0f')} MB ({_f(pss, ',.0f')} MB)",
            "≤ 1,536 MB",
            node[0].name,
        )
    run = _run(big[1], 10_000_000, "RR22") if big else None
    if run:
        w = run.get("warm") or {}
        t.add_row(
            "10M×10M RR22 warm: time, ratio, RSS (PSS)",
            f"{_f(w.get('wall_s'), '.0f')} s, {_f(run.get('warm_ratio'), '.2f')}×, "
            f"{_f(_party_mb(run, 'total_mb'), ',.0f')} MB ({_f(_party_mb(run, 'pss_mb'), ',.0f')} MB)",
            "runs",
            big[0].name,
        )
    else:
        t.add_row("10M×10M RR22", "not run", "runs", "make bench BENCH_ARGS='--rows 10000000 …'")
    console.print(t)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The warm-federation goals (issue 11) in one table, from the latest results of
bench/psi_node.py and bench/fanout.py (or the files named): each measure, its goal, and where
the number comes from. `make bench` runs both benchmarks, then this."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

RESULTS = Path(__file__).resolve().parent / "results"
console = Console(width=None if sys.stdout.isatty() else 160)


def newest(prefix: str, pred, k: int) -> list[tuple[Path, dict]]:
    """Up to `k` newest bench/results/<prefix>-*.json whose content satisfies `pred`."""
    out: list[tuple[Path, dict]] = []
    for path in sorted(RESULTS.glob(f"{prefix}-*.json"), reverse=True):
        if len(out) == k:
            break
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if pred(data):
            out.append((path, data))
    return out


def latest(prefix: str, pred=lambda d: True) -> tuple[Path, dict] | None:
    """The newest bench/results/<prefix>-*.json whose content satisfies `pred`."""
    found = newest(prefix, pred, 1)
    return found[0] if found else None


def _ratio(proto: str, k: int, node: Path | None) -> tuple[str, str]:
    """The 1M warm ÷ floor ratio of `proto`: each run's floor and stack ran side by side; with
    several runs (the machine is shared, a single ECDH pair varies by ±15 %), their median and
    range, and the newest run's times."""
    if node is not None:
        found = [(node, json.loads(node.read_text()))]
    else:
        found = newest("psi_node", _has(1_000_000, proto), k)
    runs = [(path, _run(data, 1_000_000, proto) or {}) for path, data in found]
    runs = [(path, r) for path, r in runs if r.get("warm_ratio")]
    if not runs:
        return "—", "no run"
    ratios = sorted(r["warm_ratio"] for _, r in runs)
    # the strictest floor: the PSI call alone (no process start, no import, no link connect,
    # which the floor pays every run and a warm session does not)
    strict = sorted(
        r["warm"]["wall_s"] / max(v["psi_s"] for v in r["floor"]["parties"].values())
        for _, r in runs
    )
    newest_path, r = runs[0]
    times = f"{_f(r['warm'].get('wall_s'), '.1f')} s ÷ {_f(r['floor'].get('wall_s'), '.1f')} s"
    if len(runs) == 1:
        return f"{ratios[0]:.2f}× ({times}; ÷ its PSI call {strict[0]:.2f}×)", newest_path.name
    spread = f"{ratios[0]:.2f}–{ratios[-1]:.2f}×"
    return (
        f"median {statistics.median(ratios):.2f}× ({spread}, {len(runs)} runs; newest {times}); "
        f"÷ the floor's PSI call alone {statistics.median(strict):.2f}× "
        f"({strict[0]:.2f}–{strict[-1]:.2f}×)",
        f"{newest_path.name} and {len(runs) - 1} older",
    )


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
    ap.add_argument(
        "--runs",
        type=int,
        default=3,
        help="the 1M ratios: median over the newest N psi_node runs that have one (default: 3; "
        "each run's floor and stack side by side; --node: that run only)",
    )
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
        measured, src = _ratio(proto, args.runs, args.node)
        t.add_row(f"1M×1M {proto} warm ÷ bare library", measured, goal, src)
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

"""The tables of bench/psi_node.py: one per (rows, protocol) and the summary.

A run (one (rows, protocol)) holds "floor" (a), "stack" (b, cold: a job process per job) and
"warm" (b, in a warm session); their ratios to the floor are "ratio" and "warm_ratio"."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from bench.psi_common import PARTIES, short

MODE_KEY = {"cold": "stack", "warm": "warm"}  # where a mode's record is kept in a run
RATIO_KEY = {"cold": "ratio", "warm": "warm_ratio"}


def _f(v: Any, unit: str = "", digits: int = 2) -> str:
    if v is None:
        return "—"
    if isinstance(v, float | int):
        return f"{v:,.{digits}f}{unit}"
    return str(v)


def _mb(v: Any) -> str:
    return "—" if v is None else f"{v:,.0f} MB"


def _n(v: Any) -> str:
    return "—" if v is None else f"{v:,.0f}"


def teardown_text(entry: dict[str, Any] | None, mode: str = "cold") -> str:
    """teardown_s from teardown.json; if the teardown failed, result → teardown.json marked *."""
    if not entry:
        return "—"
    if mode == "warm":
        return "kept (session)"
    if entry.get("teardown_s") is not None:
        return _f(entry["teardown_s"], " s")
    after = entry.get("teardown_written_after_result_s")
    return f"[yellow]{_f(after, ' s')} *[/]" if after is not None else "—"


def _get(d: Any, *path: str) -> Any:
    for k in path:
        d = (d or {}).get(k)
    return d


def _caption(run: dict[str, Any], modes: list[str]) -> str:
    floor = run.get("floor") or {}
    floor_wall = "[red]failed[/]" if run.get("floor_failed_attempts") and not floor else None
    caption = f"floor wall {floor_wall or _f(floor.get('wall_s'), ' s')}"
    for m in modes:
        side = run.get(MODE_KEY[m]) or {}
        wall = "[red]failed[/]" if side.get("failed") else _f(side.get("wall_s"), " s")
        caption += (
            f" · {m} stack wall {wall} (ratio {m}/floor [bold]"
            f"{_f(run.get(RATIO_KEY[m]), '×', 1)}[/])"
        )
    warm = run.get("warm") or {}
    if "warm" in modes and warm.get("session"):
        ses = warm["session"]
        w = ses.get("warmup") or {}
        caption += (
            f"\nwarm: session {ses.get('id')}, started by an unmeasured warm-up job "
            f"(wall {_f(w.get('wall_s'), ' s')})"
        )
    for side, name in (("floor", "floor"), *((MODE_KEY[m], m) for m in modes)):
        failed = run.get(f"{side}_failed_attempts") or []
        if failed:
            caption += f"\n[yellow]{name}: {len(failed)} failed attempt(s) before this one[/]"
            if not run.get(side) or (run.get(side) or {}).get("failed"):
                caption = caption.replace("before this one", "(no successful run)")
    td_errors = {
        e["teardown_error"]
        for e in ((run.get("stack") or {}).get("parties") or {}).values()
        if e.get("teardown_error")
    }
    for err in sorted(td_errors):
        caption += f"\n[yellow]* teardown failed ({err}); shown: result → teardown.json[/]"
    for e in run.get("errors") or []:
        caption += f"\n[red]CHECK FAILED: {short(e, 300)}[/]"
    for e in run.get("failures") or []:
        caption += f"\n[yellow]run failed: {short(e, 300)}[/]"
    return caption


def config_table(run: dict[str, Any], modes: list[str]) -> Table:
    rows, proto, overlap = run["rows"], run["protocol"], run["overlap"]
    fp = (run.get("floor") or {}).get("parties", {})
    sp = {}
    for m in modes:
        side = run.get(MODE_KEY[m]) or {}
        sp[m] = {} if side.get("failed") else side.get("parties", {})
    title = f"{proto} · {rows:,} rows per party · {overlap:,} in common"
    t = Table(
        title=title, caption=_caption(run, modes), title_justify="left", caption_justify="left"
    )
    t.add_column("")
    for p in PARTIES:
        t.add_column(f"floor {p}", justify="right")
    for m in modes:
        for p in PARTIES:
            t.add_column(f"{m} {p}", justify="right")

    def fl(p: str, k: str) -> Any:
        return fp.get(p, {}).get(k)

    def row(label: str, floor_cell, stack_cell) -> None:
        cells = [floor_cell(p) for p in PARTIES]
        cells += [stack_cell(m, sp[m].get(p, {}), p) for m in modes for p in PARTIES]
        t.add_row(label, *cells)

    def metric(key: str):
        return lambda m, e, p: _f(_get(e, "performance_metrics", key), " s")

    def ratio(m: str, e: dict, p: str) -> str:
        st, f = e.get("wall_s"), fl(p, "wall_s")
        return _f(st / f, "×", 1) if st and f else "—"

    def startup(p: str) -> str:
        if not fl(p, "wall_s"):
            return "—"
        return _f((fl(p, "pre_main_s") or 0) + (fl(p, "import_s") or 0), " s")

    def at_peak(*parts: str):
        def cell(m: str, e: dict, p: str) -> str:
            top = _get(e, "memory_job", "at_peak")
            return " │ ".join(_n((top or {}).get(f"{k}_mb")) for k in parts) if top else "—"

        return cell

    def session_job(m: str, e: dict, p: str) -> str:
        n = _get(e, "performance_metrics", "session_job")
        return f"#{n:.0f}" if isinstance(n, int | float) else "—"

    def count(v: Any) -> str:
        if v is None or v == -1:
            return "—"
        mark = "[green]✓[/]" if v == overlap else "[red]✗[/]"
        return f"{v:,} {mark}"

    dash = lambda p: "—"  # noqa: E731
    blank = lambda p: ""  # noqa: E731
    row(
        "wall: start → result",
        lambda p: _f(fl(p, "wall_s"), " s"),
        lambda m, e, p: _f(e.get("wall_s"), " s"),
    )
    row("  ratio stack/floor (per party)", blank, ratio)
    row(
        "  start-up+import │ queue+handoff",
        startup,
        lambda m, e, p: _f(e.get("queue_handoff_s"), " s"),
    )
    row("  — │ input check", dash, metric("input_check_s"))
    row(
        "  link connect │ cluster init",
        lambda p: _f(fl(p, "link_s"), " s"),
        metric("cluster_init_s"),
    )
    row("  — │ device init (SPU)", dash, metric("device_init_s"))
    row("  psi │ algorithm", lambda p: _f(fl(p, "psi_s"), " s"), metric("algorithm_s"))
    row("  — │ warm session job", dash, session_job)
    row(
        "teardown (after the result)",
        lambda p: _f(fl(p, "stop_link_s"), " s"),
        lambda m, e, p: teardown_text(e, m) if e else "—",
    )
    row(
        "peak RSS: process │ driver",
        lambda p: _mb(fl(p, "maxrss_mb")),
        lambda m, e, p: _mb(_get(e, "memory_job", "driver_mb")),
    )
    row(
        "peak RSS: whole party",
        lambda p: _mb(fl(p, "maxrss_mb")),
        lambda m, e, p: _mb(_get(e, "memory_job", "total_mb")),
    )
    row(
        "  at that peak: whole party PSS",
        blank,
        lambda m, e, p: _mb(_get(e, "memory_job", "at_peak", "pss_mb")),
    )
    row("  at that peak, MB: Ray │ Celery", blank, at_peak("ray", "celery"))
    row(
        "  at that peak, MB: driver │ spare │ session", blank, at_peak("driver", "spare", "session")
    )
    row(
        "intersection (receiver)",
        lambda p: count(fl(p, "intersection_count")),
        lambda m, e, p: count((e.get("result") or {}).get("intersection_count")),
    )
    return t


def summary_table(runs: list[dict[str, Any]], modes: list[str]) -> Table:
    teardown_failed = any(
        e.get("teardown_error")
        for r in runs
        for e in ((r.get("stack") or {}).get("parties") or {}).values()
    )
    t = Table(
        title=(
            "summary: floor = bare PSI library, stack = node stack (cold: a job process per job;"
            " warm: in a warm session); input check/cluster/devices/algorithm/teardown = slower"
            " party; MB = peak RSS alice/bob (sum over the party's processes), PSS = the same"
            " moment's proportional set size (shared pages counted once)"
        ),
        caption="* teardown failed: time from the result to teardown.json"
        if teardown_failed
        else None,
        title_justify="left",
        caption_justify="left",
    )
    for name in (
        "rows",
        "protocol",
        "stack",
        "floor wall",
        "stack wall",
        "ratio",
        "input check",
        "cluster",
        "devices",
        "algorithm",
        "teardown",
        "driver MB a/b",
        "party MB a/b",
        "party PSS a/b",
        "floor MB a/b",
        "check",
    ):
        t.add_column(name, justify="right", no_wrap=True)
    for run in runs:
        floor = run.get("floor") or {}
        frss = " / ".join(
            _mb(floor.get("parties", {}).get(p, {}).get("maxrss_mb")).removesuffix(" MB")
            for p in PARTIES
        )
        floor_wall = (
            "[red]failed[/]"
            if run.get("floor_failed_attempts") and not floor
            else _f(floor.get("wall_s"), " s")
        )
        for m in modes or ["—"]:  # (--skip-stack: the floor only)
            stack = run.get(MODE_KEY.get(m, "")) or {}
            sp = {} if stack.get("failed") else stack.get("parties", {})

            def mx(key: str, sp=sp) -> Any:
                vals = [(sp[p].get("performance_metrics") or {}).get(key) for p in sp]
                vals = [v for v in vals if v is not None]
                return max(vals) if vals else None

            tds = [
                sp[p].get("teardown_s") or sp[p].get("teardown_written_after_result_s") for p in sp
            ]
            tds = [v for v in tds if v is not None]
            td_err = any(sp[p].get("teardown_error") for p in sp)
            mem = {
                k: " / ".join(
                    _mb((sp.get(p, {}).get("memory_job") or {}).get(k)).removesuffix(" MB")
                    for p in PARTIES
                )
                for k in ("driver_mb", "total_mb")
            }
            mem["pss_mb"] = " / ".join(
                _mb(_get(sp.get(p), "memory_job", "at_peak", "pss_mb")).removesuffix(" MB")
                for p in PARTIES
            )
            if floor.get("errors") or stack.get("errors"):
                ok = "[red]MISMATCH[/]"
            elif stack.get("failed") or (run.get("floor_failed_attempts") and not floor):
                ok = "[yellow]run failed[/]"
            else:
                ok = "[green]ok[/]"
            teardown = (
                ("kept" if sp else "—")
                if m == "warm"
                else _f(max(tds) if tds else None, " s") + (" *" if td_err else "")
            )
            t.add_row(
                f"{run['rows']:,}",
                run["protocol"],
                m,
                floor_wall,
                "[red]failed[/]" if stack.get("failed") else _f(stack.get("wall_s"), " s"),
                _f(run.get(RATIO_KEY.get(m, "")), "×", 1),
                _f(mx("input_check_s"), " s"),
                _f(mx("cluster_init_s"), " s"),
                _f(mx("device_init_s"), " s"),
                _f(mx("algorithm_s"), " s"),
                teardown,
                mem["driver_mb"],
                mem["total_mb"],
                mem["pss_mb"],
                frss,
                ok,
            )
    return t


def memory_lines(run: dict[str, Any], modes: list[str]) -> list[str]:
    """Per mode and party: the processes of ≥ 20 MB at the moment of the whole party's peak."""
    lines = []
    for m in modes:
        side = run.get(MODE_KEY[m]) or {}
        for p, e in ({} if side.get("failed") else side.get("parties", {})).items():
            top = _get(e, "memory_job", "at_peak")
            if not top:
                continue
            procs = " · ".join(f"{x['name']} {x['mb']:,.0f}" for x in top.get("top", []))
            lines.append(f"  {m} {p} peak {_mb(top.get('total_mb'))}: {procs}")
    return lines

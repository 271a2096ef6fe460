"""The node stack of bench/psi_node.py: one PSI job through both parties' queues (cold: a job
process of its own), and a warm run (a new warm session: a small warm-up job that starts it,
then the measured job in the same session)."""

from __future__ import annotations

import contextlib
import json
import shutil
import time
import uuid
from typing import Any

from bench.psi_common import (
    KEY,
    PARTIES,
    RECEIVER,
    Dataset,
    check_count,
    check_output,
    console,
    loadavg,
    short,
)
from bench.psi_cpu import CpuWindow
from bench.psi_memory import MemorySampler, ProcessView, wait_settled


class StackError(RuntimeError):
    pass


def party_roots(fed) -> dict[str, tuple[int, int]]:
    roots = {}
    for p, node in fed.nodes.items():
        head = int((node.state_dir / "ray-head.pid").read_text().strip())
        roots[p] = (head, node.procs["worker"].pid)
    return roots


def _events(fed, party: str, task_request_id: str) -> list:
    from node.worker.notifier import read_events

    with contextlib.suppress(Exception):
        return read_events(fed.nodes[party].redis(), task_request_id)
    return []


def run_stack(
    fed,
    ds: Dataset,
    protocol: str,
    tag: str,
    view: ProcessView,
    *,
    timeout: float,
    teardown_wait: float,
    interval: float,
    session: dict[str, Any] | None = None,
    drivers: dict[str, int] | None = None,
) -> dict[str, Any]:
    """One job. With `session` ({"id", "idle_timeout_s", "ports"?}) it runs in that warm
    session (with the given ports: every party's fed cluster and spu_config); its driver stays
    up, so no teardown.json is waited for. `drivers`: the session drivers' pids (memory)."""
    from deploy.local.standin import psi_params, send

    in_name, out_name = f"in/{tag}.csv", f"out/{tag}.csv"
    for p in PARTIES:  # a fresh copy per job (see the floor)
        dst = fed.nodes[p].data_root / in_name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ds.files[p], dst)
    per_party = psi_params(
        fed,
        PARTIES,
        keys={p: [KEY] for p in PARTIES},
        inputs=dict.fromkeys(PARTIES, in_name),
        outputs=dict.fromkeys(PARTIES, out_name),
        receiver=RECEIVER,
        protocol=protocol,
    )
    if session is not None:
        teardown_wait = 0.0  # the session's driver stays up: no teardown after the job
        for p, params in per_party.items():
            params["session"] = {"id": session["id"], "idle_timeout_s": session["idle_timeout_s"]}
            if session.get("ports"):  # a later job of the session: the session's ports
                params["sf_init_config"]["cluster"] = session["ports"][p]["cluster"]
                params["spu_config"] = session["ports"][p]["spu_config"]
    ports = {
        p: {"cluster": params["sf_init_config"]["cluster"], "spu_config": params["spu_config"]}
        for p, params in per_party.items()
    }
    exe = per_party[RECEIVER]["execution_id"]
    sampler = MemorySampler(view, interval, drivers)
    sampler.start()
    cpu = CpuWindow(view)
    cpu_used: dict[str, Any] | None = None
    try:
        t_wall = time.time()
        cpu.start()
        t0 = time.perf_counter()
        results = send(fed, per_party)
        ready_at: dict[str, float] = {}
        while len(ready_at) < len(results):
            for p, res in results.items():
                if p not in ready_at and res.ready():
                    ready_at[p] = time.perf_counter()
            if time.perf_counter() - t0 > timeout:
                for res in results.values():
                    with contextlib.suppress(Exception):
                        res.revoke(terminate=True)
                raise StackError(f"stack job {exe} not done within {timeout:.0f}s")
            time.sleep(0.05)
        cpu_used = cpu.stop(time.perf_counter() - t0)
        outcomes: dict[str, dict] = {}
        for p, res in results.items():
            try:
                outcomes[p] = res.get(timeout=30)
            except Exception as exc:
                got = getattr(exc, "result", None)
                outcomes[p] = (
                    got
                    if isinstance(got, dict) and got
                    else {
                        "status": "error",
                        "error": {"type": type(exc).__name__, "message": str(exc)},
                    }
                )
        # teardown.json is written after a successful cold job only (node/launch/runner.py)
        succeeded = [p for p in PARTIES if outcomes[p].get("status") == "success"]
        teardown: dict[str, dict] = {}
        teardown_at: dict[str, float] = {}
        end = time.perf_counter() + teardown_wait
        while len(teardown) < len(succeeded) and time.perf_counter() < end:
            for p in succeeded:
                f = fed.nodes[p].state_dir / "jobs" / f"{exe}.{p}" / "teardown.json"
                if p not in teardown and f.exists():
                    with contextlib.suppress(ValueError, OSError):
                        teardown[p] = json.loads(f.read_text())
                        teardown_at[p] = time.perf_counter()
            time.sleep(0.1)
    finally:
        sampler.stop()

    t_results = max(ready_at.values())
    out: dict[str, Any] = {
        "execution_id": exe,
        "wall_s": round(t_results - t0, 3),
        "sampler_cpu_s": round(sampler.cpu_s, 3),
        "cpu": cpu_used,
        "failed": len(succeeded) < len(PARTIES),
        "ports": ports,
        "parties": {},
        "warnings": [],
    }
    errors = []
    for p in PARTIES:
        res = outcomes[p]
        metrics = res.get("performance_metrics") or {}
        wall = round(ready_at[p] - t0, 3)
        events = _events(fed, p, f"{exe}.{p}")
        stages = {}
        for ev in events:
            name = ev.data.stage or ev.status.value.lower()
            stages.setdefault(str(name), round(ev.timestamp.timestamp() - t_wall, 3))
        td = teardown.get(p)
        entry = {
            "status": res.get("status"),
            "error": res.get("error"),
            "result": res.get("result"),
            "wall_s": wall,
            "performance_metrics": metrics,
            "queue_handoff_s": round(wall - metrics["total_s"], 3)
            if "total_s" in metrics
            else None,
            "stage_offsets_s": stages,
            "teardown": td,
            "teardown_s": (td or {}).get("teardown_s"),
            "teardown_error": (td or {}).get("error"),
            "teardown_written_after_result_s": (
                round(teardown_at[p] - ready_at[p], 3) if p in teardown_at else None
            ),
            "memory_job": sampler.peaks(p, t0, ready_at[p]),
            "memory_with_teardown": sampler.peaks(p, t0, teardown_at.get(p, float("inf"))),
            "driver_pid": sampler.driver_pid[p],
        }
        out["parties"][p] = entry
        if res.get("status") != "success":
            err = res.get("error") or {}
            errors.append(f"stack {p}: {err.get('type')}: {short(err.get('message'))}")
        elif session is not None:
            pass  # no teardown in a session
        elif td is None:
            out["warnings"].append(f"{p}: no teardown.json within {teardown_wait:.0f}s")
        elif "teardown_s" not in td:
            out["warnings"].append(f"{p}: teardown reported no teardown_s: {td}")
    rec = outcomes[RECEIVER]
    if rec.get("status") == "success":
        errors.append(check_count((rec.get("result") or {}).get("intersection_count"), ds, "stack"))
        errors.append(check_output(fed.nodes[RECEIVER].data_root / out_name, ds))
    out["errors"] = [e for e in errors if e]
    # free the data roots (1M rows: ~13 MB per copy)
    for p in PARTIES:
        with contextlib.suppress(OSError):
            (fed.nodes[p].data_root / in_name).unlink()
    return out


# --------------------------------------------------------------------------------------------
# warm sessions
# --------------------------------------------------------------------------------------------
def close_all_sessions(fed) -> list[str]:
    """End every warm session on every node; the ids that were ended."""
    from node.sessions.client import HostUnavailable, close_sessions

    ended: list[str] = []
    for node in fed.nodes.values():
        with contextlib.suppress(HostUnavailable, OSError):
            ended += close_sessions(node.settings())
    return ended


def session_drivers(fed, session_id: str) -> dict[str, int]:
    """party → pid of the driver of warm session `session_id` (parties without it left out)."""
    from node.sessions.client import list_sessions

    out = {}
    for p, node in fed.nodes.items():
        for s in list_sessions(node.settings()):
            if s.get("id") == session_id and s.get("pid"):
                out[p] = int(s["pid"])
    return out


def _session_errors(st: dict[str, Any], session_id: str, least: int, most: int) -> list[str]:
    """Every party's job must have run in `session_id` as its job number least..most."""
    errors = []
    for p, entry in st["parties"].items():
        m = entry.get("performance_metrics") or {}
        sid, n = m.get("session_id"), m.get("session_job")
        if sid != session_id or not isinstance(n, int | float) or not least <= n <= most:
            errors.append(
                f"warm {p}: ran as session {sid!r} job {n!r}, expected session "
                f"{session_id!r} job {least}{'+' if most > least else ''} (not a warm job)"
            )
    return errors


def run_warm(
    fed,
    ds: Dataset,
    warmup_ds: Dataset,
    protocol: str,
    tag: str,
    view: ProcessView,
    *,
    timeout: float,
    settle_timeout: float,
    interval: float,
    idle_timeout: float,
) -> dict[str, Any]:
    """A new warm session: an unmeasured warm-up job of `warmup_ds` starts it, then the
    measured job of `ds` runs in it (same session id and ports; its session_job must be ≥ 2).
    The nodes' sessions are closed before and after. Returns the measured job's record (that
    of the warm-up job if it failed), with "session": what happened around it."""
    session_id = f"bench-{tag}-{uuid.uuid4().hex[:8]}"
    info: dict[str, Any] = {"id": session_id, "closed_before": close_all_sessions(fed)}
    kw = {"timeout": timeout, "teardown_wait": 0.0, "interval": interval}
    try:
        with console.status(f"{tag}: waiting for the session hosts' pre-started drivers / quiet"):
            info["settle_new_s"] = round(wait_settled(view, settle_timeout, "warm-new"), 1)
        with console.status(
            f"{tag}: warm-up job ({warmup_ds.rows:,} rows, not measured) starts session "
            f"{session_id}"
        ):
            w = run_stack(
                fed,
                warmup_ds,
                protocol,
                f"{tag}-warmup",
                view,
                session={"id": session_id, "idle_timeout_s": idle_timeout},
                **kw,
            )
        info["warmup"] = w
        if w["failed"] or w["errors"]:  # no measured job; a wrong intersection is not retried
            w["check_failed"] = not w["failed"]
            w["failed"] = True
            w["errors"] = [f"warm-up job: {e}" for e in w["errors"]]
            w["session"] = info
            w["failed_in"] = "warm-up"
            return w
        w["errors"] = _session_errors(w, session_id, 1, 1)
        console.log(f"{tag}: warm-up job started session {session_id}: wall {w['wall_s']:.2f}s")
        drivers = session_drivers(fed, session_id)
        info["driver_pids"] = drivers
        if set(drivers) != set(PARTIES):
            w["failed"] = True
            w["errors"].append(
                f"session {session_id} is not listed by {set(PARTIES) - set(drivers)}"
            )
            w["session"] = info
            w["failed_in"] = "warm-up"
            return w
        with console.status(f"{tag}: waiting until the session drivers are idle / quiet"):
            info["settle_s"] = round(wait_settled(view, settle_timeout, "warm", drivers), 1)
        with console.status(f"{tag}: measured job in session {session_id}"):
            info["loadavg_before"] = loadavg()
            st = run_stack(
                fed,
                ds,
                protocol,
                tag,
                view,
                session={"id": session_id, "idle_timeout_s": idle_timeout, "ports": w["ports"]},
                drivers=drivers,
                **kw,
            )
        if not st["failed"]:
            st["errors"] += _session_errors(st, session_id, 2, 10**9)
        st["errors"] = w["errors"] + st["errors"]  # (a wrong warm-up session number too)
        st["session"] = info
        return st
    finally:
        with contextlib.suppress(Exception):
            info["closed_after"] = close_all_sessions(fed)

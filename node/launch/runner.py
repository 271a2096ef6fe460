"""Runs one SecretFlow job in a supervised child process (docs/architecture.md §1).

SecretFlow's fed layer and RayFed call os._exit(1) on errors, and an absent or untrusted peer is
retried for hours — so the job never runs inside the Celery worker. The supervisor here enforces
a start timeout (cross-silo links up), the overall limit (task time limit / deadline), kills the
child's whole process group on timeout or cancel, and turns every ending into an Outcome with a
reason. One child is kept pre-started (the "spare"): it has already imported secretflow (~12 s)
and waits for its job on stdin.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from node.contract import ErrorInfo, ErrorType, Stage, TaskParams
from node.launch import failures
from node.launch.jobprocess import JobProcess
from node.sessions.client import HostUnavailable, SessionJob
from node.settings import NodeSettings

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 180.0
RAY_CHECK_EVERY_S = 1.0  # how often the supervisor checks that this party's Ray head answers
LOG_LINES = 200  # job-log lines kept as an error's details


_spare: JobProcess | None = None
_spare_lock = threading.Lock()


def _spawn(settings: NodeSettings) -> JobProcess:
    return JobProcess(settings, settings.state_dir / "runner" / "spawn.log")


def ensure_spare(settings: NodeSettings) -> None:
    """Keep one pre-started job process (secretflow imported) for the next job."""
    global _spare
    if not settings.spare_runner:
        return
    with _spare_lock:
        if _spare is None or not _spare.alive():
            _spare = _spawn(settings)


def discard_spare() -> None:
    global _spare
    with _spare_lock:
        if _spare is not None:
            _spare.kill()
            _spare = None


def _take(settings: NodeSettings) -> JobProcess:
    global _spare
    with _spare_lock:
        proc, _spare = _spare, None
    if proc is not None and proc.alive():
        return proc
    if proc is not None:
        proc.close()
    return _spawn(settings)


class OutcomeStatus(StrEnum):
    """How a job process ended, as the Celery task sees it."""

    SUCCESS = "success"
    ERROR = "error"
    CANCELLED = "cancelled"


@dataclass
class Outcome:
    status: OutcomeStatus
    result: dict[str, Any] | None = None
    error: ErrorInfo | None = None
    log_path: Path | None = None
    timings: dict[str, float] = field(default_factory=dict)


def log_tail(path: Path | None, lines: int = 30) -> list[str]:
    if path is None or not path.exists():
        return []
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - 64_000))
        text = fh.read().decode(errors="replace")
    return [ln for ln in text.splitlines() if ln.strip()][-lines:]


def run_job(
    params: TaskParams,
    prepared: dict[str, Any],
    settings: NodeSettings,
    *,
    on_stage: Callable[[str, float | None], object],
    cancelled: threading.Event,
    deadline_monotonic: float | None = None,
) -> Outcome:
    """Run one job in a child process and supervise it to an Outcome."""
    from node.rayhead import head

    job_dir = settings.state_dir / "jobs" / f"{params.execution_id}.{params.party}"
    job_dir.mkdir(parents=True, exist_ok=True)
    log_path = job_dir / "job.log"
    t_start = time.monotonic()
    peers = tuple(p for p in params.sf_init_config.parties if p != params.party)
    situation = failures.Situation(
        peers=peers,
        connected=False,
        start_timeout_s=settings.start_timeout_s,
        ray_address=settings.ray_address,
    )
    timings: dict[str, float] = {}
    if not head.is_up(settings):  # checked before anything is started: a dead head fails now
        return Outcome(
            OutcomeStatus.ERROR, error=failures.ray_head_down(situation), timings=timings
        )
    proc: JobProcess | SessionJob
    if params.session is not None:  # the session host checks the ports of a new session
        try:
            proc = SessionJob(settings)
        except HostUnavailable as exc:  # (restarting): its sessions are gone; a retry starts anew
            return Outcome(
                OutcomeStatus.ERROR,
                error=ErrorInfo(type=ErrorType.SESSION_LOST, message=str(exc)),
                timings=timings,
            )
    else:
        busy = busy_port(params, settings)
        if busy is not None:  # a listener of an earlier job still holds it: say so, at once
            return Outcome(OutcomeStatus.ERROR, error=failures.port_in_use(*busy), timings=timings)
        proc = _take(settings)
    timings["warm"] = 1.0 if proc.ready else 0.0
    limit_end = t_start + settings.task_time_limit_s
    if deadline_monotonic is not None:
        limit_end = min(limit_end, deadline_monotonic)

    def fail(error: ErrorInfo) -> Outcome:
        proc.kill()
        return Outcome(OutcomeStatus.ERROR, error=error, log_path=log_path, timings=timings)

    def tail() -> list[str]:
        return log_tail(log_path, LOG_LINES)

    try:
        if not proc.wait_ready(READY_TIMEOUT_S):
            rc = proc.exit_code(0)
            return fail(
                ErrorInfo(
                    type=ErrorType.RUNNER_START_ERROR,
                    message=(
                        f"its job process did not start (exit code {rc}); see "
                        f"{settings.state_dir / 'runner' / 'spawn.log'}"
                    ),
                    details="\n".join(log_tail(settings.state_dir / "runner" / "spawn.log", 80)),
                )
            )
        timings["ready_wait_s"] = round(time.monotonic() - t_start, 3)
        proc.send_job(
            {
                "params": params.model_dump(mode="json"),
                "prepared": prepared,
                "settings": settings.for_job_process(),  # no secret crosses to the job
                "log_path": str(log_path),
            }
        )
        (job_dir / "pid").write_text(str(proc.pid))
        t_sent = time.monotonic()
        if isinstance(proc, SessionJob) and proc.session:
            timings["session_job"] = float(proc.session.get("job") or 0)
        next_ray_check = t_sent + RAY_CHECK_EVERY_S
        while True:
            now = time.monotonic()
            if cancelled.is_set():
                proc.kill()
                return Outcome(
                    OutcomeStatus.CANCELLED,
                    error=ErrorInfo(
                        type=ErrorType.CANCELLED, message="task cancelled; job process stopped"
                    ),
                    log_path=log_path,
                    timings=timings,
                )
            if now >= next_ray_check:
                next_ray_check = now + RAY_CHECK_EVERY_S
                if not head.is_up(settings):
                    return fail(failures.ray_head_down(situation))
            if not situation.connected and now - t_sent > settings.start_timeout_s:
                return fail(failures.link_timeout(situation, tail()))
            if now > limit_end:
                why = (
                    "the job's deadline passed"
                    if deadline_monotonic and now > deadline_monotonic
                    else f"the node's time limit of {settings.task_time_limit_s:.0f} s was exceeded"
                )
                return fail(
                    ErrorInfo(type=ErrorType.TIME_LIMIT_EXCEEDED, message=f"job stopped: {why}")
                )
            for msg in proc.read_messages(0.25):
                kind = msg["type"]
                if kind == "stage":
                    if msg["stage"] == Stage.CLUSTER_INITIALIZED:
                        situation = dataclasses.replace(situation, connected=True)
                    timings[msg["stage"]] = round(time.monotonic() - t_sent, 3)
                    on_stage(msg["stage"], msg.get("progress"))
                elif kind == "result":
                    proc.finish(job_dir)
                    return Outcome(
                        OutcomeStatus.SUCCESS,
                        result=msg["result"],
                        log_path=log_path,
                        timings=timings,
                    )
                elif kind == "error":
                    err = msg["error"]
                    if not head.is_up(settings):  # the head died under the job
                        return fail(failures.ray_head_down(situation))
                    if err.get("refusal"):  # the job itself refused (typed, one line)
                        return fail(ErrorInfo(type=err["type"], message=err["message"]))
                    return fail(
                        failures.from_exception(
                            situation, err["type"], err["message"], err.get("trace", ""), tail()
                        )
                    )
                elif kind == "eof":
                    rc = proc.exit_code(30)
                    if not head.is_up(settings):
                        return fail(failures.ray_head_down(situation))
                    return fail(failures.from_crash(situation, rc, tail()))
    except BaseException:
        proc.kill()
        raise


def busy_port(params: TaskParams, settings: NodeSettings) -> tuple[str, int] | None:
    """(link, port) of this job's own fed or SPU port when it cannot be bound now."""
    import socket

    sf = params.sf_init_config
    own = [
        ("fed", settings.fed_listen_host, int(sf.cluster[sf.self_party].address.rpartition(":")[2]))
    ]
    if params.spu_config is not None:
        for node in params.spu_config.cluster_def.nodes:
            if node.party == params.party:
                own.append(("SPU", settings.spu_listen_host, int(node.address.rpartition(":")[2])))
    for what, host, port in own:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do
            try:
                sock.bind((host, port))
            except OSError:
                return what, port
    return None

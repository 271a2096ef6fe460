"""Runs one SecretFlow job in a supervised child process (docs/architecture.md §1).

SecretFlow's fed layer and RayFed call os._exit(1) on errors, and an absent or untrusted peer is
retried for hours — so the job never runs inside the Celery worker. The supervisor here enforces
a start timeout (cross-silo links up), the overall limit (task time limit / deadline), kills the
child's whole process group on timeout or cancel, and turns every ending into an Outcome with a
reason. The child is a `child_spec.JobChild`: a cold job process of its own or a job in a warm
session — the caller opens it; this module never asks which.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from node.contract import ErrorInfo, ErrorType, Stage, TaskParams
from node.launch import failures
from node.launch.child_spec import (
    ChildExited,
    ChildMessage,
    JobChild,
    JobFailed,
    JobResult,
    JobSpec,
    StageReached,
)
from node.rayhead import head
from node.settings import NodeSettings

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 180.0
RAY_CHECK_EVERY_S = 1.0  # how often the supervisor checks that this party's Ray head answers
LOG_LINES = 200  # job-log lines kept as an error's details
POLL_S = 0.25  # how long one read of the child's messages waits


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

    @classmethod
    def failed(cls, error: ErrorInfo) -> Outcome:
        return cls(OutcomeStatus.ERROR, error=error)


def log_tail(path: Path | None, lines: int = 30) -> list[str]:
    if path is None or not path.exists():
        return []
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - 64_000))
        text = fh.read().decode(errors="replace")
    return [ln for ln in text.splitlines() if ln.strip()][-lines:]


@dataclass
class Limits:
    """When the supervisor gives up on a job (monotonic clock)."""

    start_timeout_s: float  # from the job's start to its cluster being up
    end: float  # the node's time limit or the job's deadline, whichever is first
    deadline: float | None  # the job's own deadline

    def exceeded(self, now: float, limit_s: float) -> ErrorInfo | None:
        if now <= self.end:
            return None
        why = (
            "the job's deadline passed"
            if self.deadline and now > self.deadline
            else f"the node's time limit of {limit_s:.0f} s was exceeded"
        )
        return ErrorInfo(type=ErrorType.TIME_LIMIT_EXCEEDED, message=f"job stopped: {why}")


def run_job(
    params: TaskParams,
    prepared: dict[str, Any],
    settings: NodeSettings,
    open_child: Callable[[], JobChild | ErrorInfo],
    *,
    on_stage: Callable[[str, float | None], object],
    cancelled: threading.Event,
    deadline_monotonic: float | None = None,
) -> Outcome:
    """Run one job in the child that `open_child` gives and supervise it to an Outcome."""
    t_start = time.monotonic()
    job_dir = settings.state_dir / "jobs" / f"{params.execution_id}.{params.party}"
    job_dir.mkdir(parents=True, exist_ok=True)
    situation = failures.Situation(
        peers=tuple(p for p in params.sf_init_config.parties if p != params.party),
        connected=False,
        start_timeout_s=settings.start_timeout_s,
        ray_address=settings.ray_address,
    )
    if not head.is_up(settings):  # checked before anything is started: a dead head fails now
        return Outcome.failed(failures.ray_head_down(situation))
    child = open_child()
    if isinstance(child, ErrorInfo):
        return Outcome.failed(child)
    end = t_start + settings.task_time_limit_s
    limits = Limits(
        settings.start_timeout_s,
        min(end, deadline_monotonic) if deadline_monotonic is not None else end,
        deadline_monotonic,
    )
    watch = _Watch(child, settings, situation, limits, job_dir, on_stage)
    spec = JobSpec(
        params=params,
        prepared=prepared,
        settings=settings.for_job_process(),  # no secret crosses to the job
        log_path=str(job_dir / "job.log"),
    )
    try:
        return watch.run(spec, cancelled)
    except BaseException:
        child.kill()
        raise


class _Watch:
    """One job's child, watched from its start to its Outcome: one handler per message."""

    def __init__(
        self,
        child: JobChild,
        settings: NodeSettings,
        situation: failures.Situation,
        limits: Limits,
        job_dir: Path,
        on_stage: Callable[[str, float | None], object],
    ) -> None:
        self.child, self.settings, self.situation = child, settings, situation
        self.limits, self.job_dir, self.on_stage = limits, job_dir, on_stage
        self.log_path = job_dir / "job.log"

    def run(self, spec: JobSpec, cancelled: threading.Event) -> Outcome:
        if not self.child.wait_ready(READY_TIMEOUT_S):
            return self.fail(self._not_started())
        self.child.send_job(spec)
        (self.job_dir / "pid").write_text(str(self.child.pid))
        self.t_sent = time.monotonic()
        next_ray_check = self.t_sent + RAY_CHECK_EVERY_S
        while True:
            now = time.monotonic()
            if cancelled.is_set():
                self.child.kill()
                return Outcome(
                    OutcomeStatus.CANCELLED,
                    error=ErrorInfo(
                        type=ErrorType.CANCELLED, message="task cancelled; job process stopped"
                    ),
                )
            if now >= next_ray_check:
                next_ray_check = now + RAY_CHECK_EVERY_S
                if not head.is_up(self.settings):
                    return self.fail(failures.ray_head_down(self.situation))
            stopped = self._over_time(now)
            if stopped is not None:
                return self.fail(stopped)
            for msg in self.child.read_messages(POLL_S):
                outcome = self.handle(msg)
                if outcome is not None:
                    return outcome

    def _over_time(self, now: float) -> ErrorInfo | None:
        if not self.situation.connected and now - self.t_sent > self.limits.start_timeout_s:
            return failures.link_timeout(self.situation, self.tail())
        return self.limits.exceeded(now, self.settings.task_time_limit_s)

    def handle(self, msg: ChildMessage) -> Outcome | None:
        """The Outcome a message ends the job with, or None while it runs on."""
        if isinstance(msg, StageReached):
            if msg.stage == Stage.CLUSTER_INITIALIZED:
                self.situation = dataclasses.replace(self.situation, connected=True)
            self.on_stage(msg.stage, msg.progress)
            return None
        if isinstance(msg, JobResult):
            self.child.finish(self.job_dir)
            return Outcome(OutcomeStatus.SUCCESS, result=msg.result)
        if isinstance(msg, JobFailed):
            return self.fail(self._failure(msg))
        if isinstance(msg, ChildExited):
            rc = self.child.exit_code(30)
            if not head.is_up(self.settings):
                return self.fail(failures.ray_head_down(self.situation))
            return self.fail(failures.from_crash(self.situation, rc, self.tail()))
        return None  # ready, session: nothing to act on

    def _failure(self, msg: JobFailed) -> ErrorInfo:
        err = msg.error
        if not head.is_up(self.settings):  # the head died under the job
            return failures.ray_head_down(self.situation)
        if err.refusal:  # the job itself refused (typed, one line)
            return ErrorInfo(type=err.type, message=err.message)
        return failures.from_exception(
            self.situation, err.type, err.message, err.trace, self.tail()
        )

    def _not_started(self) -> ErrorInfo:
        rc = self.child.exit_code(0)
        spawn_log = self.settings.state_dir / "runner" / "spawn.log"
        return ErrorInfo(
            type=ErrorType.RUNNER_START_ERROR,
            message=f"its job process did not start (exit code {rc}); see {spawn_log}",
            details="\n".join(log_tail(spawn_log, 80)),
        )

    def fail(self, error: ErrorInfo) -> Outcome:
        self.child.kill()
        return Outcome.failed(error)

    def tail(self) -> list[str]:
        return log_tail(self.log_path, LOG_LINES)


def busy_port(params: TaskParams, settings: NodeSettings) -> tuple[str, int] | None:
    """(link, port) of this job's own fed or SPU port when it cannot be bound now."""
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


@contextlib.contextmanager
def cancel_on_sigterm() -> Iterator[threading.Event]:
    """Within the block, SIGTERM (a cancel: the coordinator's revoke, sent to the Celery pool
    process that runs the task) only sets the event it yields. The worker holds it from a
    task's first event to its final one: `run_job` stops the job on it, and a SIGTERM that
    comes as the job ends or before it starts can no longer kill the process between the job and
    its final event (Celery's default action; the party's part then never ended)."""
    cancelled = threading.Event()
    previous = signal.getsignal(signal.SIGTERM)
    with contextlib.suppress(ValueError):  # only possible in the main thread (prefork pool)
        signal.signal(signal.SIGTERM, lambda *_: cancelled.set())
    try:
        yield cancelled
    finally:
        with contextlib.suppress(ValueError):
            signal.signal(signal.SIGTERM, previous)

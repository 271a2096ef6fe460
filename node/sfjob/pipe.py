"""The child's end of its pipe to the task (node.launch.child_spec): its messages out on the
file descriptor $PARTYLINE_MSG_FD, its job specs in on stdin, its output into the job's log."""

from __future__ import annotations

import os
import sys
import time
import traceback
from collections.abc import Callable

from node.launch.child_spec import (
    MAX_TEXT,
    MSG_FD_ENV,
    ChildError,
    JobFailed,
    JobSpec,
    Message,
    Ready,
    StageReached,
    encode,
)


class Pipe:
    """This process's messages to its task."""

    def __init__(self) -> None:
        self.fd = int(os.environ[MSG_FD_ENV])

    def send(self, msg: Message) -> None:
        os.write(self.fd, encode(msg))

    def ready(self, since: float) -> None:
        """Secretflow is imported: the child can take a job at once."""
        self.send(Ready(import_s=round(time.perf_counter() - since, 3)))

    def reporter(self) -> Callable[..., None]:
        """What a job calls to report a stage it reached."""

        def report(stage: str, progress: float | None = None) -> None:
            self.send(StageReached(stage=str(stage), progress=progress))

        return report

    def error(self, exc: BaseException) -> None:
        """Report an exception (the whole trace also goes to the job log)."""
        trace = traceback.format_exc()
        sys.stderr.write(trace)
        self.send(
            JobFailed(
                error=ChildError(
                    type=type(exc).__name__, message=str(exc)[:MAX_TEXT], trace=trace[-MAX_TEXT:]
                )
            )
        )
        flush()


def next_spec() -> JobSpec | None:
    """The next job from stdin; None when the task's side closed it."""
    line = sys.stdin.readline()
    return JobSpec.model_validate_json(line) if line else None


def redirect_output(log_path: str) -> None:
    """Send this process's stdout/stderr (and Ray's driver log lines) to a job's log."""
    flush()
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)


def flush() -> None:
    sys.stdout.flush()
    sys.stderr.flush()

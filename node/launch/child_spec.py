"""The contract between a Celery task and the child process that runs its job — a cold job
process (`python -m node.sfjob.executor`) or a warm session's driver (`python -m
node.sessions.driver`, reached through the session host). Both sides import this module.

  task → child, one JSON line per job:   `JobSpec`
  child → task, one JSON line a message: `ChildMessage` — `Ready` (secretflow imported), then per
      job `StageReached`…, and `JobResult` or `JobFailed`; a cold child then `Closed` (its
      teardown); the session host adds `SessionStarted` (which session, which driver) and
      `ChildExited` (its driver exited; the pipe's end is one too)

`JobChild` is what the task's side holds of a running job's child, whichever it is.
"""

from __future__ import annotations

import selectors
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from node.contract import ErrorInfo, TaskParams

MSG_FD_ENV = "PARTYLINE_MSG_FD"  # the child writes its messages to this file descriptor
MAX_TEXT = 20_000  # an error's message and trace, as sent (the whole trace is in the job log)
MAX_LINE = 16 << 20  # a line longer than this is dropped unread (no message comes near it)


class JobSpec(BaseModel):
    """One job for a child: what the task checked and prepared, and how to run it."""

    params: TaskParams
    prepared: dict[str, Any]  # the job type's own `Prepared` model, as JSON
    settings: dict[str, Any]  # NodeSettings.for_job_process(): no password crosses
    log_path: str  # the job's log: the child's stdout and stderr go there
    # set: this party refused the job before any work; its warm session's driver only releases
    # the peers' drivers, which wait for this party's part (JobType.release)
    refused: ErrorInfo | None = None


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Ready(Message):
    type: Literal["ready"] = "ready"
    import_s: float | None = None


class StageReached(Message):
    type: Literal["stage"] = "stage"
    stage: str
    progress: float | None = None


class JobResult(Message):
    type: Literal["result"] = "result"
    result: dict[str, Any]  # a TaskResult, as JSON


class ChildError(Message):
    type: str  # the exception's class name, or an ErrorType for a refusal
    message: str
    trace: str = ""
    refusal: bool = False  # refused by the child itself (typed, one line): no diagnosis needed


class JobFailed(Message):
    type: Literal["error"] = "error"
    error: ChildError


class Closed(Message):
    """A cold child's teardown after its result (kept in the job folder's teardown.json)."""

    type: Literal["closed"] = "closed"
    teardown_s: float | None = None
    error: str | None = None
    killed_after_s: float | None = None


class SessionStarted(Message):
    """The session host's first answer: the job's session and its driver."""

    type: Literal["session"] = "session"
    id: str
    new: bool
    pid: int
    job: int  # the job's number in its session


class ChildExited(Message):
    """The child's pipe ended (or, from the session host, its driver exited) without a result."""

    type: Literal["eof"] = "eof"
    rc: int | None = None


ChildMessage = Annotated[
    Ready | StageReached | JobResult | JobFailed | Closed | SessionStarted | ChildExited,
    Field(discriminator="type"),
]
_MESSAGE: TypeAdapter[ChildMessage] = TypeAdapter(ChildMessage)


def parse_message(line: bytes) -> ChildMessage | None:
    """One line of a child's output as its message; None for a line that is none."""
    try:
        return _MESSAGE.validate_json(line)
    except ValidationError:
        return None


class LineReader:
    """The task's end of a child's messages, one JSON line each, from a pipe or a socket:
    `read` waits up to `timeout` s for bytes and gives the whole lines' messages ([] on timeout,
    `[ChildExited()]` at the end). A partial line waits for its rest, up to MAX_LINE."""

    def __init__(self, source: Any, recv: Callable[[int], bytes]) -> None:
        self.source, self.recv = source, recv  # source: what select waits on (fd or socket)
        self._buf = b""
        self._dropping = False  # inside a line over MAX_LINE: skip to its end

    def read(self, timeout: float) -> list[ChildMessage]:
        sel = selectors.DefaultSelector()
        sel.register(self.source, selectors.EVENT_READ)
        try:
            if not sel.select(timeout):
                return []
        finally:
            sel.close()
        try:
            chunk = self.recv(65536)
        except OSError:
            chunk = b""
        return self.feed(chunk) if chunk else [ChildExited()]

    def feed(self, chunk: bytes) -> list[ChildMessage]:
        *lines, rest = (self._buf + chunk).split(b"\n")
        if self._dropping and lines:
            lines, self._dropping = lines[1:], False  # the rest of the overlong line
        self._buf = rest if len(rest) <= MAX_LINE else b""
        self._dropping = self._dropping or len(rest) > MAX_LINE
        parsed = (parse_message(line) for line in lines if line.strip())
        return [m for m in parsed if m is not None]


def encode(msg: Message | JobSpec) -> bytes:
    """One line of the pipe (a message without its unset fields; a spec whole)."""
    text = (
        msg.model_dump_json()
        if isinstance(msg, JobSpec)
        else msg.model_dump_json(exclude_none=True)
    )
    return (text + "\n").encode()


def refusal(kind: str, message: str) -> JobFailed:
    """A job refused before or outside its run: typed, one line."""
    return JobFailed(error=ChildError(type=kind, message=message, refusal=True))


class JobChild(Protocol):
    """A handle on the child that runs one job: start it, poll its messages, stop it."""

    @property
    def pid(self) -> int: ...

    @property
    def ready(self) -> bool:
        """True once the child can take its job at once (secretflow imported)."""
        ...

    def wait_ready(self, timeout: float) -> bool: ...

    def send_job(self, spec: JobSpec) -> None:
        """Start the job."""

    def read_messages(self, timeout: float) -> list[ChildMessage]:
        """Messages available within `timeout` s ([] on timeout; `ChildExited` at the end)."""
        ...

    def exit_code(self, timeout: float) -> int | None:
        """Wait up to `timeout` s for the child's exit code (None: still running)."""
        ...

    def finish(self, job_dir: Path) -> None:
        """After the result: let the child end (or stay, for the next job) off the job's path."""

    def kill(self) -> None:
        """Stop the job now."""

"""What the session host keeps about its warm sessions: one record per session, and the ids of
the sessions it started, remembered on disk so that a later job naming an ended session gets
SessionLost (never a new session under the old id) even after the host restarted."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node.launch.jobprocess import JobProcess

ENDED_KEPT = 1000  # ids of ended sessions remembered (a late job for one gets SessionLost)
SEEN_FILE = "sessions.seen"


def read_seen(path: Path) -> list[str]:
    try:
        return path.read_text().split()
    except OSError:
        return []


def remember(path: Path, session_id: str) -> None:
    """Append a started session's id (the file is cut back to the last ENDED_KEPT ids)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fh.write(session_id + "\n")
    seen = read_seen(path)
    if len(seen) > 2 * ENDED_KEPT:
        tmp = path.with_suffix(".tmp")
        tmp.write_text("\n".join(seen[-ENDED_KEPT:]) + "\n")
        tmp.replace(path)


@dataclass
class HostedSession:
    """The session host's record of one warm session (the coordinator's is
    coordinator.services.sessions.WarmSession)."""

    id: str
    parties: frozenset[str]
    key: str
    idle_timeout_s: float
    # whether its federation has an SPU device: a session's shape is its parties and this (a
    # job without SPU, such as a test-only kind, has sessions of its own beside the PSI ones)
    spu: bool = True
    proc: JobProcess | None = None
    ray_session: str | None = None  # the Ray head's session the driver connected to
    crl: tuple[int, int] | None = None  # NODE_CRL_FILE when the session began (its fed link's)
    busy: str | None = None  # execution id of the job in flight
    # set when a newer session of the same shape began while this one was busy: it ends once
    # its job does (a busy session is never killed to make room)
    retire_after_job: str | None = None
    last_used: float = field(default_factory=time.monotonic)
    jobs: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "parties": sorted(self.parties),
            "spu": self.spu,
            "pid": self.proc.pid if self.proc else None,
            "busy": self.busy,
            "jobs": self.jobs,
            "idle_s": round(time.monotonic() - self.last_used, 1),
            "idle_timeout_s": self.idle_timeout_s,
        }

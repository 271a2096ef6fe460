"""Gang scheduling (docs/architecture.md §3), pure: which queued jobs may be dispatched now.

A job is dispatched only when every one of its parties has a free slot, so all parties start a
job together and never run jobs in different orders. Queued jobs are considered in FIFO order;
a job that must wait blocks its parties for every later job (no overtaking on a shared party,
so an early job is never starved), while later jobs on other parties may go ahead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class QueuedJob:
    job_id: str
    parties: tuple[str, ...]


def dispatchable(
    queue: Sequence[QueuedJob],
    busy: Mapping[str, int],
    slots: Mapping[str, int],
) -> list[str]:
    """Job ids to dispatch now, in queue order. `busy`: running jobs per party; `slots`: capacity."""
    used = dict(busy)
    blocked: set[str] = set()
    out: list[str] = []
    for job in queue:
        parties = set(job.parties)
        free = all(used.get(p, 0) < slots.get(p, 1) for p in parties)
        if free and not (parties & blocked):
            out.append(job.job_id)
            for p in parties:
                used[p] = used.get(p, 0) + 1
        else:
            blocked |= parties
    return out

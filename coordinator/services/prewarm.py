"""Sessions started ahead (COORD_PREWARM): the first PSI of a party set the federation works
with does not wait for SecretFlow to start.

For each configured party set without a live warm session and without a job under way, the
coordinator sends a warm-up job (coordinator/jobkinds/warmup.py, node/jobtypes/warmup.py) as
soon as every party of the set is reachable and ready (`JobService.submit` refuses it before).
A warm-up that cannot be sent or does not leave a session behind is tried again after a pause
that doubles (10 s … 15 min), so a party that stays down costs one refused call per pause.

Memory: a live session holds, at each of its parties, the session's driver (SecretFlow's device
layer imported, ≈ 450 MB RSS), its SPU runtime's Ray worker (≈ 135 MB) and RayFed's proxies
(≈ 2 × 90 MB) — about 0.75 GB a party per party set kept warm (docs/coordinator.md).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from sqlalchemy import select

from coordinator.jobkinds.warmup import WarmupRequest
from coordinator.merge import JobState
from coordinator.models import Job
from coordinator.services.attempts import ACTIVE
from coordinator.services.sessions import SessionShape
from node.contract import utcnow

if TYPE_CHECKING:
    from coordinator.services.jobs import JobService

log = logging.getLogger("partyline.coordinator.prewarm")

FIRST_PAUSE_S = 10.0
MAX_PAUSE_S = 900.0
WARMUP_DEADLINE_S = 600.0  # a warm-up not done by then is ended like any job past its deadline


def prewarm_sets(spec: Iterable[str], registry: Iterable[str]) -> list[frozenset[str]]:
    """The party sets to keep warm: `auto` — the registry's two parties when it has exactly
    two, none otherwise; `none`; or party sets written `alice+bob` (each of 2 or more parties
    of the registry)."""
    names = sorted(registry)
    out: list[frozenset[str]] = []
    for item in spec:
        word = item.strip()
        if word in ("", "none"):
            continue
        if word == "auto":
            if len(names) == 2:
                out.append(frozenset(names))
            continue
        parties = frozenset(p.strip() for p in word.split("+") if p.strip())
        unknown = sorted(parties - set(names))
        if unknown or len(parties) < 2:
            raise ValueError(
                f"COORD_PREWARM: {word!r} is not a set of 2 or more registered parties"
                + (f" (unknown: {', '.join(unknown)})" if unknown else "")
            )
        out.append(parties)
    return list(dict.fromkeys(out))


class Prewarmer:
    """Keeps one warm session up for each of `sets` (a step of every reconciliation pass)."""

    def __init__(
        self,
        jobs: JobService,
        sets: list[frozenset[str]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.jobs, self.sets, self._clock = jobs, sets, clock
        self._pause: dict[frozenset[str], float] = {}
        self._next: dict[frozenset[str], float] = {}

    def step(self) -> list[str]:
        """Send the warm-ups due now; their job ids."""
        warm = self.jobs.warm
        if warm is None or not self.sets:
            return []
        live = {s.shape for s in warm.snapshot()}
        busy = self._active_sets()
        now = self._clock()
        sent = []
        for parties in self.sets:
            if SessionShape(parties, True) in live:
                self._pause.pop(parties, None)  # up: the next loss is retried soon
                continue
            if parties in busy or now < self._next.get(parties, 0.0):
                continue  # a job under way makes (or is) the session; or pausing
            pause = min(self._pause.get(parties, FIRST_PAUSE_S / 2) * 2, MAX_PAUSE_S)
            self._pause[parties], self._next[parties] = pause, now + pause
            job_id = self._send(parties)
            if job_id:
                sent.append(job_id)
        return sent

    def _send(self, parties: frozenset[str]) -> str | None:
        from coordinator.services.jobs import JobError

        deadline = utcnow() + dt.timedelta(seconds=WARMUP_DEADLINE_S)
        try:
            job = self.jobs.submit(WarmupRequest(parties=sorted(parties), deadline=deadline))
        except JobError as exc:  # a party not ready yet: tried again after the pause
            log.info("warm-up of %s not sent: %s", "+".join(sorted(parties)), exc)
            return None
        log.info("warm-up of %s sent as job %s", "+".join(sorted(parties)), job.id)
        return job.id

    def _active_sets(self) -> set[frozenset[str]]:
        with self.jobs.db() as s:
            under_way = [JobState.QUEUED, *ACTIVE]
            rows = s.scalars(select(Job.parties).where(Job.status.in_(under_way)))
            return {frozenset((p or {}).get("names", [])) for p in rows}

"""Warm federation sessions (docs/architecture.md, "Warm sessions"): which session, if any, the
next job of a party set runs in.

Per shape — a party set (the frozenset of its party names) and whether its jobs use an SPU
device — at most one live `WarmSession`: a session id and the fed and SPU ports of every party,
the same for each of its jobs. (A kind of job without SPU has sessions of its own: the nodes
build a session's devices once, with its first job.) `SessionRegistry.take`
hands it to one job at a time; a job that finds it busy runs cold (a job process and ports of
its own, `session=None`). A session whose job did not succeed (failed, cancelled, timed out,
queued again, fan-out refused — anything) is retired and never used again: the party set's next
job gets a new session on new ports, and the old ports go back to the `PortPool` through its
cooldown. A session idle for `idle_timeout_s - SESSION_IDLE_MARGIN_S` is retired likewise, so a
job never reaches a node that has just closed it; and so is a party's least recently used idle
session when a new one would exceed `per_party` (COORD_SESSIONS_PER_PARTY = the nodes'
NODE_MAX_SESSIONS), as that party's node closes it.

In memory only: after a coordinator restart the registry starts empty and sessions are not
restored. The nodes close their old sessions by idle timeout, or when a newer session of the
same party set arrives; the ports of attempts still running are held by `restore_ports`.

Thread safety: `take` runs under `JobService._dispatch_lock`, `finished` on the listener's and
the API's threads; a lock of the registry's own orders them (and its calls into the pool).
"""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal, NamedTuple

from coordinator.topology import JobPorts, PortPool
from node.contract import SESSION_IDLE_MARGIN_S

DispatchMode = Literal["warm_new", "warm_reused", "cold"]


def new_session_id() -> str:
    return f"ses-{uuid.uuid4().hex[:16]}"


@dataclass
class WarmSession:
    """One live session of one party set."""

    id: str
    parties: frozenset[str]
    spu: bool  # whether its jobs use an SPU device (the nodes' devices differ)
    ports: dict[str, JobPorts]  # the same for every job of the session
    idle_timeout_s: float  # sent to the nodes: they close it after this long without a job
    busy_execution: str | None = None  # the attempt running in it now
    warming: bool = False  # that attempt is a warm-up (services/prewarm.py): jobs wait for it
    last_done: float = 0.0  # monotonic time its last job ended (its creation, before any)
    jobs: int = 0  # jobs sent to it, the running one included

    def ref(self) -> dict[str, str | float]:
        """What every party's task params carry (node.contract.SessionRef)."""
        return {"id": self.id, "idle_timeout_s": self.idle_timeout_s}

    @property
    def mode(self) -> DispatchMode:
        """How its latest job was sent (metrics): the session's first job, or a later one."""
        return "warm_new" if self.jobs <= 1 else "warm_reused"

    @property
    def shape(self) -> SessionShape:
        return SessionShape(self.parties, self.spu)

    def expired(self, now: float) -> bool:
        """Idle so long that the nodes may close it before a job sent now reaches them."""
        return (
            self.busy_execution is None
            and now - self.last_done >= self.idle_timeout_s - SESSION_IDLE_MARGIN_S
        )


class SessionStarting(Exception):
    """The party set's session is busy with its warm-up: a job waits for it rather than run
    cold beside it (the warm-up ends in seconds, a cold job would start SecretFlow again)."""


class SessionShape(NamedTuple):
    """What the jobs of one session share: its parties and whether they use an SPU device."""

    parties: frozenset[str]
    spu: bool


class SessionRegistry:
    """The live sessions, at most one per shape, and the pool their ports are held in
    (under the session id, not the execution id)."""

    def __init__(
        self,
        ports: PortPool,
        *,
        idle_timeout_s: float = 600.0,
        per_party: int = 2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ports = ports
        self.idle_timeout_s = idle_timeout_s
        self.per_party = per_party  # the nodes' NODE_MAX_SESSIONS
        self._clock = clock
        self._live: dict[SessionShape, WarmSession] = {}
        self._lock = threading.Lock()

    def take(
        self, execution_id: str, parties: Iterable[str], *, spu: bool = True, warmup: bool = False
    ) -> WarmSession | None:
        """The session the attempt `execution_id` runs in, marked busy with it: the idle live
        session of its shape (`parties`, `spu`), else a new one (raises PortsExhausted when its
        ports cannot be had); None when the live session is busy (the attempt runs cold) —
        SessionStarting when it is busy with its warm-up. Returns a copy."""
        key = SessionShape(frozenset(parties), spu)
        with self._lock:
            now = self._clock()
            for s in [s for s in self._live.values() if s.expired(now)]:
                self._retire(s)  # any party set's: its ports are freed for this pick too
            session = self._live.get(key)
            if session is not None and session.busy_execution is not None:
                if session.warming:
                    raise SessionStarting(session.id)
                return None
            if session is None:
                self._make_room(key.parties)
                sid = new_session_id()
                ports = self.ports.acquire(sid, sorted(key.parties))
                session = WarmSession(
                    sid, key.parties, spu, ports, self.idle_timeout_s, last_done=now
                )
                self._live[key] = session
            session.busy_execution, session.warming = execution_id, warmup
            session.jobs += 1
            return self._copy(session)

    def finished(self, execution_id: str, succeeded: bool) -> None:
        """The attempt `execution_id` has ended: its session (if it runs in one) is idle again
        after a success, else retired. Idempotent; ignores attempts not running in a session."""
        with self._lock:
            session = self._running(execution_id)
            if session is None:
                return
            if succeeded:
                session.busy_execution, session.warming = None, False
                session.last_done = self._clock()
            else:
                self._retire(session)

    def running(self, execution_ids: Iterable[str]) -> set[str]:
        """Those of the attempts that are running in a session now."""
        with self._lock:
            busy = {s.busy_execution for s in self._live.values()}
            return {e for e in execution_ids if e in busy}

    def evict_idle(self, party: str) -> int:
        """Retire the idle sessions that hold ports of `party` (its ranges are exhausted: a job
        waiting for ports gets theirs after the pool's cooldown). Returns how many."""
        with self._lock:
            idle = [
                s for s in self._live.values() if party in s.parties and s.busy_execution is None
            ]
            for s in idle:
                self._retire(s)
            return len(idle)

    def snapshot(self) -> list[WarmSession]:
        """Copies of the live sessions (API, metrics), by party set (then SPU or not)."""
        with self._lock:
            return [self._copy(s) for _k, s in sorted(self._live.items(), key=_by_parties)]

    # --- under the lock ---------------------------------------------------------------------
    def _make_room(self, parties: frozenset[str]) -> None:
        """For a new session of `parties`: as each of their nodes does (NODE_MAX_SESSIONS, the
        least recently used idle session beyond it closed), retire here the sessions those
        nodes are about to close — else the next job of such a set would be sent to a session
        one node no longer has (SessionLost, a retry, a cold start)."""
        for party in sorted(parties):
            held = [s for s in self._live.values() if party in s.parties]
            idle = sorted((s for s in held if s.busy_execution is None), key=lambda s: s.last_done)
            for s in idle[: max(0, len(held) + 1 - self.per_party)]:
                self._retire(s)

    def _running(self, execution_id: str) -> WarmSession | None:
        return next((s for s in self._live.values() if s.busy_execution == execution_id), None)

    def _retire(self, session: WarmSession) -> None:
        if self._live.get(session.shape) is session:
            del self._live[session.shape]
        self.ports.release(session.id)  # idempotent; through the pool's cooldown

    @staticmethod
    def _copy(session: WarmSession) -> WarmSession:
        return dataclasses.replace(session, ports=dict(session.ports))


def _by_parties(item: tuple[SessionShape, WarmSession]) -> tuple[list[str], bool]:
    return sorted(item[0].parties), item[0].spu

"""A retry is not spent on a party that is gone: the next attempt of a job whose last attempt
failed while some party's task there never ended (it went silent) waits until each such party's
SecretFlow worker has been heard from again — a heartbeat other than the one it had when the job
was first held. (With three parties or more the party that reported its failure first may be
the one named, and the lost one only silent: so every silent party is waited for.)

Why: the first sign of a dead worker is often its peer's (alice's SPU link to bob fails within
seconds: PeerLost naming bob), while bob's own heartbeat only expires after HEARTBEAT_TTL_S. A
retry sent in between goes to a queue no worker reads and is lost as WorkerLost with it. A live
party writes a heartbeat every HEARTBEAT_INTERVAL_S, so the wait costs it at most that.

Heartbeats are compared with each other, never with the coordinator's clock: the parties'
clocks are theirs."""

from __future__ import annotations

import datetime as dt
import threading
import time
from dataclasses import dataclass
from typing import Protocol

import redis

from node.contract import HEARTBEAT_INTERVAL_S, WorkerHeartbeat

# a held job not seen for this long is forgotten (cancelled, deleted, sent by another path)
FORGET_AFTER_S = 3600.0


class Heartbeats(Protocol):
    def heartbeat(self, party: str) -> WorkerHeartbeat | None: ...


@dataclass(frozen=True)
class _Held:
    party: str
    beat: tuple[int, dt.datetime] | None  # (pid, at) of the heartbeat when first held
    seen: float  # monotonic, last asked
    heard: bool = False  # heard from since: stays open (other silent parties may still hold)


class RetryGate:
    def __init__(self) -> None:
        self._held: dict[str, _Held] = {}
        self._lock = threading.Lock()

    def why_not(
        self, clients: Heartbeats, job_id: str, failed_attempt: str, party: str, attempt: int
    ) -> str | None:
        """None once `party` has sent a heartbeat since the job's attempt `failed_attempt`
        (number `attempt`) failed naming it; else one line saying what the job waits for.
        The first call for an attempt only takes note of the heartbeat there is."""
        try:
            beat = clients.heartbeat(party)
        except redis.RedisError:  # unreachable: not heard from (readiness says why)
            beat = None
        now_beat = (beat.pid, beat.at) if beat else None
        key = f"{job_id}/{failed_attempt}/{party}"
        now = time.monotonic()
        with self._lock:
            self._forget_old(now)
            held = self._held.get(key)
            if held is None:
                self._held[key] = _Held(party, now_beat, now)
            elif held.heard or (now_beat is not None and now_beat != held.beat):
                self._held[key] = _Held(party, held.beat, now, heard=True)
                return None
            else:
                self._held[key] = _Held(party, held.beat, now)
        return (
            f"party {party} has not been heard from since attempt {attempt} failed without its "
            "report "
            f"(a running worker sends a heartbeat every {HEARTBEAT_INTERVAL_S} s)"
        )

    def _forget_old(self, now: float) -> None:
        for key in [k for k, h in self._held.items() if now - h.seen > FORGET_AFTER_S]:
            del self._held[key]

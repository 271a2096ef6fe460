"""The status listener: one thread per party reading that party's `task_status_stream` with a
consumer group (docs/architecture.md §2.3, §3).

Per batch: screen (`intake`: only well-formed events of the stream's own party) → apply in ONE database transaction → commit → XACK. The party threads only
read and parse; one applier thread applies whatever batches are waiting, from every party, in
one transaction (fewer, larger transactions and one database connection however many parties),
and each party thread acknowledges its own entries once that transaction has committed. A crash between commit and
XACK re-delivers the batch, which is harmless (event_id is unique, apply is idempotent); a crash
before the commit loses nothing (the entries stay pending and are read again at start-up, and
entries left pending by a consumer that is gone are taken over with XAUTOCLAIM).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis

from coordinator.db import is_outage
from coordinator.intake import IntakeCounters, Refusal, screen_entries
from coordinator.parties import PartyClients
from node.contract import STATUS_STREAM, StatusEvent
from node.contract.clients import ReplyTooLarge

log = logging.getLogger(__name__)

GROUP = "coordinator"
BATCH = 500
BLOCK_MS = 1000
CLAIM_EVERY_S = 15.0
CLAIM_MIN_IDLE_MS = 30_000
MAX_MERGED_EVENTS = 2000  # the applier merges waiting batches up to this many events


def ensure_group(client: redis.Redis, stream: str = STATUS_STREAM, group: str = GROUP) -> None:
    try:
        client.xgroup_create(stream, group, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


@dataclass
class _Batch:
    events: list[StatusEvent]
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


class Applier(threading.Thread):
    """Applies the batches the party threads hand over, several parties' at a time, each
    merged group in one transaction; a party thread waits for its batch before it XACKs."""

    def __init__(self, apply: Callable[[list[StatusEvent]], object], stop: threading.Event):
        super().__init__(name="listener-applier", daemon=True)
        self.apply = apply
        self.stop_event = stop
        self._queue: queue.Queue[_Batch] = queue.Queue()
        self.transactions = 0

    def submit(self, events: list[StatusEvent]) -> None:
        """Apply `events` (with whatever else is waiting); returns once committed, or raises
        what the apply raised (then nothing may be acknowledged)."""
        batch = _Batch(events)
        self._queue.put(batch)
        while not batch.done.wait(0.5):
            if self.stop_event.is_set() or not self.is_alive():
                raise RuntimeError("the status applier stopped before applying the batch")
        if batch.error is not None:
            raise batch.error

    def _apply_group(self, group: list[_Batch]) -> None:
        """All batches in one transaction; if that fails, each batch in its own, so that one
        party's batch the database refuses never fails another party's."""
        try:
            self.apply([e for b in group for e in b.events])
            self.transactions += 1
            return
        except Exception as exc:
            if len(group) == 1 or is_outage(exc):  # an outage fails them all alike
                for b in group:
                    b.error = exc
                return
        for b in group:
            try:
                self.apply(b.events)
                self.transactions += 1
            except Exception as exc:  # handed to that batch's party thread only
                b.error = exc

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                first = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            group, n = [first], len(first.events)
            while n < MAX_MERGED_EVENTS:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                group.append(more)
                n += len(more.events)
            self._apply_group(group)
            for b in group:
                b.done.set()
        # fail whatever is still waiting: its party thread must not acknowledge it
        while True:
            try:
                b = self._queue.get_nowait()
            except queue.Empty:
                return
            b.error = RuntimeError("the status listener is stopping")
            b.done.set()


class PartyListener(threading.Thread):
    def __init__(
        self,
        party: str,
        clients: PartyClients,
        apply: Callable[[list[StatusEvent]], object],
        *,
        consumer: str,
        stop: threading.Event,
        counters: IntakeCounters,
    ) -> None:
        super().__init__(name=f"listener-{party}", daemon=True)
        self.counters = counters
        self.party = party
        self.clients = clients
        self.apply = apply
        self.consumer = consumer
        self.stop_event = stop
        self.applied_batches = 0
        self.connected = threading.Event()
        self.last_error: str | None = None
        # time.monotonic() of the last completed read of the stream (of the start, before one):
        # the metrics' listener lag
        self.last_read = time.monotonic()

    def _handle(self, client: redis.Redis, entries) -> int:
        if not entries:
            return 0
        # every entry is acknowledged; only what this party may say about itself is applied
        ids, events = screen_entries(self.party, entries, self.counters)
        if events:
            self._apply(events)  # commits (Applier.submit), or raises: nothing is acknowledged
        client.xack(STATUS_STREAM, GROUP, *ids)
        self.applied_batches += 1
        return len(ids)

    def _apply(self, events: list[StatusEvent]) -> None:
        """Apply the batch; when the database refuses it for its data (not an outage), each
        event alone: an event refused alone is counted as Unstorable and acknowledged, so it
        can neither block this party's stream nor fail anyone else's events."""
        try:
            self.apply(events)
            return
        except Exception as exc:
            if is_outage(exc) or self.stop_event.is_set():
                raise
            log.warning(
                "listener %s: a batch failed (%s); applying its events one by one", self.party, exc
            )
        for e in events:
            try:
                self.apply([e])
            except Exception as exc:
                if is_outage(exc) or self.stop_event.is_set():
                    raise
                log.error(
                    "listener %s: event %s cannot be stored", self.party, e.event_id, exc_info=exc
                )
                self.counters.refuse(
                    self.party,
                    Refusal.UNSTORABLE,
                    f"event {e.event_id}",
                    f"task {e.task_request_id}: {type(exc).__name__}",
                )

    def _read(self, client: redis.Redis, read: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        """One read of the stream; a reply over the client's bounds (`ReplyTooLarge`: an entry
        longer than a result may be, or too many of them) is taken apart entry by entry."""
        try:
            return read(*args, **kw)
        except ReplyTooLarge as exc:
            log.warning("listener %s: %s; reading its entries one by one", self.party, exc)
            self._drain_singly(client)
            return None

    def _drain_singly(self, client: redis.Redis) -> None:
        """Every entry this consumer holds unacknowledged, read alone: one over the bounds is
        refused as Oversize (never loaded) and acknowledged; the others are handled."""
        while not self.stop_event.is_set():
            pending = client.xpending_range(
                STATUS_STREAM, GROUP, "-", "+", BATCH, consumername=self.consumer
            )
            if not pending:
                return
            for p in pending:
                eid = p["message_id"]
                try:
                    entries = client.xrange(STATUS_STREAM, eid, eid)
                except ReplyTooLarge as exc:
                    name = eid.decode() if isinstance(eid, bytes) else eid
                    self.counters.refuse(self.party, Refusal.OVERSIZE, f"entry {name}", str(exc))
                    entries = []
                if entries:
                    self._handle(client, entries)
                else:  # refused, or deleted meanwhile
                    client.xack(STATUS_STREAM, GROUP, eid)

    def _drain_own_pending(self, client: redis.Redis) -> None:
        """Entries this consumer read before a crash but never acknowledged."""
        while not self.stop_event.is_set():
            resp = self._read(
                client, client.xreadgroup, GROUP, self.consumer, {STATUS_STREAM: "0"}, count=BATCH
            )
            if resp is None:  # taken apart entry by entry: look again
                continue
            entries = resp[0][1] if resp else []
            if not entries:
                return
            self._handle(client, entries)

    def _claim(self, client: redis.Redis) -> None:
        """Take over entries another (dead) consumer left pending."""
        start = "0-0"
        while not self.stop_event.is_set():
            resp = self._read(
                client, client.xautoclaim, STATUS_STREAM, GROUP, self.consumer, CLAIM_MIN_IDLE_MS,
                start_id=start, count=BATCH,
            )  # fmt: skip
            if resp is None:  # what it claimed was handled one by one: claim from the start
                start = "0-0"
                continue
            start, entries = resp[0], resp[1]
            self._handle(client, entries)
            if start in (b"0-0", "0-0"):
                return

    def run(self) -> None:
        backoff = 0.5
        while not self.stop_event.is_set():
            try:
                client = self.clients.redis(self.party)
                ensure_group(client)
                self._drain_own_pending(client)
                self._claim(client)
                self.connected.set()
                self.last_read = time.monotonic()
                self.last_error = None
                backoff = 0.5
                next_claim = time.monotonic() + CLAIM_EVERY_S
                while not self.stop_event.is_set():
                    resp: Any = self._read(
                        client, client.xreadgroup, GROUP, self.consumer, {STATUS_STREAM: ">"},
                        count=BATCH, block=BLOCK_MS,
                    )  # fmt: skip
                    self.last_read = time.monotonic()
                    if resp:
                        self._handle(client, resp[0][1])
                    if time.monotonic() > next_claim:
                        self._claim(client)
                        next_claim = time.monotonic() + CLAIM_EVERY_S
            except Exception as exc:  # Redis down, DB down, …: retry; nothing was acknowledged
                self.connected.clear()
                msg = f"{type(exc).__name__}: {exc}"
                if msg != self.last_error:
                    log.warning("listener %s: %s (retrying)", self.party, msg)
                self.last_error = msg
                self.stop_event.wait(backoff)
                backoff = min(backoff * 2, 5.0)


class StatusListener:
    """Listeners for every party, started and stopped together."""

    def __init__(
        self,
        clients: PartyClients,
        apply: Callable[[list[StatusEvent]], object],
        *,
        consumer: str = "coordinator-1",
        counters: IntakeCounters | None = None,
    ) -> None:
        self.stop_event = threading.Event()
        self.counters = counters or IntakeCounters()
        self.applier = Applier(apply, self.stop_event)
        self.threads = [
            PartyListener(
                p,
                clients,
                self.applier.submit,
                consumer=consumer,
                stop=self.stop_event,
                counters=self.counters,
            )
            for p in clients.names
        ]

    def start(self) -> None:
        self.applier.start()
        for t in self.threads:
            t.start()

    def wait_connected(self, timeout: float = 10.0) -> bool:
        end = time.monotonic() + timeout
        return all(t.connected.wait(max(0.0, end - time.monotonic())) for t in self.threads)

    def stop(self, timeout: float = 5.0) -> None:
        self.stop_event.set()
        for t in self.threads:
            t.join(timeout)
        self.applier.join(timeout)

"""Per-party connections: a signing Celery client and a Redis client for each party's broker.

The coordinator talks to each party only through that party's Redis (docs/architecture.md §1): it sends
tasks to the party's queues, revokes them, reads the party's status stream and heartbeat.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import redis
from celery import states as celery_states

from coordinator.topology import PartySpec, Topology
from node.contract import (
    HEARTBEAT_KEY,
    MAX_RESULT_BYTES,
    SECRETFLOW_QUEUE,
    TASK_EXECUTE,
    TASK_HEALTH,
    TASK_LIST_DATASETS,
    WEB_QUEUE,
    NodeTaskError,
    WorkerHeartbeat,
)
from node.contract.clients import (
    ReplyBounds,
    ReplyTooLarge,
    SigningConfig,
    client_app,
    redis_client,
)

CELERY_RESULT_PREFIX = "celery-task-meta-"  # Celery's Redis result backend key
log = logging.getLogger(__name__)

BROKER_TIMEOUT_S = 3.0
# the largest reply the coordinator loads from a party's Redis: one value (a result, heartbeat
# or stream entry), one array (a batch of stream entries), one reply in all. A batch of 500
# honest entries is well under 1 MB; a batch over 4 MB is read again entry by entry (listener),
# so a party stuffing its stream costs the coordinator 4 MB a read at most.
READ_BOUNDS = ReplyBounds(max_bulk=MAX_RESULT_BYTES, max_items=4096, max_reply=4 * 1024 * 1024)
CALL_POLL_S = (0.02, 0.2)  # how often a web task's result is looked for: first, at most


class RemoteFailure(Exception):
    """A party's task failed with an exception other than the node's own `NodeTaskError`: kept
    as its type's name and message, never rebuilt as that class (the party chose both)."""

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(message)
        self.type_name = type_name

    def __str__(self) -> str:
        return f"{self.type_name}: {self.args[0]}"


def decode_result(raw: bytes | str) -> tuple[str, Any]:
    """(state, value) of a Celery result as the node stored it (JSON). A failure becomes the
    node's `NodeTaskError` when it is one, else a `RemoteFailure` — Celery's own decoding would
    instantiate whatever exception class the stored value names."""
    meta = json.loads(raw)
    if not isinstance(meta, dict) or not isinstance(meta.get("status"), str):
        raise ValueError("not a Celery result")
    state, value = meta["status"], meta.get("result")
    if state in celery_states.EXCEPTION_STATES and isinstance(value, dict):
        args = value.get("exc_message")
        args = args if isinstance(args, list) else [args]
        if (
            value.get("exc_type") == "NodeTaskError"
            and len(args) == 2
            and isinstance(args[1], dict)
        ):
            return state, NodeTaskError(str(args[0]), args[1])
        return state, RemoteFailure(str(value.get("exc_type"))[:64], str(args[0])[:1000])
    return state, value


def _broker_errors() -> tuple[type[BaseException], ...]:
    from kombu.exceptions import OperationalError

    return (OperationalError, redis.RedisError, OSError, TimeoutError)


class PartyUnreachable(RuntimeError):
    """A party's broker could not be reached (the message names the party and the cause)."""

    def __init__(self, party: str, cause: BaseException | str) -> None:
        self.party = party
        why = cause if isinstance(cause, str) else f"{type(cause).__name__}: {cause}"
        super().__init__(f"party {party}'s broker is unreachable or refused: {why}")


@dataclass
class _Conn:
    spec: PartySpec
    app: Any = None  # celery.Celery, created lazily
    redis: redis.Redis | None = None


class PartyClients:
    """Lazily created, cached clients for every party of the topology (thread-safe)."""

    def __init__(self, topology: Topology, signing: SigningConfig | None) -> None:
        self.topology = topology
        self.signing = signing
        self._conns = {name: _Conn(topology.party(name)) for name in topology.names}
        self._lock = threading.Lock()

    @property
    def names(self) -> tuple[str, ...]:
        return self.topology.names

    def _conn(self, party: str) -> _Conn:
        try:
            return self._conns[party]
        except KeyError:
            raise KeyError(f"unknown party {party!r}") from None

    def app(self, party: str):
        conn = self._conn(party)
        with self._lock:
            if conn.app is None:
                url = conn.spec.broker_url.get_secret_value()
                conn.app = client_app(url, url, conn.spec.redis_ca_file, signing=self.signing)
                conn.app.conf.broker_connection_timeout = BROKER_TIMEOUT_S
                conn.app.conf.broker_connection_max_retries = 1
                conn.app.conf.broker_connection_retry = False
                conn.app.conf.redis_socket_connect_timeout = BROKER_TIMEOUT_S
                conn.app.conf.redis_socket_timeout = 10.0
                conn.app.conf.broker_transport_options = {
                    **conn.app.conf.broker_transport_options,
                    "max_retries": 1,
                    "socket_connect_timeout": BROKER_TIMEOUT_S,
                    "socket_timeout": 10.0,
                }
            return conn.app

    def redis(self, party: str) -> redis.Redis:
        conn = self._conn(party)
        with self._lock:
            if conn.redis is None:
                conn.redis = redis_client(
                    conn.spec.broker_url.get_secret_value(),
                    conn.spec.redis_ca_file,
                    socket_connect_timeout=BROKER_TIMEOUT_S,
                    socket_timeout=30.0,
                    health_check_interval=15,
                    bounds=READ_BOUNDS,  # the party wrote what this client reads
                )
            return conn.redis

    # --- checks ---------------------------------------------------------------------------
    def ping(self, party: str) -> None:
        """Raise PartyUnreachable unless the party's broker answers PING."""
        try:
            self.redis(party).ping()
        except redis.RedisError as exc:
            raise PartyUnreachable(party, exc) from exc

    def ping_all(self, parties: Iterable[str]) -> None:
        for party in parties:
            self.ping(party)

    def heartbeat(self, party: str) -> WorkerHeartbeat | None:
        """The party's SecretFlow worker heartbeat, or None when it has expired (worker gone)."""
        try:
            raw = self.redis(party).get(HEARTBEAT_KEY.format(role="sf"))
        except ReplyTooLarge as exc:
            raise PartyUnreachable(party, f"its heartbeat is refused: {exc}") from None
        if not raw:
            return None
        try:
            return WorkerHeartbeat.from_json(raw)
        except ValueError as exc:  # the party wrote it: not a crash of ours
            raise PartyUnreachable(party, f"its heartbeat is not valid: {exc}") from None

    def readiness(self, party: str) -> str | None:
        """None when the party can take a job now; else one line naming the party and what is
        wrong (broker unreachable, no SecretFlow worker heartbeat, a problem its worker
        reports about its own stack, e.g. its Ray head down)."""
        try:
            beat = self.heartbeat(party)
        except PartyUnreachable as exc:
            return str(exc)
        except redis.RedisError as exc:
            return str(PartyUnreachable(party, exc))
        if beat is None:
            return (
                f"party {party}'s SecretFlow worker is not running (no heartbeat in its Redis "
                "for 15 s): start it with `python -m node worker`"
            )
        if beat.problems:
            return f"party {party} is not ready: {'; '.join(beat.problems)}"
        return None

    # --- tasks ----------------------------------------------------------------------------
    def send_execute(
        self, party: str, task_request_id: str, params: dict, *, expires_s: float | None = None
    ) -> None:
        """Send one party's task. `expires_s`: a worker that takes it later than that discards
        it (Celery marks it REVOKED) — by then the coordinator has given up on this attempt, and
        a worker coming back after an outage must not run stale attempts before the live one."""
        try:
            self.app(party).send_task(
                TASK_EXECUTE,
                args=[task_request_id, params],
                task_id=task_request_id,
                queue=SECRETFLOW_QUEUE,
                routing_key=SECRETFLOW_QUEUE,
                retry=False,
                expires=expires_s,
            )
        except _broker_errors() as exc:
            raise PartyUnreachable(party, exc) from exc

    def revoke(self, party: str, task_request_id: str, *, terminate: bool = True) -> bool:
        """Revoke (and SIGTERM, when running) one task; False when the broker is unreachable."""
        try:
            self.app(party).control.revoke(task_request_id, terminate=terminate, signal="SIGTERM")
            return True
        except Exception as exc:
            log.warning("could not revoke %s at %s: %s", task_request_id, party, exc)
            return False

    def stream_backlog(self, party: str, group: str) -> int | None:
        """Entries of the party's status stream that `group` has not yet read (lag) or not yet
        acknowledged (pending); None when Redis cannot tell."""
        from node.contract import STATUS_STREAM

        try:
            groups = self.redis(party).xinfo_groups(STATUS_STREAM)
        except redis.RedisError:
            return None
        for g in groups:
            name = g.get("name")
            if (name.decode() if isinstance(name, bytes) else name) == group:
                lag = g.get("lag")
                if lag is None:  # Redis < 7 or a trimmed stream: unknown
                    return None
                return int(lag) + int(g.get("pending") or 0)
        return None

    def task_result(self, party: str, task_request_id: str) -> tuple[str, Any]:
        """(state, value) of a task from the party's result backend, read with one bounded GET
        (`ReplyTooLarge` over MAX_RESULT_BYTES: never loaded; no window between a size check and
        the read for the party to swap the value)."""
        raw = self.redis(party).get(f"{CELERY_RESULT_PREFIX}{task_request_id}")
        if raw is None:
            return celery_states.PENDING, None
        return decode_result(raw)

    def call(self, party: str, task: str, *, timeout: float = 10.0) -> Any:
        """Run a web task at the party and return its value, read with the bounded client (not
        through Celery's result consumer, which loads whatever the party publishes)."""
        app = self.app(party)
        try:
            res = app.send_task(task, queue=WEB_QUEUE, routing_key=WEB_QUEUE, retry=False)
            app.backend.result_consumer.cancel_for(res.id)  # no pubsub copy of the result
        except Exception as exc:
            raise PartyUnreachable(party, exc) from exc
        key = f"{CELERY_RESULT_PREFIX}{res.id}"
        end, wait = time.monotonic() + timeout, CALL_POLL_S[0]
        try:
            while (raw := self.redis(party).get(key)) is None:
                if time.monotonic() > end:
                    raise TimeoutError(
                        f"party {party} did not answer {task} within {timeout:.0f} s"
                    )
                time.sleep(wait)
                wait = min(wait * 2, CALL_POLL_S[1])
        finally:
            self.redis(party).delete(key)
        state, value = decode_result(raw)
        if state != celery_states.SUCCESS:
            raise RuntimeError(f"party {party}'s {task} ended {state}: {value}")
        return value

    def health(self, party: str, *, timeout: float = 10.0) -> dict:
        return self.call(party, TASK_HEALTH, timeout=timeout)

    def datasets(self, party: str, *, timeout: float = 10.0) -> dict:
        return self.call(party, TASK_LIST_DATASETS, timeout=timeout)

    def close(self) -> None:
        with self._lock:
            for conn in self._conns.values():
                if conn.redis is not None:
                    conn.redis.close()
                    conn.redis = None
                if conn.app is not None:
                    conn.app.close()
                    conn.app = None

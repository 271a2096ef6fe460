"""Per-party connections: a signing Celery client and a Redis client for each party's broker.

The coordinator talks to each party only through that party's Redis (DESIGN §2): it sends
tasks to the party's queues, revokes them, reads the party's status stream and heartbeat.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import redis

from coordinator.topology import PartySpec, Topology
from node.contract import (
    HEARTBEAT_KEY,
    SECRETFLOW_QUEUE,
    TASK_EXECUTE,
    TASK_HEALTH,
    TASK_LIST_DATASETS,
    WEB_QUEUE,
    WorkerHeartbeat,
)
from node.contract.clients import SigningConfig, client_app, redis_client

CELERY_RESULT_PREFIX = "celery-task-meta-"  # Celery's Redis result backend key
log = logging.getLogger(__name__)

BROKER_TIMEOUT_S = 3.0


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
        raw = self.redis(party).get(HEARTBEAT_KEY.format(role="sf"))
        return WorkerHeartbeat.from_json(raw) if raw else None

    def readiness(self, party: str) -> str | None:
        """None when the party can take a job now; else one line naming the party and what is
        wrong (broker unreachable, no SecretFlow worker heartbeat, a problem its worker
        reports about its own stack, e.g. its Ray head down)."""
        try:
            beat = self.heartbeat(party)
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

    def celery_result(self, party: str, task_request_id: str) -> tuple[str, Any]:
        """(state, result-or-exception) of a task from the party's result backend."""
        res = self.app(party).AsyncResult(task_request_id)
        return res.state, res.result

    def result_bytes(self, party: str, task_request_id: str) -> int:
        """Size of a task's stored Celery result (0 when there is none), read before the result
        itself so an oversized one is never loaded."""
        return int(self.redis(party).strlen(f"{CELERY_RESULT_PREFIX}{task_request_id}"))

    def call(self, party: str, task: str, *, timeout: float = 10.0) -> Any:
        try:
            res = self.app(party).send_task(
                task, queue=WEB_QUEUE, routing_key=WEB_QUEUE, retry=False
            )
        except Exception as exc:
            raise PartyUnreachable(party, exc) from exc
        try:
            return res.get(timeout=timeout)
        finally:
            res.forget()

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

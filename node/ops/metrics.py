"""The node's Prometheus exporter: `python -m node metrics` (docs/node.md, "Metrics").

A process of its own beside the workers. Celery runs each task in a prefork child, so no worker
process sees all the tasks: everything is read at scrape time from what the node shares, this
party's Redis (queue lengths by LLEN, the workers' heartbeat keys, the status stream read on from
a cursor) and the process table (psutil). A Redis that does not answer makes the scrape say
`partyline_node_up 0`; it never fails it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import psutil
import redis
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from pydantic import ValidationError

from node.contract import (
    HEARTBEAT_KEY,
    QUEUES,
    STATUS_STREAM,
    TERMINAL_STATUSES,
    WORKER_ROLES,
    StatusEvent,
    TaskStatus,
)
from node.contract.clients import redis_client
from node.jobtypes.table import known_job_types, node_job_types
from node.rayhead import head
from node.settings import NodeSettings

log = logging.getLogger(__name__)

PREFIX = "partyline_node_"
PAGE = 1000  # stream entries per XRANGE
MAX_ENTRIES_PER_SCRAPE = 100_000  # the rest waits for the next scrape
LOOKBACK = 1000  # entries read back at the first contact, only to learn when open tasks began
MAX_OPEN_TASKS = 10_000  # start times remembered (oldest forgotten first)
TASK_DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 2 * 3600, 6 * 3600)
REDIS_TIMEOUT_S = 2.0
# kombu's Redis transport keeps a queue's prioritised messages in keys of their own
PRIORITY_SEP = "\x06\x16"
PRIORITY_STEPS = (0, 3, 6, 9)
ROLES = ("worker", "job", "ray_head")


def queue_keys(queue: str) -> list[str]:
    return [queue] + [f"{queue}{PRIORITY_SEP}{p}" for p in PRIORITY_STEPS if p]


def _stream_id(raw: Any) -> tuple[int, int]:
    ms, _, seq = _as_str(raw).partition("-")
    return int(ms), int(seq or 0)


class NodeExporter(Collector):
    """Reads this party's Redis and process table at each scrape."""

    def __init__(
        self,
        party: str,
        client: redis.Redis,
        *,
        job_types: Iterable[str] = ("psi",),
        ray_pid_file: Path | None = None,
    ) -> None:
        self.party = party
        self.client = client
        self.job_types = frozenset(job_types)
        self.ray_pid_file = ray_pid_file
        # kept here, outside any registry: collect() yields them after reading the stream
        doc = "Tasks finished, by task type and final status (SUCCESS, FAILURE, CANCELLED)"
        self.tasks = Counter(f"{PREFIX}tasks", doc, ["task_type", "status"], registry=None)
        doc = "Failed tasks, by task type and error type"
        labels = ["task_type", "error_type"]
        self.failures = Counter(f"{PREFIX}task_failures", doc, labels, registry=None)
        doc = "Seconds from a task's first status event (RECEIVED) to its final one"
        self.duration = Histogram(
            f"{PREFIX}task_duration_seconds",
            doc,
            ["task_type", "status"],
            buckets=TASK_DURATION_BUCKETS,
            registry=None,
        )
        self._cursor: str | None = None  # id of the last stream entry taken
        self._started: dict[str, float] = {}  # task_request_id → time of its first event
        self._lock = threading.Lock()  # one scrape at a time (the HTTP server is threaded)

    # --- the scrape -----------------------------------------------------------------------------
    def collect(self) -> Iterable[Metric]:
        with self._lock:
            try:
                queues, workers, up = *self._read_redis(), 1
            except redis.RedisError as exc:
                log.warning("metrics: this party's Redis does not answer: %s", exc)
                queues, workers, up = {}, {}, 0
            yield _gauge("up", "1 when this party's Redis answered the scrape", [], {(): up})
            yield _gauge("info", "This node's party", ["party"], {(self.party,): 1})
            if up:
                doc = "Messages waiting in a Celery queue"
                yield _gauge("queue_length", doc, ["queue"], {(q,): n for q, n in queues.items()})
                doc = "1 while the worker's heartbeat key exists (role sf or web)"
                yield _gauge("worker_up", doc, ["role"], {(r,): ok for r, ok in workers.items()})
            yield from self.tasks.collect()
            yield from self.failures.collect()
            yield from self.duration.collect()
            found = party_processes(self.party, _read_pid(self.ray_pid_file))
            doc = "Resident memory of this party's processes, by role (worker, job, ray_head)"
            yield _gauge("process_rss_bytes", doc, ["role"], {(r,): _rss(found[r]) for r in ROLES})
            doc = "This party's processes, by role"
            yield _gauge("processes", doc, ["role"], {(r,): len(found[r]) for r in ROLES})

    def _read_redis(self) -> tuple[dict[str, int], dict[str, int]]:
        pipe = self.client.pipeline(transaction=False)
        for queue in QUEUES:
            for key in queue_keys(queue):
                pipe.llen(key)
        for role in WORKER_ROLES:
            pipe.exists(HEARTBEAT_KEY.format(role=role))
        pipe.xrevrange(STATUS_STREAM, count=1)
        replies = pipe.execute()
        n = len(PRIORITY_STEPS)
        queues = {q: sum(map(int, replies[i * n : (i + 1) * n])) for i, q in enumerate(QUEUES)}
        beats = replies[len(QUEUES) * n : -1]
        workers = {role: int(bool(b)) for role, b in zip(WORKER_ROLES, beats, strict=True)}
        self._read_stream(replies[-1][0][0] if replies[-1] else None)
        return queues, workers

    # --- the status stream ----------------------------------------------------------------------
    def _read_stream(self, newest: Any) -> None:
        if self._cursor is None:  # first contact: count from here on, learn the open tasks
            back: Any = self.client.xrevrange(STATUS_STREAM, count=LOOKBACK)
            for _id, fields in reversed(back):
                self._take(fields, count=False)
            self._cursor = _as_str(back[0][0]) if back else "0-0"
            return
        if newest is None or _stream_id(newest) < _stream_id(self._cursor):
            self._cursor = "0-0"  # the stream is gone or was made again: all of it is new
            if newest is None:
                return
        read = 0
        while read < MAX_ENTRIES_PER_SCRAPE:
            entries: Any = self.client.xrange(STATUS_STREAM, min=f"({self._cursor}", count=PAGE)
            for entry_id, fields in entries:
                self._cursor = _as_str(entry_id)
                self._take(fields)
            read += len(entries)
            if len(entries) < PAGE:
                return

    def _take(self, fields: Any, *, count: bool = True) -> None:
        try:
            ev = StatusEvent.from_stream_fields(fields)
        except (ValidationError, ValueError, TypeError):
            log.debug("metrics: a stream entry that is not a status event")
            return
        at = ev.timestamp.timestamp()
        task_request_id = ev.task_request_id
        if ev.status not in TERMINAL_STATUSES:
            if task_request_id not in self._started:
                self._started[task_request_id] = at
                while len(self._started) > MAX_OPEN_TASKS:
                    del self._started[next(iter(self._started))]
            return
        began = self._started.pop(task_request_id, None)
        if not count:
            return
        task_type = ev.subtask_id if ev.subtask_id in self.job_types else "other"
        status = ev.status.value
        self.tasks.labels(task_type=task_type, status=status).inc()
        if ev.status == TaskStatus.FAILURE and ev.data.error is not None:
            self.failures.labels(task_type=task_type, error_type=ev.data.error.type.value).inc()
        seconds = at - began if began is not None else _total_s(ev.data.performance_metrics)
        if seconds is not None:
            self.duration.labels(task_type=task_type, status=status).observe(max(0.0, seconds))


def _gauge(
    name: str, doc: str, labels: list[str], samples: dict[tuple[str, ...], float]
) -> GaugeMetricFamily:
    family = GaugeMetricFamily(f"{PREFIX}{name}", doc, labels=labels)
    for values, value in samples.items():
        family.add_metric(list(values), value)
    return family


def _rss(procs: list[psutil.Process]) -> int:
    total = 0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            total += proc.memory_info().rss
    return total


def _as_str(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def _total_s(metrics: dict[str, Any] | None) -> float | None:
    value = (metrics or {}).get("total_s")
    return float(value) if isinstance(value, int | float) else None


def _read_pid(path: Path | None) -> int | None:
    try:
        return int(path.read_text().strip()) if path else None
    except (OSError, ValueError):
        return None


def _module_args(cmdline: Sequence[str]) -> list[str]:
    """What follows `-m` in a command line ([] when it runs no module)."""
    for i, arg in enumerate(cmdline[:-1]):
        if arg == "-m":
            return list(cmdline[i + 1 :])
    return []


def _is_worker(cmdline: list[str], proc: psutil.Process, party: str) -> bool:
    """`python -m node worker` run for `party` (NODE_PARTY), or a Celery worker of the party
    whose process title Celery changed ("[celeryd: sf.alice@host:MainProcess] …")."""
    if _module_args(cmdline)[:2] == ["node", "worker"]:
        with contextlib.suppress(psutil.Error):
            env = {k.upper(): v for k, v in proc.environ().items()}
            return env.get("NODE_PARTY") == party
        return False
    title = " ".join(cmdline).lstrip("[")
    return title.startswith("celeryd: ") and any(f" {r}.{party}@" in title for r in WORKER_ROLES)


def party_processes(party: str, ray_pid: int | None = None) -> dict[str, list[psutil.Process]]:
    """This party's processes visible here, by role: `worker` (its Celery workers, `python -m
    node worker`, their pool children), `job` (job processes, `python -m node.sfjob.executor`, and
    what they start), `ray_head` (the Ray head started by `python -m node ray-head`, and its
    processes). The exporter itself is left out."""
    tree: dict[int, psutil.Process] = {}
    for root in psutil.process_iter(["cmdline"]):
        if _is_worker(root.info["cmdline"] or [], root, party):
            with contextlib.suppress(psutil.Error):
                for proc in [root, *root.children(recursive=True)]:
                    tree.setdefault(proc.pid, proc)
    jobs: dict[int, psutil.Process] = {}
    for proc in list(tree.values()):
        with contextlib.suppress(psutil.Error):
            if _module_args(proc.cmdline())[:1] == ["node.sfjob.executor"]:
                for p in [proc, *proc.children(recursive=True)]:
                    jobs[p.pid] = p
    ray: dict[int, psutil.Process] = {}
    if ray_pid is not None:
        with contextlib.suppress(psutil.Error):
            head_proc = psutil.Process(ray_pid)
            ray = {p.pid: p for p in [head_proc, *head_proc.children(recursive=True)]}
    own = os.getpid()
    return {
        "worker": [p for pid, p in tree.items() if pid not in jobs and pid != own],
        "job": [p for pid, p in jobs.items() if pid != own],
        "ray_head": [p for pid, p in ray.items() if pid not in tree and pid != own],
    }


# --- the exporter process -------------------------------------------------------------------------
def exporter(settings: NodeSettings) -> NodeExporter:
    """The exporter of this node: its Redis (broker URL and CA), its job types, its Ray head."""
    t = REDIS_TIMEOUT_S
    client = redis_client(
        settings.broker_url, settings.redis_ca_file, socket_timeout=t, socket_connect_timeout=t
    )
    pid_file = head.pid_file(settings)
    return NodeExporter(
        settings.party,
        client,
        job_types=known_job_types(node_job_types(settings)),
        ray_pid_file=pid_file,
    )


def serve(collector: Collector, host: str, port: int) -> tuple[Any, threading.Thread]:
    """Serve `collector` at /metrics on host:port (a registry of its own); returns the server
    (`.server_port`, `.shutdown()`) and its thread."""
    registry = CollectorRegistry()
    registry.register(collector)
    return start_http_server(port, addr=host, registry=registry)


def run(settings: NodeSettings, host: str, port: int) -> int:
    """`python -m node metrics`: serve until SIGTERM or SIGINT."""
    server, _thread = serve(exporter(settings), host, port)
    log.info("party %s: metrics on http://%s:%d/metrics", settings.party, host, server.server_port)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.shutdown()
    server.server_close()
    return 0

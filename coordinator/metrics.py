"""The coordinator's Prometheus metrics (docs/coordinator.md, "Metrics").

One `CoordinatorMetrics` per coordinator, with a registry of its own (never the process-global
default), served by prometheus_client's own HTTP server on `COORD_METRICS_HOST:PORT` — a port
apart from the API/UI, so a deployment can keep it on an internal network.

Where the numbers come from:

- jobs by state and protocol: the database, one COUNT … GROUP BY at scrape time;
- job durations: every commit that moves a job into a terminal state, whichever code path did it
  (events, cancel, deadline, failed fan-out): a session hook sees the status change when the
  transaction flushes and observes it once the transaction has committed;
- status events: what `JobService.apply` committed (`Applied.outcomes`) plus the refusals the
  intake counts (`IntakeCounters`, also on /healthz);
- listener lag: what each party's listener thread remembers of its last read;
- dispatch refusals: `services.dispatch` tells each time a queued job cannot be sent;
- dispatches: `services.dispatch` tells each job sent, by how (a new warm session, a reused one,
  or cold: a job process and ports of its own).

A scrape is one consistent view of the jobs and their durations: it counts the jobs and then
reads the histogram under a lock that a commit ending a job holds from the database's COMMIT
until its observation, so a job a scrape counts as ended is in that scrape's histogram too, and a
job it does not count is not (without it, a commit landing while a scrape counted the jobs showed
the job SUCCEEDED with no duration observed).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import CollectorRegistry, Histogram, start_http_server
from prometheus_client import Counter as PromCounter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Connection, Engine, event, func, inspect, select
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker

from coordinator.merge import TERMINAL_JOB_STATES, JobState
from coordinator.models import Job
from coordinator.services.attempts import aware
from node.contract import PSI_PROTOCOLS, utcnow

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from coordinator.intake import IntakeCounters

log = logging.getLogger(__name__)

PREFIX = "partyline_coordinator_"
# a PSI takes seconds (small tables) to hours (large ones, slow links)
JOB_DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 2 * 3600, 6 * 3600, 24 * 3600)
EVENT_RESULTS = ("applied", "duplicate", "refused")
# refusals that are not status events (a Celery result too large): not in the events counter
_NOT_EVENTS = frozenset({"ResultOversize"})
_PENDING = "partyline_metrics_finished_jobs"  # Session.info key: terminal jobs of this transaction
_HOLDS = "partyline_metrics_holds_scrape_lock"  # Session.info key: its commit holds the lock
# a commit waits at most this long for a scrape to finish reading (a scrape stuck on an answering
# database must not stall the job service; past it the commit goes on, unsynchronised)
SCRAPE_LOCK_WAIT_S = 10.0


class ListenerView(Protocol):
    """What the metrics read from one party's listener thread (coordinator.listener)."""

    party: str
    connected: threading.Event
    last_read: float  # time.monotonic() of its last completed read (or of its start)


class CoordinatorMetrics:
    """The coordinator's metrics: a registry, what the code paths record into it, and the
    collector that reads the database and the listeners at scrape time."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # not registered: the scrape collector reads it right after counting the jobs, under
        # the scrape lock (the registry would collect it on its own, before the count)
        self.job_duration = Histogram(
            f"{PREFIX}job_duration_seconds",
            "Seconds from a job's last dispatch (its submission if it was never sent) to its "
            "terminal state",
            ["protocol", "state"],
            buckets=JOB_DURATION_BUCKETS,
            registry=None,
        )
        self.dispatch_refusals = PromCounter(
            f"{PREFIX}dispatch_refusals",
            "Times a queued job could not be sent, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.dispatches = PromCounter(
            f"{PREFIX}dispatches",
            "Jobs sent to their parties, by mode: warm_new (the first job of a new warm "
            "session), warm_reused (a later job of one), cold (a job process of its own)",
            ["mode"],
            registry=self.registry,
        )
        self._events: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()
        # held by a scrape while it counts the jobs and reads the histogram, and by a commit
        # that ends jobs from its COMMIT until it has observed them
        self.scrape_lock = threading.Lock()
        self._committing = threading.local()  # .session: this thread's session in its commit
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    # --- what the code paths record ------------------------------------------------------------
    def count_events(self, outcomes: Mapping[tuple[str, str], int]) -> None:
        """Add committed status events: {(party, "applied" | "duplicate"): n}."""
        with self._lock:
            self._events.update(outcomes)

    def events(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self._events)

    def dispatch_refused(self, reason: str) -> None:
        self.dispatch_refusals.labels(reason=reason).inc()

    def dispatched(self, mode: str) -> None:
        self.dispatches.labels(mode=mode).inc()

    def job_finished(self, protocol: str, state: str, seconds: float) -> None:
        self.job_duration.labels(protocol=protocol, state=state).observe(max(0.0, seconds))

    # --- wiring ---------------------------------------------------------------------------------
    def watch(
        self,
        *,
        db: sessionmaker[Session],
        intake: IntakeCounters,
        listeners: Callable[[], Sequence[ListenerView]],
    ) -> None:
        """Observe the jobs that `sessions` commits into a terminal state, and read the database,
        the intake counters and the listeners at scrape time."""
        engine = db.kw.get("bind")
        if not isinstance(engine, Engine):
            raise TypeError("the metrics watch a sessionmaker bound to an Engine")
        event.listen(db, "before_flush", _before_flush)
        event.listen(db, "before_commit", self._before_commit)
        event.listen(engine, "commit", self._before_database_commit)
        event.listen(db, "after_commit", self._after_commit)
        event.listen(db, "after_rollback", _after_rollback)
        event.listen(db, "after_transaction_end", self._after_transaction_end)
        self.registry.register(_ScrapeCollector(self, db, intake, listeners))

    def _before_commit(self, session: Session) -> None:
        # before the commit's last flush: which jobs it ends is known at the COMMIT itself
        self._committing.session = session

    def _before_database_commit(self, _conn: Connection) -> None:
        """The engine's COMMIT is about to be sent (after the last flush): a commit that ends jobs
        takes the scrape lock, so no scrape counts them ended before they are observed."""
        session: Session | None = getattr(self._committing, "session", None)
        if session is None or not session.info.get(_PENDING) or _HOLDS in session.info:
            return
        if self.scrape_lock.acquire(timeout=SCRAPE_LOCK_WAIT_S):
            session.info[_HOLDS] = True
        else:
            log.warning("metrics: a scrape held its lock over %ss; committing", SCRAPE_LOCK_WAIT_S)

    def _after_commit(self, session: Session) -> None:
        try:
            for protocol, state, seconds in session.info.pop(_PENDING, []):
                self.job_finished(protocol, state, seconds)
        finally:
            self._release(session)

    def _after_transaction_end(self, session: Session, transaction: SessionTransaction) -> None:
        if transaction.parent is not None:
            return
        # the outermost transaction is over, committed or not (a failed COMMIT: no after_commit)
        session.info.pop(_PENDING, None)
        self._release(session)
        if getattr(self._committing, "session", None) is session:
            self._committing.session = None

    def _release(self, session: Session) -> None:
        if session.info.pop(_HOLDS, False):
            self.scrape_lock.release()

    # --- the HTTP server ------------------------------------------------------------------------
    def serve(self, host: str, port: int) -> int:
        """Serve /metrics on host:port (prometheus_client's own server, in a daemon thread);
        returns the port bound (port 0 picks a free one)."""
        if self._server is not None:
            raise RuntimeError("the metrics server is already running")
        self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        bound = int(self._server.server_port)
        log.info("metrics on http://%s:%d/metrics", host, bound)
        return bound

    def close(self) -> None:
        server, thread, self._server, self._thread = self._server, self._thread, None, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(5)


def job_protocol(job: Job) -> str:
    protocol = (job.request or {}).get("protocol")
    return protocol if isinstance(protocol, str) and protocol in PSI_PROTOCOLS else "unknown"


def _before_flush(session: Session, _context: Any, _instances: Any) -> None:
    """Note every job this flush moves into a terminal state (observed after the commit)."""
    now = utcnow()
    for obj in session.dirty:
        if not isinstance(obj, Job):
            continue
        history = inspect(obj).attrs.status.history
        if not history.added or history.added[-1] not in TERMINAL_JOB_STATES:
            continue
        if history.deleted and history.deleted[0] in TERMINAL_JOB_STATES:
            continue  # was terminal already
        start = aware(obj.dispatched_at or obj.created_at) or now
        end = aware(obj.finished_at) or now
        pending = session.info.setdefault(_PENDING, [])
        pending.append((job_protocol(obj), str(history.added[-1]), (end - start).total_seconds()))


def _after_rollback(session: Session) -> None:
    session.info.pop(_PENDING, None)


class _ScrapeCollector(Collector):
    """Everything read at scrape time: jobs by state, status events, listener lag."""

    def __init__(
        self,
        metrics: CoordinatorMetrics,
        db: sessionmaker[Session],
        intake: IntakeCounters,
        listeners: Callable[[], Sequence[ListenerView]],
    ) -> None:
        self.metrics = metrics
        self.db = db
        self.intake = intake
        self.listeners = listeners

    def collect(self) -> Iterable[Metric]:
        counts, durations = self._jobs_and_durations()
        yield from self._jobs(counts)
        yield from durations
        yield from self._events()
        yield from self._listeners()

    def _jobs_and_durations(self) -> tuple[dict[tuple[str, str], int] | None, list[Metric]]:
        """The jobs by (state, protocol) (None when the database did not answer) and the
        duration histogram, read together: no job ends between the two reads."""
        with self.db() as s:
            try:
                # a pooled connection first: a commit waiting for the lock may hold one
                s.connection()
            except Exception as exc:  # a scrape reports the database down; it does not fail
                log.warning("metrics: cannot count jobs: %s", exc)
                return None, list(self.metrics.job_duration.collect())
            with self.metrics.scrape_lock:
                try:
                    counts: dict[tuple[str, str], int] | None = job_counts(s)
                except Exception as exc:
                    log.warning("metrics: cannot count jobs: %s", exc)
                    counts = None
                return counts, list(self.metrics.job_duration.collect())

    def _jobs(self, counts: dict[tuple[str, str], int] | None) -> Iterable[Metric]:
        up = GaugeMetricFamily(
            f"{PREFIX}database_up", "1 when the last scrape could read the database, else 0"
        )
        if counts is None:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        jobs = GaugeMetricFamily(
            f"{PREFIX}jobs",
            "Jobs in the database, by state and protocol",
            labels=["state", "protocol"],
        )
        protocols = sorted(set(PSI_PROTOCOLS) | {p for _s, p in counts})
        for state in JobState:
            for protocol in protocols:
                jobs.add_metric([state.value, protocol], counts.get((state.value, protocol), 0))
        yield jobs

    def _events(self) -> Iterable[Metric]:
        counts: Counter[tuple[str, str]] = Counter(self.metrics.events())
        refusals = CounterMetricFamily(
            f"{PREFIX}intake_refusals",
            "Entries refused from a party's stream (and oversized Celery results), by reason",
            labels=["party", "reason"],
        )
        for party, reasons in self.intake.snapshot().items():
            for reason, n in reasons.items():
                refusals.add_metric([party, reason], n)
                if reason not in _NOT_EVENTS:
                    counts[(party, "refused")] += n
        events = CounterMetricFamily(
            f"{PREFIX}status_events",
            "Status events read from the parties' streams, by party and result "
            "(applied, duplicate, refused)",
            labels=["party", "result"],
        )
        parties = sorted({p for p, _r in counts} | {t.party for t in self.listeners()})
        for party in parties:
            for result in EVENT_RESULTS:
                events.add_metric([party, result], counts.get((party, result), 0))
        yield events
        yield refusals

    def _listeners(self) -> Iterable[Metric]:
        lag = GaugeMetricFamily(
            f"{PREFIX}listener_lag_seconds",
            "Seconds since the party's listener last completed a read of its stream",
            labels=["party"],
        )
        connected = GaugeMetricFamily(
            f"{PREFIX}listener_connected",
            "1 while the party's listener is connected to its Redis, else 0",
            labels=["party"],
        )
        now = time.monotonic()
        for t in self.listeners():
            lag.add_metric([t.party], max(0.0, now - t.last_read))
            connected.add_metric([t.party], 1 if t.connected.is_set() else 0)
        yield lag
        yield connected


def job_counts(s: Session) -> dict[tuple[str, str], int]:
    """{(state, protocol): jobs}: one COUNT … GROUP BY over the jobs table."""
    protocol = Job.request["protocol"].as_string()
    rows = s.execute(
        select(Job.status, protocol, func.count()).group_by(Job.status, protocol)
    ).all()
    out: dict[tuple[str, str], int] = {}
    for state, proto, n in rows:
        key = (str(state), proto if proto in PSI_PROTOCOLS else "unknown")
        out[key] = out.get(key, 0) + int(n)
    return out

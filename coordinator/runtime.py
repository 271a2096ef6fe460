"""The running coordinator: database, party clients, job service, status listener and the
reconciliation loop, started and stopped together (the FastAPI app's lifespan owns one)."""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
from collections.abc import Iterable

from coordinator.db import make_engine, migrate, session_factory
from coordinator.intake import IntakeCounters
from coordinator.jobkinds.table import job_kinds
from coordinator.listener import StatusListener
from coordinator.metrics import CoordinatorMetrics
from coordinator.parties import PartyClients
from coordinator.services.jobs import JobService
from coordinator.settings import CoordinatorSettings
from coordinator.topology import Topology, load_topology
from coordinator.ui_sessions import UiSessions
from node.contract.clients import SigningConfig

log = logging.getLogger(__name__)


class ChangeFeed:
    """Per-job change counters; SSE streams poll them (cheap, works across threads). The
    `MAX_JOBS` most recently changed jobs are kept: a stream of a job dropped since sees its
    counter change (to 0), reads the job again and goes on — one spare update, never a lost one."""

    MAX_JOBS = 10_000

    def __init__(self) -> None:
        self._versions: collections.OrderedDict[str, int] = collections.OrderedDict()
        self._lock = threading.Lock()
        self.total = 0

    def notify(self, job_ids: Iterable[str]) -> None:
        with self._lock:
            for j in job_ids:
                self._versions[j] = self._versions.pop(j, 0) + 1
                self.total += 1
            while len(self._versions) > self.MAX_JOBS:
                self._versions.popitem(last=False)

    def version(self, job_id: str | None = None) -> int:
        with self._lock:
            return self.total if job_id is None else self._versions.get(job_id, 0)

    async def wait(self, job_id: str | None, seen: int, timeout: float) -> int:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while loop.time() < end:
            v = self.version(job_id)
            if v != seen:
                return v
            await asyncio.sleep(0.2)
        return self.version(job_id)


class Coordinator:
    def __init__(self, settings: CoordinatorSettings, topology: Topology | None = None) -> None:
        self.settings = settings
        self.topology = topology or load_topology(settings.topology_file)
        self.engine = make_engine(settings.database_url)
        self.db = session_factory(self.engine)
        self.signing = SigningConfig(
            key_file=settings.signing_key_file,
            cert_file=settings.signing_cert_file,
            trusted=settings.trusted_node_certs,
        )
        self.clients = PartyClients(self.topology, self.signing)
        self.feed = ChangeFeed()
        self.intake = IntakeCounters()  # what the parties' streams sent that was refused
        self.ui_sessions = UiSessions(settings.session_lifetime_s)
        self.metrics = CoordinatorMetrics()  # served only with COORD_METRICS_PORT
        self.metrics_port: int | None = None  # the port bound, once served
        self.jobs: JobService | None = None
        self.listener: StatusListener | None = None
        self._stop = threading.Event()
        self._reconciler: threading.Thread | None = None

    def start(self, *, run_migrations: bool = True) -> Coordinator:
        self.metrics.watch(
            db=self.db,
            intake=self.intake,
            listeners=lambda: self.listener.threads if self.listener else [],
        )
        if self.settings.metrics_port is not None:  # first: a port taken fails the start at once
            self.metrics_port = self.metrics.serve(
                self.settings.metrics_host, self.settings.metrics_port
            )
        try:
            return self._start(run_migrations)
        except BaseException:
            self.metrics.close()
            raise

    def _start(self, run_migrations: bool) -> Coordinator:
        if run_migrations:
            migrate(self.settings.database_url)
        self.jobs = JobService(
            topology=self.topology,
            clients=self.clients,
            db=self.db,
            start_timeout_s=self.settings.start_timeout_s,
            default_deadline_s=self.settings.default_deadline_s,
            max_attempts=self.settings.max_attempts,
            on_change=self.feed.notify,
            result_fallback_grace_s=self.settings.result_fallback_grace_s,
            counters=self.intake,
            metrics=self.metrics,
            warm_sessions=self.settings.warm_sessions,
            session_idle_s=self.settings.warm_session_idle_s,
            sessions_per_party=self.settings.sessions_per_party,
            kinds=job_kinds(self.settings.job_kinds),
            prewarm=self.settings.prewarm if self.settings.warm_sessions else (),
        )
        self.listener = StatusListener(
            self.clients,
            self.jobs.apply,
            consumer=self.settings.consumer_name,
            counters=self.intake,
        )
        self.listener.start()
        self._reconciler = threading.Thread(
            target=self._reconcile_loop, name="reconciler", daemon=True
        )
        self._reconciler.start()
        return self

    def _reconcile_loop(self) -> None:
        jobs = self.jobs
        assert jobs is not None, "start() creates the job service before the reconciler"
        while not self._stop.is_set():
            try:
                jobs.reconcile()
            except Exception:
                log.exception("reconciliation pass failed (will retry)")
            self._stop.wait(self.settings.reconcile_interval_s)

    def stop(self) -> None:
        self._stop.set()
        self.metrics.close()
        if self.listener:
            self.listener.stop()
        if self._reconciler:
            self._reconciler.join(10)
        if self.jobs:
            self.jobs.close()
        self.clients.close()
        self.engine.dispose()

"""The coordinator's Prometheus metrics, scraped over HTTP from their own port while jobs run
against three real redis-servers (status events written as a node writes them)."""

from __future__ import annotations

import threading

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event

import coordinator.metrics as metrics_module
from coordinator.api.main import create_app
from coordinator.db import make_engine, migrate, session_factory, transaction
from coordinator.intake import IntakeCounters
from coordinator.merge import JobState
from coordinator.metrics import CoordinatorMetrics
from coordinator.models import Job
from node.contract import STATUS_STREAM, Stage, StatusEvent, TaskStatus, utcnow
from tests.prometheus import Samples, scrape, value

from .helpers import PARTIES, TOKEN, _settings
from .test_api import _emit_all, _heartbeat, _notifier, psi_body, wait_for


@pytest.fixture()
def metered(env, ports, db_url):
    for p in PARTIES:
        _heartbeat(env, p)
    port = ports.one()
    app = create_app(_settings(env, metrics_port=port, database_url=db_url))
    with TestClient(app, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        client.env = env
        client.coord = app.state.coordinator
        client.metrics_url = f"http://127.0.0.1:{port}/metrics"
        assert client.coord.metrics_port == port
        yield client
    with pytest.raises(httpx.TransportError):  # stopped with the app
        httpx.get(client.metrics_url, timeout=2)


JOBS = "partyline_coordinator_jobs"
DURATION = "partyline_coordinator_job_duration_seconds"
EVENTS = "partyline_coordinator_status_events_total"
RR22 = "PROTOCOL_RR22"


def test_a_job_through_its_states_moves_the_gauges_counters_and_histogram(metered):
    url = metered.metrics_url
    before = scrape(url)
    assert value(before, "partyline_coordinator_database_up") == 1
    assert value(before, JOBS, state="QUEUED", protocol=RR22) == 0  # every state, also at 0
    assert value(before, f"{DURATION}_count", protocol=RR22, state="SUCCEEDED") == 0

    job = metered.post("/api/v1/jobs/psi", json=psi_body()).json()
    sent = scrape(url)
    assert value(sent, JOBS, state="DISPATCHED", protocol=RR22) == 1

    _emit_all(metered, job, TaskStatus.SUCCESS)  # RECEIVED, RUNNING, SUCCESS at alice and bob
    alice = metered.env["servers"]["alice"].client()
    first = alice.xrange(STATUS_STREAM, count=1)[0][1]
    alice.xadd(STATUS_STREAM, first)  # the same event again
    # carol's stream claims an event of alice: refused (OtherParty)
    forged = StatusEvent.from_stream_fields(first).model_copy(update={"event_id": "f" * 32})
    metered.env["servers"]["carol"].client().xadd(STATUS_STREAM, forged.to_stream_fields())

    done = wait_for(
        lambda: (
            (s := scrape(url))
            and value(s, EVENTS, party="alice", result="duplicate") == 1
            and value(s, EVENTS, party="carol", result="refused") == 1
            and value(s, JOBS, state="SUCCEEDED", protocol=RR22) == 1
            and s
        )
    )
    assert value(done, JOBS, state="DISPATCHED", protocol=RR22) == 0
    assert value(done, EVENTS, party="alice", result="applied") == 3
    assert value(done, EVENTS, party="bob", result="applied") == 3
    assert value(done, EVENTS, party="bob", result="duplicate") == 0
    refusals = "partyline_coordinator_intake_refusals_total"
    assert value(done, refusals, party="carol", reason="OtherParty") == 1
    # observed once, when the job became SUCCEEDED; a quick job lands in the first bucket
    assert value(done, f"{DURATION}_count", protocol=RR22, state="SUCCEEDED") == 1
    assert value(done, f"{DURATION}_bucket", protocol=RR22, state="SUCCEEDED", le="+Inf") == 1
    assert value(done, f"{DURATION}_bucket", protocol=RR22, state="SUCCEEDED", le="60.0") == 1
    for party in PARTIES:
        assert value(done, "partyline_coordinator_listener_connected", party=party) == 1
        lag = done[("partyline_coordinator_listener_lag_seconds", frozenset({("party", party)}))]
        assert 0 <= lag < 10

    # the API/UI port does not serve them
    r = metered.get("/metrics")
    assert r.status_code == 404
    assert "partyline_coordinator" not in r.text


def test_cancel_and_a_held_dispatch_are_counted(metered):
    url = metered.metrics_url
    first = metered.post("/api/v1/jobs/psi", json=psi_body(protocol="ECDH")).json()
    second = metered.post("/api/v1/jobs/psi", json=psi_body()).json()  # queued: alice is busy
    n = _notifier(metered, first, "alice")
    n.emit(TaskStatus.RECEIVED, Stage.TASK_RECEIVED)
    wait_for(lambda: value(scrape(url), EVENTS, party="alice", result="applied") == 1)
    _heartbeat(metered.env, "bob", problems=("Ray head: nothing answers",))
    metered.post(f"/api/v1/jobs/{first['id']}/cancel")  # frees the slot; bob is not ready
    s = wait_for(
        lambda: (
            (s := scrape(url))
            and value(s, "partyline_coordinator_dispatch_refusals_total", reason="party_not_ready")
            >= 1
            and s
        )
    )
    assert value(s, JOBS, state="CANCELLED", protocol="PROTOCOL_ECDH") == 1
    assert value(s, JOBS, state="QUEUED", protocol=RR22) == 1
    assert value(s, f"{DURATION}_count", protocol="PROTOCOL_ECDH", state="CANCELLED") == 1
    assert value(s, f"{DURATION}_count", protocol=RR22, state="CANCELLED") == 0
    # the job cancelled again is not observed twice; the held one is sent once bob is back
    _heartbeat(metered.env, "bob")
    s = wait_for(
        lambda: (s := scrape(url)) and value(s, JOBS, state="DISPATCHED", protocol=RR22) == 1 and s
    )
    assert value(s, f"{DURATION}_count", protocol="PROTOCOL_ECDH", state="CANCELLED") == 1
    assert metered.get(f"/api/v1/jobs/{second['id']}").json()["status"] == "DISPATCHED"


def test_no_metrics_port_is_opened_unless_configured(env):
    app = create_app(_settings(env))
    with TestClient(app):
        coord = app.state.coordinator
        assert coord.settings.metrics_port is None
        assert coord.metrics_port is None
        assert coord.metrics._server is None


# --- a scrape is one consistent view of the jobs and their durations --------------------------
# (a job the scrape counts as ended is in its histogram; one it does not count is not in it)


def collect(metrics: CoordinatorMetrics) -> Samples:
    """One scrape, read from the registry without the HTTP server."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in metrics.registry.collect()
        for s in family.samples
    }


def ended(samples: Samples) -> tuple[float, float]:
    """(jobs SUCCEEDED, durations observed for SUCCEEDED) of one scrape."""
    return (
        value(samples, JOBS, state="SUCCEEDED", protocol=RR22),
        value(samples, f"{DURATION}_count", protocol=RR22, state="SUCCEEDED"),
    )


@pytest.fixture()
def sessions(db_url):
    migrate(db_url)
    engine = make_engine(db_url)
    factory = session_factory(engine)
    with transaction(factory) as s:
        s.add(
            Job(
                id="job-1",
                status=JobState.DISPATCHED,
                request={"protocol": RR22},
                parties={"names": ["alice", "bob"]},
                dispatched_at=utcnow(),
            )
        )
    yield factory
    engine.dispose()


def end_job(sessions) -> None:
    with transaction(sessions) as s:
        job = s.get_one(Job, "job-1")
        job.status, job.finished_at = JobState.SUCCEEDED, utcnow()


def test_a_job_ending_while_a_scrape_counts_the_jobs_is_in_both_counts_or_neither(
    sessions, monkeypatch
):
    metrics = CoordinatorMetrics()
    metrics.watch(db=sessions, intake=IntakeCounters(), listeners=list)
    assert ended(collect(metrics)) == (0, 0)
    ender = threading.Thread(target=end_job, args=(sessions,))
    real = metrics_module.job_counts

    def counting(s):
        if ender.ident is None:  # the first scrape only
            ender.start()
            ender.join(1.0)  # the job's commit, while this scrape is reading
        return real(s)

    monkeypatch.setattr(metrics_module, "job_counts", counting)
    during = ended(collect(metrics))
    ender.join(10)
    assert not ender.is_alive()  # the commit waited for the scrape at most, not for ever
    assert during in ((0, 0), (1, 1))
    assert ended(collect(metrics)) == (1, 1)


def test_a_scrape_between_the_commit_and_its_observation_waits_for_the_observation(sessions):
    metrics = CoordinatorMetrics()
    scrapes: list[tuple[float, float]] = []
    scraper = threading.Thread(target=lambda: scrapes.append(ended(collect(metrics))))

    @event.listens_for(sessions, "after_commit")  # before the metrics' own hook: not yet observed
    def _committed(session):
        if threading.current_thread() is threading.main_thread() and scraper.ident is None:
            scraper.start()
            scraper.join(1.0)

    metrics.watch(db=sessions, intake=IntakeCounters(), listeners=list)
    end_job(sessions)
    scraper.join(10)
    assert scrapes == [(1, 1)]
    assert ended(collect(metrics)) == (1, 1)

"""Warm federation sessions (coordinator/services/sessions.py): the registry alone with a fixed
clock, then the job service dispatching into it — fake party clients, a real SQLite database."""

from __future__ import annotations

import pytest

from coordinator.db import make_engine, migrate, session_factory
from coordinator.merge import JobState
from coordinator.parties import PartyUnreachable
from coordinator.schemas import PSIJobCreate
from coordinator.services.jobs import JobService
from coordinator.services.prewarm import prewarm_sets
from coordinator.services.sessions import SessionRegistry, SessionStarting
from coordinator.topology import JobPorts, PortPool, PortsExhausted, parse_topology
from node.contract import (
    SESSION_IDLE_MARGIN_S,
    ErrorInfo,
    ErrorType,
    EventData,
    StatusEvent,
    TaskParams,
    TaskStatus,
)

COOLDOWN_S = 60.0
IDLE_S = 600.0
TOPOLOGY = """\
version: 1
federation: test
parties:
  alice:
    broker_url: redis://coordinator:pw-test-1-xyz@127.0.0.1:1/0
    fed_host: alice.test
    fed_ports: 21000-21005
    spu_ports: 21100-21105
    slots: 2
  bob:
    broker_url: redis://coordinator:pw-test-2-xyz@127.0.0.1:2/0
    fed_host: bob.test
    fed_ports: 22000-22005
    spu_ports: 22100-22105
    slots: 2
  carol:
    broker_url: redis://coordinator:pw-test-3-xyz@127.0.0.1:3/0
    fed_host: carol.test
    fed_ports: 23000-23005
    spu_ports: 23100-23105
    slots: 2
"""
AB, AC = ("alice", "bob"), ("alice", "carol")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def topo():
    return parse_topology(TOPOLOGY)


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def pool(topo, clock):
    return PortPool(topo, cooldown_s=COOLDOWN_S, clock=clock)


@pytest.fixture
def reg(pool, clock):
    return SessionRegistry(pool, idle_timeout_s=IDLE_S, clock=clock)


def _in_use(pool: PortPool, ports: dict[str, JobPorts]) -> bool:
    used = pool.in_use()
    return all({jp.fed, jp.spu} <= used.get(p, set()) for p, jp in ports.items())


# --- the registry -------------------------------------------------------------------------------
def test_a_session_is_reused_after_a_success(reg, pool):
    first = reg.take("exe-1", AB)
    assert first is not None and first.id.startswith("ses-") and len(first.id) == 20
    assert first.mode == "warm_new" and first.busy_execution == "exe-1"
    assert pool.held == {first.id: first.ports}  # held under the session, not the attempt
    reg.finished("exe-1", True)
    second = reg.take("exe-2", reversed(AB))  # a party set: the order does not matter
    assert second is not None and (second.id, second.ports) == (first.id, first.ports)
    assert second.jobs == 2 and second.mode == "warm_reused"


def test_a_failure_retires_the_session_and_the_next_gets_new_ports(reg, pool, clock):
    old = reg.take("exe-1", AB)
    reg.finished("exe-1", False)
    assert reg.snapshot() == [] and pool.held == {}
    assert _in_use(pool, old.ports)  # cooling down
    new = reg.take("exe-2", AB)
    assert new.id != old.id and new.jobs == 1
    for p in AB:
        assert {new.ports[p].fed, new.ports[p].spu}.isdisjoint({old.ports[p].fed, old.ports[p].spu})
    clock.now += COOLDOWN_S
    assert not _in_use(pool, old.ports)  # back after the cooldown


def test_a_busy_session_sends_the_next_job_cold(reg):
    warm = reg.take("exe-1", AB)
    assert reg.take("exe-2", AB) is None
    assert reg.running(["exe-1", "exe-2"]) == {"exe-1"}
    reg.finished("exe-2", False)  # the cold job's end does not touch the session
    reg.finished("exe-1", True)
    assert reg.take("exe-3", AB).id == warm.id


def test_a_job_waits_for_its_party_sets_warm_up_instead_of_going_cold(reg):
    warming = reg.take("exe-w", AB, warmup=True)
    with pytest.raises(SessionStarting):
        reg.take("exe-1", AB)  # held QUEUED by the dispatcher, not sent cold
    assert reg.take("exe-2", AC) is not None  # another party set is not held
    reg.finished("exe-w", True)
    taken = reg.take("exe-1", AB)
    assert taken.id == warming.id and taken.jobs == 2 and not taken.warming
    assert reg.take("exe-3", AB) is None  # busy with a real job: the next one runs cold


def test_prewarm_names_party_sets_of_the_registry():
    names = ["alice", "bob", "carol"]
    assert prewarm_sets(["auto"], ["alice", "bob"]) == [frozenset(AB)]
    assert prewarm_sets(["auto"], names) == []  # three parties: say which sets
    assert prewarm_sets(["alice+bob", "bob+alice", "alice+bob+carol"], names) == [
        frozenset(AB),
        frozenset(names),
    ]
    assert prewarm_sets(["none"], ["alice", "bob"]) == []
    for bad in ("alice+zed", "alice"):
        with pytest.raises(ValueError, match="COORD_PREWARM"):
            prewarm_sets([bad], names)


def test_an_idle_session_is_not_used_within_the_margin_of_its_timeout(reg, pool, clock):
    first = reg.take("exe-1", AB)
    reg.finished("exe-1", True)
    clock.now += IDLE_S - SESSION_IDLE_MARGIN_S - 0.5
    assert reg.take("exe-2", AB).id == first.id  # in time
    reg.finished("exe-2", True)  # idle again from now
    clock.now += IDLE_S - SESSION_IDLE_MARGIN_S
    fresh = reg.take("exe-3", AB)
    assert fresh.id != first.id and first.id not in pool.held
    assert _in_use(pool, first.ports)  # released through the cooldown


def test_an_expired_session_of_another_party_set_gives_its_ports_back(reg, pool, clock):
    ac = reg.take("exe-1", AC)
    reg.finished("exe-1", True)
    clock.now += IDLE_S
    reg.take("exe-2", AB)
    assert [s.parties for s in reg.snapshot()] == [frozenset(AB)]
    assert ac.id not in pool.held


def test_different_party_sets_never_share_a_session(reg):
    ab, ac = reg.take("exe-1", AB), reg.take("exe-2", AC)
    assert ab.id != ac.id and ab.ports["alice"] != ac.ports["alice"]
    abc = reg.take("exe-3", ("alice", "bob", "carol"))  # a superset is a party set of its own
    assert abc is not None and abc.id not in (ab.id, ac.id)
    assert [sorted(s.parties) for s in reg.snapshot()] == [
        ["alice", "bob"],
        ["alice", "bob", "carol"],
        ["alice", "carol"],
    ]


def test_a_kind_without_spu_gets_a_session_of_its_own_beside_the_psi_one(reg, pool):
    """The nodes build a session's devices once: a job without an SPU device never runs in a
    PSI session of the same parties (nor the other way round), and each is reused by its own."""
    psi = reg.take("exe-1", AB)
    plain = reg.take("exe-2", AB, spu=False)  # not "busy": a session of another shape
    assert psi is not None and plain is not None and psi.id != plain.id
    assert psi.spu and not plain.spu and psi.ports["alice"] != plain.ports["alice"]
    reg.finished("exe-1", True)
    reg.finished("exe-2", True)
    assert reg.take("exe-3", AB, spu=False).id == plain.id
    assert reg.take("exe-4", AB).id == psi.id
    assert [(sorted(s.parties), s.spu) for s in reg.snapshot()] == [
        (["alice", "bob"], False),
        (["alice", "bob"], True),
    ]


def test_a_party_keeps_as_many_sessions_as_its_nodes_and_the_least_recently_used_goes(
    reg, pool, clock
):
    """The nodes keep NODE_MAX_SESSIONS (2) sessions and close the least recently used idle one
    for a third: the registry retires the same one, so no job is sent to a closed session."""
    ab = reg.take("exe-1", AB)
    clock.now += 1
    reg.finished("exe-1", True)
    ac = reg.take("exe-2", AC)
    clock.now += 1
    reg.finished("exe-2", True)
    abc = reg.take("exe-3", ("alice", "bob", "carol"))  # alice's third: a+b was used least lately
    assert [sorted(s.parties) for s in reg.snapshot()] == [
        ["alice", "bob", "carol"],
        ["alice", "carol"],
    ]
    assert ab.id not in pool.held and {ac.id, abc.id} <= set(pool.held)
    reg.finished("exe-3", True)
    # a busy session is never retired: the nodes keep it beyond the limit until its job ends
    assert reg.take("exe-4", AC).id == ac.id
    again = reg.take("exe-5", AB)  # alice: a+c busy, a+b+c idle → a+b+c goes
    assert {s.id for s in reg.snapshot()} == {ac.id, again.id}


def test_finished_is_idempotent(reg, pool):
    s = reg.take("exe-1", AB)
    reg.finished("exe-1", True)
    reg.finished("exe-1", True)
    reg.finished("exe-1", False)  # a late report of an attempt that already succeeded
    reg.finished("exe-unknown", False)
    assert [x.id for x in reg.snapshot()] == [s.id] and s.id in pool.held
    reg.take("exe-2", AB)
    reg.finished("exe-2", False)
    reg.finished("exe-2", False)
    assert reg.snapshot() == [] and pool.held == {}


def test_ports_exhausted_propagates_and_idle_sessions_can_be_evicted(topo, clock):
    pool = PortPool(topo, clock=clock)  # no cooldown: evicted ports are free at once
    reg = SessionRegistry(pool, idle_timeout_s=IDLE_S, clock=clock)
    reg.take("exe-0", AB)
    reg.finished("exe-0", True)  # idle, on one of alice's six port pairs
    for i in range(5):  # cold jobs on the other five
        pool.acquire(f"exe-cold-{i}", ["alice"])
    with pytest.raises(PortsExhausted):
        reg.take("exe-1", AC)
    assert len(reg.snapshot()) == 1  # nothing registered for alice+carol
    assert reg.evict_idle("carol") == 0 and reg.evict_idle("alice") == 1
    assert reg.take("exe-1", AC) is not None


# --- the job service ----------------------------------------------------------------------------
class FakeClients:
    """The PartyClients calls of submit, dispatch and apply, answered in memory."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, dict]] = []
        self.revoked: list[tuple[str, str]] = []
        self.refuse_send: set[str] = set()  # brokers that take the ping but refuse the task

    def ping_all(self, parties) -> None:
        pass

    def readiness(self, party: str) -> None:
        return None

    def send_execute(
        self, party: str, task_request_id: str, params: dict, *, expires_s=None
    ) -> None:
        if party in self.refuse_send:
            raise PartyUnreachable(party, "connection reset")
        self.sent.append((party, task_request_id, params))

    def revoke(self, party: str, task_request_id: str, *, terminate: bool = True) -> bool:
        self.revoked.append((party, task_request_id))
        return True

    def result_bytes(self, party: str, task_request_id: str) -> int:
        return 0

    def celery_result(self, party: str, task_request_id: str) -> tuple[str, object]:
        return ("PENDING", None)


@pytest.fixture
def service(topo, tmp_path):
    url = f"sqlite:///{tmp_path / 'coordinator.db'}"
    migrate(url)
    engine = make_engine(url)
    svc = JobService(
        topology=topo,
        clients=FakeClients(),
        db=session_factory(engine),
        warm_sessions=True,
        session_idle_s=IDLE_S,
    )
    yield svc
    svc.close()
    engine.dispose()


def _submit(svc: JobService, parties=AB) -> str:
    request = PSIJobCreate(
        parties={
            p: {"keys": ["id"], "input": f"{p}.csv", "output": f"{p}-out.csv"} for p in parties
        },
        receiver=parties[0],
    )
    return svc.submit(request).id


def _params(svc: JobService, job_id: str) -> dict[str, dict]:
    job = svc.get(job_id)
    return {t.party: t.params for t in job.tasks if t.execution_id == job.execution_id}


def _finish(svc: JobService, job_id: str, error: ErrorType | None = None) -> None:
    """Every party's final event: SUCCESS, or FAILURE with `error` at the first party."""
    job = svc.get(job_id)
    events = []
    for i, party in enumerate(job.parties["names"]):
        failed = error is not None and i == 0
        events.append(
            StatusEvent(
                seq=5,
                task_request_id=f"{job.execution_id}.{party}",
                task_id=job_id,
                subtask_id="psi",
                execution_id=job.execution_id,
                party=party,
                status=TaskStatus.FAILURE if failed else TaskStatus.SUCCESS,
                data=EventData(
                    stage="task_finished",
                    progress=1.0,
                    error=ErrorInfo(type=error, message="gone") if failed else None,
                    result=None if failed else {"intersection_count": 1},
                ),
            )
        )
    svc.apply(events)


def _dispatches(svc: JobService, mode: str) -> float:
    got = svc.metrics.registry.get_sample_value(
        "partyline_coordinator_dispatches_total", {"mode": mode}
    )
    return got or 0.0


def _ports(params: dict) -> tuple:
    return (params["sf_init_config"]["cluster"], params["spu_config"]["cluster_def"]["nodes"])


def test_every_party_gets_the_same_session_and_ports(service):
    job_id = _submit(service)  # PSI: two parties
    params = _params(service, job_id)
    (session,) = service.warm.snapshot()
    assert params["alice"]["session"] == {"id": session.id, "idle_timeout_s": IDLE_S}
    assert len({repr((p["session"], _ports(p))) for p in params.values()}) == 1
    assert set(params) == set(AB)
    assert params["bob"]["sf_init_config"]["cluster"]["bob"]["address"] == (
        f"bob.test:{session.ports['bob'].fed}"
    )
    for p in params.values():
        assert TaskParams.model_validate(p).session.id == session.id  # what the nodes accept
    assert service.ports.held == {session.id: session.ports}  # none for the attempt itself


def test_jobs_of_a_pair_share_a_session_until_one_fails(service):
    seen = []
    for _ in range(3):
        job_id = _submit(service)
        params = _params(service, job_id)
        seen.append((params["alice"]["session"]["id"], repr(_ports(params["alice"]))))
        _finish(service, job_id)
        assert service.get(job_id).status == JobState.SUCCEEDED
    assert len(set(seen)) == 1
    assert (_dispatches(service, "warm_new"), _dispatches(service, "warm_reused")) == (1, 2)

    job_id = _submit(service)
    _finish(service, job_id, ErrorType.SESSION_LOST)  # retryable: queued again, sent again
    job = service.get(job_id)
    assert job.status == JobState.DISPATCHED and job.attempt == 2
    retry = _params(service, job_id)["alice"]
    assert retry["session"]["id"] != seen[0][0] and repr(_ports(retry)) != seen[0][1]
    assert list(service.ports.held) == [retry["session"]["id"]]  # the old session's let go
    assert _dispatches(service, "warm_new") == 2


def test_a_second_job_of_a_busy_pair_runs_cold_on_its_own_ports(service):
    first, second = _submit(service), _submit(service)  # slots 2: both are sent
    warm, cold = _params(service, first), _params(service, second)
    assert "session" in warm["alice"] and "session" not in cold["alice"]
    for p in AB:  # the session keeps its ports; the cold job has others
        addresses = {_ports(x["alice"])[0][p]["address"] for x in (warm, cold)}
        assert len(addresses) == 2
    assert service.get(second).execution_id in service.ports.held
    assert _dispatches(service, "cold") == 1
    _finish(service, second)  # the cold job's end leaves the session busy
    assert service.warm.snapshot()[0].busy_execution == service.get(first).execution_id


def test_a_broker_failure_during_fan_out_retires_the_new_session(service):
    service.clients.refuse_send.add("bob")
    job_id = _submit(service)
    assert service.get(job_id).status == JobState.FAILED
    assert service.clients.revoked == [("alice", f"{service.get(job_id).execution_id}.alice")]
    assert service.warm.snapshot() == [] and service.ports.held == {}
    service.clients.refuse_send.clear()
    again = _submit(service)
    old_id = _params(service, job_id)["alice"]["session"]["id"]
    assert _params(service, again)["alice"]["session"]["id"] != old_id


def test_a_cancelled_job_retires_its_session(service):
    job_id = _submit(service)
    service.cancel(job_id)
    assert service.warm.snapshot() == [] and service.ports.held == {}


def test_without_warm_sessions_a_job_runs_cold(service):
    service.dispatcher.warm = None  # (the service built with warm sessions off)
    job_id = _submit(service)
    assert "session" not in _params(service, job_id)["alice"]
    assert list(service.ports.held) == [service.get(job_id).execution_id]

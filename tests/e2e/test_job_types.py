"""A job type is one module: tests/e2e/hello_job.py, declared nowhere under node/, runs as a
real two-party job through the node's own path — the Celery task, its checks, a cold job
process or a warm session, SecretFlow in cluster mode with the cross-silo link — once the nodes'
settings name it (NODE_JOB_MODULES, tests/e2e/conftest.py)."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import pytest

from deploy.local.standin import send
from node.contract import NodeTaskError, new_execution_id
from node.sessions.client import close_sessions
from tests.e2e.helpers import final, running_coordinator

PARTIES = ["alice", "bob"]


def hello_params(
    federation, *, ports: dict | None = None, session: str | None = None, greeting: str = "hi"
) -> dict[str, dict]:
    """Both parties' params of one hello job (each its own self_party); no SPU device."""
    ports = ports or {p: federation.nodes[p].job_ports()[0] for p in PARTIES}
    template = {
        "task_id": f"job-{uuid.uuid4().hex[:10]}",
        "subtask_id": "hello",
        "execution_id": new_execution_id(),
        "deadline": (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=10)).isoformat(),
        "sf_init_config": {
            "mode": "production",
            "parties": PARTIES,
            "self_party": None,
            "cluster": {p: {"address": f"127.0.0.1:{ports[p]}"} for p in PARTIES},
            "cross_silo_comm_backend": "grpc",
        },
        "spu_config": None,
        "task_config": {"task_type": "hello", "greeting": greeting},
        "session": {"id": session, "idle_timeout_s": 120} if session else None,
    }
    return {
        p: {**template, "sf_init_config": {**template["sf_init_config"], "self_party": p}}
        for p in PARTIES
    }


def run(federation, per_party: dict[str, dict]) -> dict[str, dict]:
    results = send(federation, per_party)
    return {p: res.get(timeout=240) for p, res in results.items()}


def assert_every_party_heard_every_greeting(results: dict[str, dict], greeting: str) -> None:
    for party, result in results.items():
        assert result["status"] == "success", result
        out = result["result"]
        assert out["party"] == party
        assert out["heard"] == {p: f"{greeting} from {p}" for p in PARTIES}
        assert out["devices"] == PARTIES  # a PYU per party, no SPU (none was asked for)


def test_a_test_only_job_type_runs_cold(federation):
    results = run(federation, hello_params(federation, greeting="hello"))
    assert_every_party_heard_every_greeting(results, "hello")
    for result in results.values():
        assert "session_id" not in result["performance_metrics"]  # its own job process


def test_a_test_only_job_type_runs_warm_job_after_job_in_one_session(federation):
    session = f"ses-hello-{uuid.uuid4().hex[:8]}"
    ports = {p: federation.nodes[p].job_ports()[0] for p in PARTIES}
    try:
        for job, greeting in enumerate(["good morning", "good night"], start=1):
            per_party = hello_params(federation, ports=ports, session=session, greeting=greeting)
            results = run(federation, per_party)
            assert_every_party_heard_every_greeting(results, greeting)
            for result in results.values():
                metrics = result["performance_metrics"]
                assert (metrics["session_id"], metrics["session_job"]) == (session, job)
    finally:
        for p in PARTIES:
            close_sessions(federation.nodes[p].settings(), [session])


def test_each_party_refuses_a_bad_config_of_the_job_type_before_any_secretflow_work(federation):
    results = send(federation, hello_params(federation, greeting="<script>"))
    for party, res in results.items():
        with pytest.raises(NodeTaskError) as info:
            res.get(timeout=60)
        err = info.value.result["error"]
        assert err["type"] == "InvalidTaskParams", err
        assert err["message"].startswith(f"party {party} refused the task: invalid hello")
        assert "greeting" in err["message"], err


ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.mark.parametrize("warm", ["false", "true"])
def test_the_coordinator_launches_a_test_only_job_kind_from_its_declaration(federation, warm):
    """tests/e2e/hello_kind.py (COORD_JOB_KINDS) gives the coordinator the hello kind: its
    request schema is listed for the UI, POST /api/v1/jobs/hello validates the body against it
    and the job SUCCEEDS at every party, cold and warm."""
    env = {"COORD_JOB_KINDS": "tests.e2e.hello_kind", "COORD_WARM_SESSIONS": warm}
    with (
        running_coordinator(federation, ARTIFACTS / f"e2e-kinds-{warm}", env=env) as coord,
        coord.client() as http,
    ):
        kinds = {k["name"]: k for k in http.get("/api/v1/jobs/kinds").json()}
        assert set(kinds) == {"psi", "ub_psi_cache", "ub_psi", "warmup", "hello"}
        assert "greeting" in kinds["hello"]["schema"]["properties"]
        assert (
            kinds["hello"]["learns"] == "Each party learns the others' greetings, and nothing else."
        )
        bad = http.post("/api/v1/jobs/hello", json={"parties": ["alice"], "greeting": "x"})
        assert bad.status_code == 422 and "parties" in bad.text, bad.text
        r = http.post("/api/v1/jobs/hello", json={"parties": PARTIES, "greeting": "salut"})
        assert r.status_code == 201, r.text
        job = final(http, r.json()["id"], timeout=300)
        assert job["status"] == "SUCCEEDED", job["error"]
        assert job["kind"] == "hello" and sorted(job["party_status"]) == PARTIES

"""coordinator.services.dispatch.restore_ports against a real database (SQLite and PostgreSQL):
after a restart, the ports of the attempts still running are held again — for a kind without
an SPU device its fed port alone."""

from __future__ import annotations

import pytest

from coordinator.db import transaction
from coordinator.models import Job, SecretflowTask
from coordinator.services.dispatch import restore_ports
from coordinator.topology import JobPorts, PortPool, PortsExhausted, parse_topology

TOPOLOGY = """\
version: 1
federation: test
parties:
  alice:
    broker_url: redis://coordinator:pw-test-1-xyz@127.0.0.1:1/0
    fed_host: alice.test
    fed_ports: 21000-21001
    spu_ports: 21100-21101
  bob:
    broker_url: redis://coordinator:pw-test-2-xyz@127.0.0.1:2/0
    fed_host: bob.test
    fed_ports: 22000-22001
    spu_ports: 22100-22101
"""


def _params(party: str, fed: int, spu: int | None) -> dict:
    params: dict = {"sf_init_config": {"cluster": {party: {"address": f"0.0.0.0:{fed}"}}}}
    if spu is not None:
        nodes = [{"party": party, "address": f"{party}.test:{spu}"}]
        params["spu_config"] = {"cluster_def": {"nodes": nodes}}
    return params


def _store(sessions, job_id: str, status: str, ports: dict[str, tuple[int, int | None]]) -> None:
    with transaction(sessions) as s:
        s.add(
            Job(
                id=job_id,
                status=status,
                request={},
                parties={"names": list(ports)},
                execution_id=f"exe-{job_id}",
                attempt=1,
                max_attempts=1,
            )
        )
        for party, (fed, spu) in ports.items():
            s.add(
                SecretflowTask(
                    job_id=job_id,
                    task_id=job_id,
                    subtask_id="job",
                    execution_id=f"exe-{job_id}",
                    party=party,
                    task_request_id=f"exe-{job_id}.{party}",
                    task_type="psi",
                    status="RUNNING",
                    seq=1,
                    params=_params(party, fed, spu),
                )
            )


def test_running_attempts_hold_their_ports_again_with_or_without_spu(sessions):
    _store(sessions, "psi", "RUNNING", {"alice": (21000, 21100), "bob": (22001, 22100)})
    _store(sessions, "hello", "DISPATCHED", {"alice": (21001, None), "bob": (22000, None)})
    _store(sessions, "done", "SUCCEEDED", {"alice": (21001, 21101), "bob": (22001, 22101)})
    pool = PortPool(parse_topology(TOPOLOGY))
    restore_ports(sessions, pool)
    assert pool.held == {
        "exe-psi": {"alice": JobPorts(21000, 21100), "bob": JobPorts(22001, 22100)},
        "exe-hello": {"alice": JobPorts(21001, None), "bob": JobPorts(22000, None)},
    }
    # the no-SPU job's fed ports are really taken: alice's two fed ports are both held
    with pytest.raises(PortsExhausted, match="no free fed port for party alice"):
        pool.acquire("exe-next", ["alice"])
    pool.release("exe-hello")
    assert pool.acquire("exe-next", ["alice"]) == {"alice": JobPorts(21001, 21101)}

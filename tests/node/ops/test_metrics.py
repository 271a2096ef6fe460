"""node/ops/metrics.py: the node's Prometheus exporter against a real redis-server, scraped over
HTTP. Status events are written by the node's own StatusNotifier, queued messages by a Celery
client, and the processes are real (stand-ins with the command lines of a worker and a job)."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time

import httpx
import pytest

from node.contract import (
    HEARTBEAT_KEY,
    SECRETFLOW_QUEUE,
    TASK_EXECUTE,
    TASK_HEALTH,
    TASK_HELLO,
    WEB_QUEUE,
    ErrorInfo,
    ErrorType,
    Stage,
    TaskStatus,
    new_execution_id,
    task_request_id,
)
from node.contract.clients import client_app
from node.ops.metrics import NodeExporter, serve
from node.worker.notifier import StatusNotifier
from tests.prometheus import Samples, scrape, value

pytestmark = pytest.mark.timeout(60)


def has(samples: Samples, name: str) -> bool:
    return any(n == name for n, _labels in samples)


def notifier(client, party: str, subtask_id: str = "psi") -> StatusNotifier:
    execution_id = new_execution_id()
    return StatusNotifier(
        client,
        task_request_id=task_request_id(execution_id, party),
        task_id="job-0123456789ab",
        subtask_id=subtask_id,
        execution_id=execution_id,
        party=party,
        task_name=TASK_EXECUTE,
    )


@pytest.fixture()
def party() -> str:
    return f"m{secrets.token_hex(6)}"  # no other test's processes carry this party


@pytest.fixture()
def exporter(redis_server, party, tmp_path):
    collector = NodeExporter(party, redis_server.client(), ray_pid_file=tmp_path / "ray-head.pid")
    server, thread = serve(collector, "127.0.0.1", 0)
    collector.url = f"http://127.0.0.1:{server.server_port}/metrics"
    try:
        yield collector
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


TASKS = "partyline_node_tasks_total"
DURATION = "partyline_node_task_duration_seconds"


def test_tasks_by_outcome_queues_and_heartbeats(exporter, redis_server, party):
    r = redis_server.client()
    early = notifier(r, party)
    early.emit(TaskStatus.RECEIVED, Stage.TASK_RECEIVED, progress=0.0)  # before the first scrape
    first = scrape(exporter.url)
    assert value(first, "partyline_node_up") == 1
    assert value(first, "partyline_node_info", party=party) == 1
    assert value(first, "partyline_node_queue_length", queue=SECRETFLOW_QUEUE) == 0
    assert value(first, "partyline_node_worker_up", role="sf") == 0
    assert not has(first, TASKS)  # what was on the stream before the exporter is not counted

    ok = notifier(r, party)
    ok.emit(TaskStatus.RECEIVED, Stage.TASK_RECEIVED, progress=0.0)
    ok.emit(TaskStatus.RUNNING, None, progress=0.05)
    ok.emit(TaskStatus.PROGRESS, Stage.ALGORITHM_RUNNING, progress=0.5)
    ok.emit(TaskStatus.SUCCESS, Stage.TASK_FINISHED, progress=1.0)
    time.sleep(1.1)
    early.emit(TaskStatus.SUCCESS, Stage.TASK_FINISHED, progress=1.0)  # began before the scrape
    failed = notifier(r, party)
    failed.emit(TaskStatus.RECEIVED, Stage.TASK_RECEIVED)
    err = ErrorInfo(type=ErrorType.PEER_UNREACHABLE, message=f"party {party}: peer unreachable")
    failed.emit(TaskStatus.FAILURE, Stage.TASK_FINISHED, error=err)
    odd = notifier(r, party, subtask_id="unknown")  # a refused task whose params did not parse
    odd.emit(TaskStatus.RECEIVED, Stage.TASK_RECEIVED)
    odd.emit(TaskStatus.CANCELLED, Stage.TASK_FINISHED)

    sender = client_app(redis_server.url)
    sender.send_task(TASK_EXECUTE, args=["x", {}], queue=SECRETFLOW_QUEUE)
    sender.send_task(TASK_HELLO, queue=WEB_QUEUE)
    sender.send_task(TASK_HEALTH, queue=WEB_QUEUE, priority=6)  # kombu's priority sub-queue
    r.set(HEARTBEAT_KEY.format(role="sf"), "{}", ex=60)

    s = scrape(exporter.url)
    assert value(s, TASKS, task_type="psi", status="SUCCESS") == 2
    assert value(s, TASKS, task_type="psi", status="FAILURE") == 1
    assert value(s, TASKS, task_type="other", status="CANCELLED") == 1
    failures = "partyline_node_task_failures_total"
    assert value(s, failures, task_type="psi", error_type="PeerUnreachable") == 1
    assert value(s, f"{DURATION}_count", task_type="psi", status="SUCCESS") == 2
    # the early task ran from its RECEIVED (read back at the first scrape) over a second
    assert value(s, f"{DURATION}_bucket", task_type="psi", status="SUCCESS", le="1.0") == 1
    assert value(s, f"{DURATION}_bucket", task_type="psi", status="SUCCESS", le="5.0") == 2
    assert value(s, f"{DURATION}_count", task_type="psi", status="FAILURE") == 1
    assert value(s, "partyline_node_queue_length", queue=SECRETFLOW_QUEUE) == 1
    assert value(s, "partyline_node_queue_length", queue=WEB_QUEUE) == 2
    assert value(s, "partyline_node_queue_length", queue="default") == 0
    assert value(s, "partyline_node_worker_up", role="sf") == 1
    assert value(s, "partyline_node_worker_up", role="web") == 0

    again = scrape(exporter.url)  # read on from the cursor: nothing counted twice
    assert value(again, TASKS, task_type="psi", status="SUCCESS") == 2

    redis_server.stop()
    down = scrape(exporter.url)
    assert value(down, "partyline_node_up") == 0
    assert not has(down, "partyline_node_queue_length")
    assert value(down, TASKS, task_type="psi", status="SUCCESS") == 2  # kept, not reset


SLEEP = "import time; time.sleep(60)"
# a stand-in worker that starts a stand-in job process (`python -c … -m node.sfjob.executor`)
WORKER = (
    "import subprocess, sys, time; "
    f"subprocess.Popen([sys.executable, '-c', {SLEEP!r}, '-m', 'node.sfjob.executor']); time.sleep(60)"
)


def _spawn(cmd: list[str], party: str) -> subprocess.Popen:
    env = {**os.environ, "NODE_PARTY": party}
    return subprocess.Popen(cmd, env=env, start_new_session=True)


def test_memory_of_this_partys_worker_job_and_ray_head(exporter, party, tmp_path):
    procs = [
        _spawn([sys.executable, "-c", WORKER, "-m", "node", "worker"], party),
        _spawn([sys.executable, "-c", SLEEP, "-m", "node", "worker"], "someoneelse"),
        _spawn([sys.executable, "-c", SLEEP], party),  # the Ray head, by its pid file
    ]
    (tmp_path / "ray-head.pid").write_text(str(procs[2].pid))
    try:
        deadline = time.monotonic() + 20
        while True:
            s = scrape(exporter.url)
            if value(s, "partyline_node_processes", role="job") == 1 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert value(s, "partyline_node_processes", role="worker") == 1
        assert value(s, "partyline_node_processes", role="job") == 1
        assert value(s, "partyline_node_processes", role="ray_head") == 1
        for role in ("worker", "job", "ray_head"):
            assert value(s, "partyline_node_process_rss_bytes", role=role) > 1_000_000
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)


def test_the_metrics_command_serves_until_sigterm(redis_server, party, ports, tmp_path):
    port = ports.one()
    env = {
        **os.environ,
        "NODE_PARTY": party,
        "NODE_BROKER_URL": redis_server.url,
        "NODE_DATA_ROOT": str(tmp_path),
        "NODE_STATE_DIR": str(tmp_path / "state"),
        "NODE_CERT_FILE": "x.crt",
        "NODE_KEY_FILE": "x.key",
        "NODE_CA_FILE": "ca.crt",
        "NODE_TRUSTED_SIGNERS": "coordinator.crt",
        "NODE_METRICS_PORT": str(port),
    }
    proc = subprocess.Popen([sys.executable, "-m", "node", "metrics"], env=env)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                s = scrape(f"http://127.0.0.1:{port}/metrics")
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.2)
        assert value(s, "partyline_node_up") == 1
        assert value(s, "partyline_node_info", party=party) == 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)

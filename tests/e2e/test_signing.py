"""Signed tasks (docs/architecture.md §2.1): a worker runs only tasks signed by the coordinator's certificate."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from certs.authority import init_federation
from node.contract import HEARTBEAT_KEY, STATUS_STREAM, TASK_EXECUTE, TASK_HELLO, WEB_QUEUE
from node.worker.notifier import read_events


def _stays_pending(app, task_id: str, seconds: float = 10.0) -> bool:
    res = app.AsyncResult(task_id)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if res.state != "PENDING":
            return False
        time.sleep(0.5)
    return True


def test_signed_task_is_accepted(federation):
    app = federation.nodes["alice"].celery_client()
    assert app.send_task(TASK_HELLO, queue=WEB_QUEUE).get(timeout=30)["party"] == "alice"


def test_unsigned_task_pushed_into_redis_is_rejected(federation):
    node = federation.nodes["alice"]
    unsigned = node.celery_client(signed=False)
    hello = unsigned.send_task(TASK_HELLO, queue=WEB_QUEUE)
    task_request_id = "exe-unsigned00000001.alice"
    unsigned.send_task(
        TASK_EXECUTE, args=[task_request_id, {}], task_id=task_request_id, queue="secretflow_queue"
    )
    signed = node.celery_client()
    assert _stays_pending(signed, hello.id), "an unsigned hello ran"
    assert _stays_pending(signed, task_request_id, 3), "an unsigned execute_task ran"
    assert read_events(node.redis(), task_request_id) == []  # not even RECEIVED
    logs = (node.base / "worker.log").read_text(errors="replace")
    assert "ContentDisallowed" in logs or "Refusing to deserialize" in logs, logs[-2000:]


def test_task_signed_by_another_certificate_is_rejected(federation, tmp_path):
    """Signed, but not by the trusted coordinator certificate (another CA's 'coordinator')."""
    node = federation.nodes["bob"]
    init_federation(tmp_path / "rogue", ["coordinator"])
    rogue = tmp_path / "rogue"
    script = f"""
import json
from pathlib import Path
from node.contract.clients import SigningConfig, client_app
sig = SigningConfig(Path({str(rogue / "coordinator.key")!r}), Path({str(rogue / "coordinator.crt")!r}), {str(rogue / "*.crt")!r})
app = client_app({node.broker_url!r}, {node.broker_url!r}, {str(node.redis_ca_file)!r}, signing=sig)
print(json.dumps({{"id": app.send_task({TASK_HELLO!r}, queue={WEB_QUEUE!r}).id}}))
"""
    # the auth serializer is process-global: the rogue signer lives in its own process
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    task_id = json.loads(done.stdout)["id"]
    assert _stays_pending(node.celery_client(), task_id), "a task signed by a rogue key ran"


def test_sf_worker_heartbeat_is_in_redis(federation):
    for name, node in federation.nodes.items():
        raw = node.redis().get(HEARTBEAT_KEY.format(role="sf"))
        assert raw, f"{name} has no heartbeat"
        beat = json.loads(raw)
        assert beat["party"] == name and beat["worker"].startswith(f"sf.{name}@")
        assert 0 < node.redis().ttl(HEARTBEAT_KEY.format(role="sf")) <= 15
    _ = STATUS_STREAM

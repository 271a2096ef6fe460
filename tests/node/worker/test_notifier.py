"""node/worker/notifier.py StatusNotifier against a real redis-server (stream + pub/sub, docs/architecture.md §2)."""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest

from node import contract
from node.contract import (
    STATUS_CHANNEL,
    STATUS_STREAM,
    ErrorInfo,
    Stage,
    StatusEvent,
    TaskStatus,
    task_request_id,
)
from node.worker.notifier import SEQ_KEY, StatusNotifier, read_events

pytestmark = pytest.mark.timeout(30)

EVENT_FIELDS = {
    "event_id",
    "seq",
    "task_request_id",
    "task_id",
    "subtask_id",
    "execution_id",
    "party",
    "status",
    "timestamp",
    "data",
    "worker_container",
    "task_name",
}
DATA_FIELDS = {"stage", "progress", "result", "error", "performance_metrics"}


def notifier(client, execution_id: str, party: str = "alice", **kw) -> StatusNotifier:
    return StatusNotifier(
        client,
        task_request_id=task_request_id(execution_id, party),
        task_id="job-7f3a",
        subtask_id="psi",
        execution_id=execution_id,
        party=party,
        task_name=contract.TASK_EXECUTE,
        **kw,
    )


def drain_pubsub(pubsub, count: int, timeout: float = 10.0) -> list[str]:
    got: list[str] = []
    end = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < end:
        msg = pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
        if msg and msg["type"] == "message":
            assert msg["channel"] == STATUS_CHANNEL.encode()
            data = msg["data"]
            got.append(data.decode() if isinstance(data, bytes) else data)
    return got


def test_events_in_stream_and_on_channel(redis_server):
    client = redis_server.client()
    pubsub = client.pubsub()
    pubsub.subscribe(STATUS_CHANNEL)
    # wait for the subscription to be active before emitting
    confirm = pubsub.get_message(timeout=5)
    assert confirm is not None and confirm["type"] == "subscribe"

    ok = notifier(client, "exe-ok", worker="alice-worker-1")
    bad = notifier(client, "exe-bad", worker="alice-worker-1")
    before = dt.datetime.now(dt.UTC)
    emitted = [
        ok.emit(TaskStatus.RECEIVED, Stage.TASK_RECEIVED),
        ok.emit(TaskStatus.RUNNING, Stage.CLUSTER_INITIALIZED),
        ok.emit(TaskStatus.PROGRESS, Stage.ALGORITHM_RUNNING, progress=0.5),
        bad.emit(
            TaskStatus.FAILURE,
            Stage.TASK_FINISHED,
            error=ErrorInfo(type="KeyColumnMissing", message="key column 'uid' not found"),
        ),
        ok.emit(
            TaskStatus.SUCCESS,
            Stage.TASK_FINISHED,
            progress=1.0,
            result={"intersection_count": 42, "output_path": "out/job-7f3a.csv"},
        ),
    ]
    after = dt.datetime.now(dt.UTC)
    assert ok.last == emitted[-1]
    assert bad.last == emitted[3]

    # --- the durable stream: every event, in emit order, raw JSON as published
    raw_entries = client.xrange(STATUS_STREAM)
    assert len(raw_entries) == len(emitted)
    stream_json = []
    for _entry_id, fields in raw_entries:
        assert set(fields) == {b"event"}
        stream_json.append(fields[b"event"].decode())
    stream_events = [StatusEvent.model_validate_json(j) for j in stream_json]
    assert stream_events == emitted
    assert read_events(client) == emitted
    assert read_events(client, ok.ids["task_request_id"]) == [
        e for e in emitted if e.task_request_id == "exe-ok.alice"
    ]

    # --- per task: seq starts at 1 and strictly increases
    ok_events = [e for e in stream_events if e.task_request_id == "exe-ok.alice"]
    bad_events = [e for e in stream_events if e.task_request_id == "exe-bad.alice"]
    assert [e.seq for e in ok_events] == [1, 2, 3, 4]
    assert [e.status for e in ok_events] == [
        TaskStatus.RECEIVED,
        TaskStatus.RUNNING,
        TaskStatus.PROGRESS,
        TaskStatus.SUCCESS,
    ]
    assert [(e.seq, e.status) for e in bad_events] == [(1, TaskStatus.FAILURE)]

    # --- every event carries all docs/architecture.md §2 fields, correctly filled
    for text, ev in zip(stream_json, stream_events, strict=True):
        doc = json.loads(text)
        assert set(doc) == EVENT_FIELDS
        assert set(doc["data"]) == DATA_FIELDS
        assert ev.task_id == "job-7f3a"
        assert ev.subtask_id == "psi"
        assert ev.party == "alice"
        assert ev.task_request_id == f"{ev.execution_id}.alice"
        assert ev.worker_container == "alice-worker-1"
        assert ev.task_name == contract.TASK_EXECUTE
        assert ev.timestamp.utcoffset() == dt.timedelta(0)
        assert before <= ev.timestamp <= after
    assert len({e.event_id for e in stream_events}) == len(stream_events)
    assert ok_events[2].data.progress == 0.5
    assert ok_events[2].data.stage == "algorithm_running"
    assert ok_events[3].data.result == {
        "intersection_count": 42,
        "output_path": "out/job-7f3a.csv",
    }
    assert bad_events[0].data.error == ErrorInfo(
        type="KeyColumnMissing", message="key column 'uid' not found"
    )
    assert bad_events[0].data.stage == "task_finished"

    # --- the live channel: same JSON, same order
    published = drain_pubsub(pubsub, len(emitted))
    pubsub.close()
    assert published == stream_json


def test_two_notifiers_share_the_seq_counter(redis_server):
    """Two processes (e.g. the Celery task and the job process) notifying for one task."""
    first = notifier(redis_server.client(), "exe-shared", worker="worker-a")
    second = notifier(redis_server.client(), "exe-shared", worker="worker-b")
    seqs = [
        first.emit(TaskStatus.RECEIVED, Stage.TASK_RECEIVED).seq,
        second.emit(TaskStatus.RUNNING, Stage.CLUSTER_INITIALIZED).seq,
        second.emit(TaskStatus.PROGRESS, Stage.DEVICES_READY).seq,
        first.emit(TaskStatus.PROGRESS, Stage.ALGORITHM_RUNNING).seq,
        second.emit(TaskStatus.SUCCESS, Stage.TASK_FINISHED).seq,
    ]
    assert seqs == [1, 2, 3, 4, 5]
    events = read_events(redis_server.client(), "exe-shared.alice")
    assert [e.seq for e in events] == [1, 2, 3, 4, 5]
    assert [e.worker_container for e in events] == [
        "worker-a",
        "worker-b",
        "worker-b",
        "worker-a",
        "worker-b",
    ]


def test_seq_is_per_task_and_per_party(redis_server):
    client = redis_server.client()
    a = notifier(client, "exe-x", party="alice")
    b = notifier(client, "exe-x", party="bob")
    other = notifier(client, "exe-y", party="alice")
    assert a.emit(TaskStatus.RECEIVED).seq == 1
    assert b.emit(TaskStatus.RECEIVED).seq == 1
    assert a.emit(TaskStatus.RUNNING).seq == 2
    assert other.emit(TaskStatus.RECEIVED).seq == 1


def test_seq_counter_expires(redis_server):
    client = redis_server.client()
    n = notifier(client, "exe-ttl")
    n.emit(TaskStatus.RECEIVED)
    ttl = client.ttl(SEQ_KEY.format("exe-ttl.alice"))
    assert 0 < ttl <= 7 * 24 * 3600

"""Status notifier: every event goes to this party's Redis twice (docs/architecture.md §2).

XADD task_status_stream — durable, read by the coordinator with a consumer group;
PUBLISH task_status_events — live, for dashboards. `seq` comes from a Redis counter per task,
so it keeps increasing even across worker processes or a redelivered task.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

import redis

from node.contract import (
    STATUS_CHANNEL,
    STATUS_STREAM,
    ErrorInfo,
    EventData,
    StatusEvent,
    TaskStatus,
)

log = logging.getLogger(__name__)
SEQ_KEY = "task_status_seq:{}"
SEQ_TTL_S = 7 * 24 * 3600
STREAM_MAXLEN = 100_000  # ≈ 12,000 tasks of events; with Redis's maxmemory, bounded by bytes


class StatusNotifier:
    def __init__(
        self,
        client: redis.Redis,
        *,
        task_request_id: str,
        task_id: str,
        subtask_id: str,
        execution_id: str,
        party: str,
        task_name: str,
        worker: str | None = None,
    ) -> None:
        self.client = client
        self.ids = {
            "task_request_id": task_request_id,
            "task_id": task_id,
            "subtask_id": subtask_id,
            "execution_id": execution_id,
            "party": party,
        }
        self.task_name = task_name
        self.worker = worker or socket.gethostname()
        self.last: StatusEvent | None = None

    def emit(
        self,
        status: TaskStatus,
        stage: str | None = None,
        *,
        progress: float | None = None,
        result: dict[str, Any] | None = None,
        error: ErrorInfo | None = None,
        performance_metrics: dict[str, Any] | None = None,
    ) -> StatusEvent:
        key = SEQ_KEY.format(self.ids["task_request_id"])
        pipe = self.client.pipeline()
        pipe.incr(key)
        pipe.expire(key, SEQ_TTL_S)
        seq = int(pipe.execute()[0])
        event = StatusEvent(
            seq=seq,
            status=status,
            data=EventData(
                stage=stage,
                progress=progress,
                result=result,
                error=error,
                performance_metrics=performance_metrics,
            ),
            worker_container=self.worker,
            task_name=self.task_name,
            **self.ids,
        )
        fields: dict[Any, Any] = event.to_stream_fields()
        pipe = self.client.pipeline()
        pipe.xadd(STATUS_STREAM, fields, maxlen=STREAM_MAXLEN, approximate=True)
        pipe.publish(STATUS_CHANNEL, fields["event"])
        pipe.execute()
        self.last = event
        log.info("status %s seq=%d %s stage=%s", event.task_request_id, seq, status, stage)
        return event


def read_events(client: redis.Redis, task_request_id: str | None = None) -> list[StatusEvent]:
    """Every event in this Redis's stream (optionally of one task), in stream order; an entry
    that is not a valid event (anyone with the party's Redis can write one) is skipped."""
    out = []
    entries: list[tuple[Any, Any]] = client.xrange(STATUS_STREAM)  # type: ignore[assignment]
    for _id, fields in entries:
        try:
            ev = StatusEvent.from_stream_fields(fields)
        except ValueError:  # pydantic's ValidationError and UnicodeDecodeError are ValueErrors
            continue
        if task_request_id is None or ev.task_request_id == task_request_id:
            out.append(ev)
    return out

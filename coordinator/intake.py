"""What the coordinator accepts from a party's status stream — and what it refuses.

Each party writes status events into its own Redis, which the coordinator reads. A party is a
separate organisation: anything in its stream is a claim *by that party*. So an event is taken
only when

  - it is UTF-8, parses, and is at most `MAX_STATUS_EVENT_BYTES` long (else Malformed / Oversize);
    parsing bounds every field to what the database stores (`node.contract.status`), and a
    party's seq stays below the coordinator's own (`NODE_SEQ_MAX`);
  - it describes the party whose stream it came from                  (else OtherParty);
  - it is for a task the coordinator gave that party, in that attempt (else NotItsTask — checked
    against the database when the batch is applied, `services.status.apply_events`).

A refused entry is acknowledged (it can never become valid and must not block the stream),
never stored, counted per party and reason (`IntakeCounters`, shown by `/healthz`), and logged
on the `partyline.security` logger with the entry id.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from enum import StrEnum

from pydantic import ValidationError

from node.contract import MAX_STATUS_EVENT_BYTES, NODE_SEQ_MAX, StatusEvent

security_log = logging.getLogger("partyline.security")


class Refusal(StrEnum):
    MALFORMED = "Malformed"  # not a status event at all
    OVERSIZE = "Oversize"  # longer than MAX_STATUS_EVENT_BYTES
    OTHER_PARTY = "OtherParty"  # claims to be another party's event
    NOT_ITS_TASK = "NotItsTask"  # for a task (or attempt) the coordinator never gave this party
    RESULT_OVERSIZE = "ResultOversize"  # a Celery result longer than MAX_RESULT_BYTES
    UNSTORABLE = "Unstorable"  # passed the contract, yet the database refused it alone


class IntakeCounters:
    """Refused entries per (party, refusal); shared by every listener thread and the job
    service, read by /healthz."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, Refusal]] = Counter()

    def refuse(self, party: str, why: Refusal, what: str, detail: str = "") -> None:
        with self._lock:
            self._counts[(party, why)] += 1
        level = logging.INFO if why == Refusal.NOT_ITS_TASK else logging.WARNING
        security_log.log(
            level,
            "refused from party %s: %s %s%s",
            party,
            why.value,
            what,
            f" ({detail})" if detail else "",
        )

    def count(self, party: str, why: Refusal) -> int:
        with self._lock:
            return self._counts[(party, why)]

    def snapshot(self) -> dict[str, dict[str, int]]:
        with self._lock:
            out: dict[str, dict[str, int]] = {}
            for (party, why), n in sorted(self._counts.items()):
                out.setdefault(party, {})[why.value] = n
            return out


def _field(fields: dict, name: str) -> object:
    return fields.get(name) if name in fields else fields.get(name.encode())


def _parse(party: str, eid: str, fields: dict, counters: IntakeCounters) -> StatusEvent | None:
    """The entry's event, or None when it is refused (counted and logged)."""
    raw = _field(fields, "event")
    size = len(raw) if isinstance(raw, bytes) else len(str(raw).encode("utf-8", "replace"))
    if size > MAX_STATUS_EVENT_BYTES:
        counters.refuse(
            party, Refusal.OVERSIZE, f"entry {eid}", f"{size} bytes > {MAX_STATUS_EVENT_BYTES}"
        )
        return None
    try:
        if not isinstance(raw, str | bytes):
            raise ValueError("a status stream entry without an 'event' field")
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        event = StatusEvent.model_validate_json(text)
        if event.seq > NODE_SEQ_MAX:
            raise ValueError(f"seq {event.seq} > {NODE_SEQ_MAX}: the coordinator's range")
    except (ValidationError, ValueError, TypeError) as exc:  # UnicodeDecodeError is a ValueError
        counters.refuse(party, Refusal.MALFORMED, f"entry {eid}", str(exc).splitlines()[0])
        return None
    return event


def screen_entries(
    party: str, entries, counters: IntakeCounters
) -> tuple[list[str], list[StatusEvent]]:
    """(every entry id, the events `party` may send). Every id is returned — the caller
    acknowledges all of them — but only events that parse, fit the bound and describe `party`
    are returned for applying."""
    ids: list[str] = []
    events: list[StatusEvent] = []
    for entry_id, fields in entries:
        eid = entry_id.decode("ascii", "replace") if isinstance(entry_id, bytes) else entry_id
        ids.append(eid)
        if not fields:  # a deleted entry (XAUTOCLAIM may return these)
            continue
        event = _parse(party, eid, fields, counters)
        if event is None:
            continue
        if event.party != party:
            counters.refuse(
                party,
                Refusal.OTHER_PARTY,
                f"entry {eid}",
                f"claims party {event.party!r}, task {event.task_request_id}",
            )
            continue
        events.append(event)
    return ids, events

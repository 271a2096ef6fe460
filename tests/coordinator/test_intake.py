"""What a party's status stream may say (pure: entries as the listener reads them)."""

from __future__ import annotations

import json
import logging

import pytest

from coordinator.intake import IntakeCounters, Refusal, screen_entries
from node.contract import MAX_STATUS_EVENT_BYTES, ErrorInfo, EventData, StatusEvent, TaskStatus


def _event(party: str, trid_party: str | None = None, **data) -> StatusEvent:
    return StatusEvent(
        seq=3,
        task_request_id=f"exe-1.{trid_party or party}",
        task_id="job-1",
        subtask_id="psi",
        execution_id="exe-1",
        party=party,
        status=TaskStatus.FAILURE,
        data=EventData(**data),
    )


def _entry(i: int, event: StatusEvent | str) -> tuple[bytes, dict]:
    raw = event if isinstance(event, str) else event.model_dump_json()
    return (f"1-{i}".encode(), {b"event": raw.encode()})


def test_an_event_claiming_another_party_is_refused_counted_and_logged(caplog):
    counters = IntakeCounters()
    forged = _event("alice", error=ErrorInfo(type="InternalError", message="forged"))
    own = _event("bob")
    with caplog.at_level(logging.WARNING, logger="partyline.security"):
        ids, events = screen_entries("bob", [_entry(1, forged), _entry(2, own)], counters)
    assert ids == ["1-1", "1-2"]  # both acknowledged …
    assert events == [own]  # … only bob's own applied
    assert counters.count("bob", Refusal.OTHER_PARTY) == 1
    assert counters.snapshot() == {"bob": {"OtherParty": 1}}
    [rec] = caplog.records
    assert "party bob" in rec.getMessage() and "claims party 'alice'" in rec.getMessage()


def test_an_oversized_event_is_refused_before_it_is_parsed():
    counters = IntakeCounters()
    big = _event("bob", result={"blob": "x" * MAX_STATUS_EVENT_BYTES})
    ok = _event("bob", result={"intersection_count": 3})
    ids, events = screen_entries("bob", [_entry(1, big), _entry(2, ok)], counters)
    assert ids == ["1-1", "1-2"] and events == [ok]
    assert counters.snapshot() == {"bob": {"Oversize": 1}}


def test_a_malformed_entry_is_refused_and_does_not_block_the_rest():
    counters = IntakeCounters()
    ok = _event("bob")
    entries = [_entry(1, "{not json"), (b"1-2", {}), _entry(3, ok)]
    ids, events = screen_entries("bob", entries, counters)
    assert ids == ["1-1", "1-2", "1-3"] and events == [ok]
    assert counters.snapshot() == {"bob": {"Malformed": 1}}


def test_a_nodes_largest_own_failure_event_fits_the_bound():
    """The node cuts details at DETAILS_MAX: its biggest real event is still accepted."""
    err = ErrorInfo(type="PSIError", message="m" * 1000, details="é" * 100_000)
    _ids, events = screen_entries("bob", [_entry(1, _event("bob", error=err))], IntakeCounters())
    assert len(events) == 1


def _raw(**over) -> str:
    """An honest event of bob's as JSON, with fields replaced as a hostile party would."""
    doc = json.loads(_event("bob").model_dump_json())
    for key, value in over.items():
        if key in ("stage", "progress", "result", "performance_metrics"):
            doc["data"][key] = value
        else:
            doc[key] = value
    return json.dumps(doc)


# each would fail the coordinator's insert (PostgreSQL Integer, String(64), String(32); JSON
# with NaN; a NUL byte) or overflow its own timer events (seq + 1e9) — refused before storing
UNSTORABLE = {
    "seq 1.2e9: the timers' seq would overflow": _raw(seq=1_200_000_000),
    "seq 2^63-1": _raw(seq=2**63 - 1),
    "seq 2^63": _raw(seq=2**63),
    "seq 0": _raw(seq=0),
    "event_id of 65 characters": _raw(event_id="e" * 65),
    "stage of 33 characters": _raw(stage="s" * 33),
    "a NUL in stage": _raw(stage="a\u0000b"),
    "task_id of 65 characters": _raw(task_id="j" * 65),
    "NaN progress": _raw(progress=float("nan")),
    "progress above 1": _raw(progress=7.0),
    "Infinity in the result": _raw(result={"intersection_count": float("inf")}),
    "an integer past 64 bits in the metrics": _raw(performance_metrics={"total_s": 2**64}),
    "a timestamp without a zone": _raw(timestamp="2030-01-01T00:00:00"),
    "a timestamp past year 9999 in UTC": _raw(timestamp="9999-12-31T23:59:59-14:00"),
    "a party name that is not one": _raw(party="Bob Smith"),
}


@pytest.mark.parametrize("case", sorted(UNSTORABLE))
def test_a_field_beyond_what_the_database_stores_is_refused_as_malformed(case):
    counters = IntakeCounters()
    ok = _event("bob")
    ids, events = screen_entries("bob", [_entry(1, UNSTORABLE[case]), _entry(2, ok)], counters)
    assert ids == ["1-1", "1-2"] and events == [ok]
    assert counters.snapshot() == {"bob": {"Malformed": 1}}


def test_an_event_field_that_is_not_utf8_is_a_refusal_not_a_stopped_stream():
    counters = IntakeCounters()
    ok = _event("bob")
    entries = [(b"1-1", {b"event": b'{"seq": 1, "party": "\xff\xfe"}'}), _entry(2, ok)]
    ids, events = screen_entries("bob", entries, counters)
    assert ids == ["1-1", "1-2"] and events == [ok]
    assert counters.snapshot() == {"bob": {"Malformed": 1}}


def test_a_nodes_error_text_is_made_storable_not_refused():
    """A node's own failure may quote a log with a NUL or a broken character: kept, cleaned."""
    err = ErrorInfo(type="PSIError", message="bad \x00byte \ud800", details="x\x00y")
    assert "\x00" not in err.message and err.message.encode()
    assert err.details == "xy"

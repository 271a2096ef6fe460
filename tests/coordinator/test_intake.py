"""What a party's status stream may say (pure: entries as the listener reads them)."""

from __future__ import annotations

import logging

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

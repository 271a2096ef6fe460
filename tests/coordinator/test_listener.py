"""The listener's applier: batches from several party threads merged into one apply (one
transaction), and a failed apply reported to every party thread that handed a batch in (so none
of them acknowledges its entries). Pure threading logic: the apply is a function recording its
calls; the real pipeline (redis-servers, database) is exercised in test_api, test_hostile_stream
and tests/e2e."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy.exc import DataError, OperationalError

from coordinator.intake import IntakeCounters
from coordinator.listener import Applier, PartyListener
from node.contract import StatusEvent, TaskStatus


def _run(applier: Applier, events: list, errors: list) -> threading.Thread:
    def go():
        try:
            applier.submit(events)
        except Exception as exc:
            errors.append(exc)

    t = threading.Thread(target=go)
    t.start()
    return t


@pytest.fixture
def stop():
    ev = threading.Event()
    yield ev
    ev.set()


def test_batches_waiting_together_are_applied_in_one_call(stop):
    calls, gate, entered = [], threading.Event(), threading.Event()

    def apply(events):
        calls.append(list(events))
        entered.set()
        gate.wait(10)

    applier = Applier(apply, stop)
    applier.start()
    errors: list = []
    first = _run(applier, ["a1"], errors)
    assert entered.wait(10)  # the applier is busy with a1 …
    others = [_run(applier, [f"{p}1", f"{p}2"], errors) for p in ("b", "c")]
    while applier._queue.qsize() < 2:  # … while b and c queue up behind it
        threading.Event().wait(0.01)
    gate.set()
    for t in [first, *others]:
        t.join(10)
    assert errors == []
    assert calls[0] == ["a1"]
    assert sorted(calls[1]) == ["b1", "b2", "c1", "c2"] and len(calls) == 2
    assert applier.transactions == 2


def test_a_failed_apply_is_raised_in_every_party_thread_of_the_group(stop):
    gate, entered = threading.Event(), threading.Event()

    def apply(events):
        entered.set()
        gate.wait(10)
        raise RuntimeError("database is down")

    applier = Applier(apply, stop)
    applier.start()
    errors: list = []
    threads = [_run(applier, ["a1"], errors)]
    assert entered.wait(10)
    threads += [_run(applier, ["b1"], errors), _run(applier, ["c1"], errors)]
    while applier._queue.qsize() < 2:
        threading.Event().wait(0.01)
    gate.set()
    for t in threads:
        t.join(10)
    assert len(errors) == 3 and all("database is down" in str(e) for e in errors)
    assert applier.transactions == 0


def test_submit_fails_instead_of_waiting_forever_once_stopped(stop):
    applier = Applier(lambda events: None, stop)  # never started: nothing will apply
    stop.set()
    with pytest.raises(RuntimeError, match="stopped"):
        applier.submit(["a1"])


def _data_error() -> DataError:
    return DataError("INSERT …", {}, Exception("integer out of range"))


def _outage() -> OperationalError:
    return OperationalError("INSERT …", {}, Exception("connection refused"))


def _grouped(applier: Applier, batches: list[list], errors: dict) -> None:
    """Hand in `batches` while the applier is busy, so that they are applied as one group."""
    threads = []
    for batch in batches:

        def go(batch=batch):
            try:
                applier.submit(batch)
            except Exception as exc:
                errors[batch[0]] = exc

        threads.append(threading.Thread(target=go))
        threads[-1].start()
    for t in threads:
        t.join(10)


def test_a_batch_the_database_refuses_fails_only_its_own_partys_thread(stop):
    """bob's batch holds an event the database refuses for its data: alice's and carol's
    batches of the same group are still committed, each in its own transaction."""
    committed: list[list] = []
    gate, entered = threading.Event(), threading.Event()

    def apply(events):
        if events == ["warm-up"]:
            entered.set()
            gate.wait(10)
        if "bad" in events:
            raise _data_error()
        committed.append(list(events))

    applier = Applier(apply, stop)
    applier.start()
    errors: dict = {}
    first = _run(applier, ["warm-up"], [])
    assert entered.wait(10)
    group = threading.Thread(
        target=_grouped, args=(applier, [["a1"], ["b1", "bad"], ["c1"]], errors)
    )
    group.start()
    while applier._queue.qsize() < 3:
        threading.Event().wait(0.01)
    gate.set()
    group.join(10)
    first.join(10)
    assert set(errors) == {"b1"} and isinstance(errors["b1"], DataError)
    assert sorted(map(tuple, committed)) == [("a1",), ("c1",), ("warm-up",)]


def test_an_outage_fails_the_whole_group_without_splitting_it(stop):
    calls: list[list] = []

    def apply(events):
        calls.append(list(events))
        raise _outage()

    applier = Applier(apply, stop)
    applier.start()
    errors: list = []
    for t in [_run(applier, ["a1"], errors)]:
        t.join(10)
    assert len(errors) == 1 and isinstance(errors[0], OperationalError)
    assert calls == [["a1"]]  # retried later with the same data, not event by event


def _event(eid: str) -> StatusEvent:
    return StatusEvent(
        event_id=eid,
        seq=1,
        task_request_id="exe-1.bob",
        task_id="job-1",
        subtask_id="psi",
        execution_id="exe-1",
        party="bob",
        status=TaskStatus.RUNNING,
    )


def _listener(apply, stop, counters: IntakeCounters) -> PartyListener:
    """bob's listener thread (not started): only its batch handling is used."""
    return PartyListener("bob", None, apply, consumer="c", stop=stop, counters=counters)  # type: ignore[arg-type]


def test_an_event_the_database_refuses_alone_is_counted_and_the_rest_applied(stop):
    """Defence in depth behind the contract's bounds: whatever event the database still
    refuses is found by applying the batch event by event, refused as Unstorable (and then
    acknowledged), and the party's other events are applied."""
    applied: list[str] = []

    def apply(events):
        if any(e.event_id == "bad" for e in events):
            raise _data_error()
        applied.extend(e.event_id for e in events)

    counters = IntakeCounters()
    listener = _listener(apply, stop, counters)
    listener._apply([_event("e1"), _event("bad"), _event("e2")])
    assert applied == ["e1", "e2"]
    assert counters.snapshot() == {"bob": {"Unstorable": 1}}


def test_an_outage_while_isolating_is_raised_so_nothing_is_acknowledged(stop):
    def apply(events):
        raise _outage()

    listener = _listener(apply, stop, IntakeCounters())
    with pytest.raises(OperationalError):
        listener._apply([_event("e1"), _event("e2")])

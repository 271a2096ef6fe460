"""The listener's applier: batches from several party threads merged into one apply (one
transaction), and a failed apply reported to every party thread that handed a batch in (so none
of them acknowledges its entries). Pure threading logic: the apply is a function recording its
calls; the real pipeline (redis-servers, database) is exercised in test_api and tests/e2e."""

from __future__ import annotations

import threading

import pytest

from coordinator.listener import Applier


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

"""RetryGate: a retry waits until the party its failed attempt named has sent a new heartbeat."""

from __future__ import annotations

import datetime as dt

import redis

from coordinator.services.retry_gate import RetryGate
from node.contract import WorkerHeartbeat

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


class Beats:
    """The heartbeats a party's Redis holds: set `beat` to what the worker last wrote."""

    def __init__(self, beat: WorkerHeartbeat | None) -> None:
        self.beat = beat
        self.down = False

    def heartbeat(self, party: str) -> WorkerHeartbeat | None:
        if self.down:
            raise redis.ConnectionError("refused")
        return self.beat


def beat(seconds: int, pid: int = 100) -> WorkerHeartbeat:
    return WorkerHeartbeat(party="bob", worker="w", pid=pid, at=T0 + dt.timedelta(seconds=seconds))


def test_a_live_party_is_waited_for_until_its_next_heartbeat():
    gate, beats = RetryGate(), Beats(beat(0))
    why = gate.why_not(beats, "job-1", "exe-1", "bob", 1)
    assert why and why.startswith("party bob has not been heard from since attempt 1 failed")
    assert gate.why_not(beats, "job-1", "exe-1", "bob", 1) == why  # the same heartbeat: waits
    beats.beat = beat(5)
    assert gate.why_not(beats, "job-1", "exe-1", "bob", 1) is None


def test_a_dead_worker_holds_the_retry_until_a_new_worker_beats():
    gate, beats = RetryGate(), Beats(beat(0, pid=100))
    assert gate.why_not(beats, "job-1", "exe-1", "bob", 1)
    beats.beat = None  # its heartbeat expired
    assert gate.why_not(beats, "job-1", "exe-1", "bob", 1)
    beats.beat = beat(0, pid=200)  # a new worker (same clock reading, other pid)
    assert gate.why_not(beats, "job-1", "exe-1", "bob", 1) is None


def test_gone_when_first_asked_means_any_heartbeat_after_lets_it_go():
    gate, beats = RetryGate(), Beats(None)
    assert gate.why_not(beats, "job-1", "exe-1", "bob", 1)
    beats.beat = beat(30)
    assert gate.why_not(beats, "job-1", "exe-1", "bob", 1) is None


def test_an_unreachable_broker_counts_as_not_heard_from():
    gate, beats = RetryGate(), Beats(beat(0))
    beats.down = True
    assert gate.why_not(beats, "job-1", "exe-1", "bob", 1)
    beats.down = False  # back, with the same heartbeat as before it went away: not new
    beats.beat = beat(0)
    assert gate.why_not(beats, "job-1", "exe-1", "bob", 1) is None  # ≠ None noted while down


def test_each_failed_attempt_waits_for_its_own_heartbeat():
    gate, beats = RetryGate(), Beats(beat(0))
    assert gate.why_not(beats, "job-1", "exe-1", "bob", 1)
    beats.beat = beat(5)
    assert gate.why_not(beats, "job-1", "exe-1", "bob", 1) is None
    # attempt 2 of the same job fails naming bob too: a heartbeat after that one is needed
    assert gate.why_not(beats, "job-1", "exe-2", "bob", 2)
    assert gate.why_not(beats, "job-2", "exe-9", "bob", 1)  # and per job
    beats.beat = beat(10)
    assert gate.why_not(beats, "job-1", "exe-2", "bob", 2) is None


def test_each_silent_party_is_gated_on_its_own_and_an_open_gate_stays_open():
    """Three parties, two silent (carol dead, bob merely slow to end): bob's next beat opens
    his gate for good, while carol's holds the retry until a worker of hers beats."""
    gate = RetryGate()
    bob, carol = Beats(beat(0)), Beats(beat(0, pid=300))
    assert gate.why_not(bob, "job-1", "exe-1", "bob", 1)
    assert gate.why_not(carol, "job-1", "exe-1", "carol", 1)
    bob.beat = beat(5)
    assert gate.why_not(bob, "job-1", "exe-1", "bob", 1) is None
    assert gate.why_not(carol, "job-1", "exe-1", "carol", 1)  # the same beat: still held
    assert gate.why_not(bob, "job-1", "exe-1", "bob", 1) is None  # open until forgotten
    carol.beat = beat(60, pid=301)
    assert gate.why_not(carol, "job-1", "exe-1", "carol", 1) is None

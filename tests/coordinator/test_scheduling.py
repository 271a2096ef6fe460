"""Gang scheduling: all parties free or wait; FIFO per party; capacity never exceeded."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.scheduling import QueuedJob, dispatchable

PARTIES = ["alice", "bob", "carol", "dave"]


def test_waits_until_every_party_is_free():
    q = [QueuedJob("j1", ("alice", "bob"))]
    assert dispatchable(q, {"bob": 1}, {"alice": 1, "bob": 1}) == []
    assert dispatchable(q, {}, {"alice": 1, "bob": 1}) == ["j1"]


def test_no_overtaking_on_a_shared_party_but_others_proceed():
    q = [
        QueuedJob("j1", ("alice", "bob")),  # bob busy: waits
        QueuedJob("j2", ("alice", "carol")),  # alice is j1's: must not overtake
        QueuedJob("j3", ("carol", "dave")),  # carol is j2's (waiting): must not overtake either
        QueuedJob("j4", ("dave", "erin")),  # j3 waits, so dave is taken too
        QueuedJob("j5", ("frank", "grace")),  # unrelated: goes
    ]
    assert dispatchable(q, {"bob": 1}, {}) == ["j5"]


def test_slots_allow_concurrent_jobs():
    q = [QueuedJob("j1", ("alice", "bob")), QueuedJob("j2", ("alice", "bob"))]
    assert dispatchable(q, {}, {"alice": 2, "bob": 2}) == ["j1", "j2"]
    assert dispatchable(q, {}, {"alice": 2, "bob": 1}) == ["j1"]


jobs = st.lists(
    st.tuples(
        st.text("abcdefgh", min_size=1, max_size=3),
        st.sets(st.sampled_from(PARTIES), min_size=2, max_size=3),
    ),
    max_size=12,
    unique_by=lambda t: t[0],
)


@settings(max_examples=300, deadline=None)
@given(
    jobs,
    st.dictionaries(st.sampled_from(PARTIES), st.integers(0, 2)),
    st.dictionaries(st.sampled_from(PARTIES), st.integers(1, 3)),
)
def test_properties(raw, busy, slots):
    queue = [QueuedJob(j, tuple(sorted(ps))) for j, ps in raw]
    picked = dispatchable(queue, busy, slots)
    by_id = {j.job_id: j for j in queue}
    # capacity is never exceeded
    for p in PARTIES:
        load = busy.get(p, 0) + sum(p in by_id[j].parties for j in picked)
        assert load <= max(slots.get(p, 1), busy.get(p, 0))
    # picked jobs keep queue order, and a picked job never overtakes a waiting one sharing a party
    order = [j.job_id for j in queue]
    assert picked == sorted(picked, key=order.index)
    for i, job in enumerate(queue):
        if job.job_id in picked:
            for earlier in queue[:i]:
                if earlier.job_id not in picked:
                    assert not set(earlier.parties) & set(job.parties)
    # work-conserving: the first job of the queue goes whenever all its parties are free
    if queue and all(busy.get(p, 0) < slots.get(p, 1) for p in queue[0].parties):
        assert picked[:1] == [queue[0].job_id]

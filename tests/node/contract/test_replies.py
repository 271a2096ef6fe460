"""The bounded Redis client against a real redis-server: a reply over its bounds is refused
from the length in its header, before the body is read, and the client goes on working."""

from __future__ import annotations

import resource

import pytest

from node.contract.clients import ReplyBounds, ReplyTooLarge, redis_client

BOUNDS = ReplyBounds(max_bulk=256 * 1024, max_items=4096, max_reply=4 * 1024 * 1024)


@pytest.fixture
def both(redis_server):
    """(what the party writes with, what the coordinator reads with)"""
    return redis_server.client(), redis_client(redis_server.url, bounds=BOUNDS)


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_a_value_over_the_bound_is_refused_unread_and_the_client_goes_on(both):
    party, reader = both
    party.set("big", b"x" * 64 * 1024 * 1024)
    party.set("ok", b"fine")
    peak = _peak_mb()
    with pytest.raises(ReplyTooLarge, match="a value of 67108864 > 262144"):
        reader.get("big")
    assert _peak_mb() - peak < 32  # 64 MB sat in Redis; nothing like it was loaded here
    assert reader.get("ok") == b"fine"  # a new connection, the refused reply gone with the old


def test_a_stream_entry_with_a_huge_field_or_too_many_fields_is_refused(both):
    party, reader = both
    party.xadd("s", {"event": b"y" * 1024 * 1024})
    party.xadd("t", {f"f{i}": b"1" for i in range(10_000)})
    with pytest.raises(ReplyTooLarge, match="a value of 1048576"):
        reader.xrange("s")
    with pytest.raises(ReplyTooLarge, match="an array of 20000 > 4096"):
        reader.xrange("t")


def test_many_values_each_within_the_bound_are_refused_past_the_reply_bound(both):
    party, reader = both
    party.rpush("l", *([b"z" * 200_000] * 30))  # 6 MB in all, each value 200 KB
    with pytest.raises(ReplyTooLarge, match="a reply of"):
        reader.lrange("l", 0, -1)
    assert len(reader.lrange("l", 0, 9)) == 10  # 2 MB: within


def test_everything_within_the_bounds_reads_as_without_them(both):
    party, reader = both
    party.xadd("s", {"event": b"e"})
    party.set("k", b"v")
    assert reader.get("k") == party.get("k")
    assert reader.xrange("s") == party.xrange("s")
    assert reader.xinfo_stream("s")["length"] == 1

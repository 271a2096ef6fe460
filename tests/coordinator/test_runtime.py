"""The change feed SSE streams poll: bounded, and a job dropped from it is still seen changing."""

from __future__ import annotations

from coordinator.runtime import ChangeFeed


def test_the_feed_keeps_the_most_recently_changed_jobs_only(monkeypatch):
    monkeypatch.setattr(ChangeFeed, "MAX_JOBS", 3)
    feed = ChangeFeed()
    feed.notify(["job-a", "job-b", "job-c"])
    seen_a = feed.version("job-a")
    feed.notify(["job-a"])  # a changed again: now the most recent
    feed.notify(["job-d"])  # b, the least recent, is dropped
    assert len(feed._versions) == 3 and "job-b" not in feed._versions
    assert feed.version("job-a") == seen_a + 1
    assert feed.version("job-b") == 0  # a stream that saw 1 sees a change: it reads again
    assert feed.version() == 5

"""The unbalanced PSI cache store: halves put in place whole, private, and read back bounded."""

from __future__ import annotations

import datetime as dt
import os
import stat
import time

import pytest

from node.dataroot import ubcache


def _manifest(made_by: str = "job-1", role=ubcache.CacheRole.SERVER) -> ubcache.CacheManifest:
    return ubcache.CacheManifest(
        cache="acc",
        role=role,
        server="alice",
        client="bob",
        made_by=made_by,
        made_at=dt.datetime(2026, 12, 7, tzinfo=dt.UTC),
        rows=3,
        table="t/a.csv",
        keys=["id"],
    )


def _staging(root, name="w1"):
    staging = root / ".partyline/work" / name / "cache"
    ubcache.private_dirs(staging, root / ".partyline/work" / name)
    spu = staging / "spu"
    spu.mkdir()
    old = os.umask(0)
    try:
        (spu / "ub_psi_cache.meta").write_text('{"privKey": "secret"}')  # as SPU leaves it: 0666
    finally:
        os.umask(old)
    return staging


def test_a_committed_half_is_in_place_whole_and_the_node_users_only(tmp_path):
    m = ubcache.commit(_staging(tmp_path), tmp_path, _manifest())
    half = ubcache.cache_dir(tmp_path, "alice", "acc")
    assert m.bytes == len('{"privKey": "secret"}')
    assert stat.S_IMODE(half.stat().st_mode) == 0o700
    assert stat.S_IMODE(ubcache.cache_root(tmp_path).stat().st_mode) == 0o700
    for f in (half / "cache.json", half / "spu" / "ub_psi_cache.meta"):
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    assert ubcache.load(tmp_path, "alice", "acc", "alice") == m
    assert ubcache.list_caches(tmp_path) == [m]


def test_a_half_made_again_replaces_the_old_one_and_leaves_nothing_beside(tmp_path):
    ubcache.commit(_staging(tmp_path, "w1"), tmp_path, _manifest("job-1"))
    ubcache.commit(_staging(tmp_path, "w2"), tmp_path, _manifest("job-2"))
    assert ubcache.load(tmp_path, "alice", "acc", "alice").made_by == "job-2"
    assert [p.name for p in (ubcache.cache_root(tmp_path) / "alice").iterdir()] == ["acc"]


def test_a_missing_or_unreadable_half_says_so_naming_the_party(tmp_path):
    with pytest.raises(ubcache.CacheMissing, match="no cache 'acc' of alice at party bob"):
        ubcache.load(tmp_path, "alice", "acc", "bob")
    half = ubcache.cache_dir(tmp_path, "alice", "acc")
    half.mkdir(parents=True)
    (half / "cache.json").write_text("{not json")
    with pytest.raises(ubcache.CacheMissing, match="unreadable"):
        ubcache.load(tmp_path, "alice", "acc", "bob")
    (half / "cache.json").write_bytes(b" " * (ubcache.MANIFEST_MAX_BYTES + 1))
    with pytest.raises(ubcache.CacheMissing, match="too long"):
        ubcache.load(tmp_path, "alice", "acc", "bob")
    assert ubcache.list_caches(tmp_path) == []


def test_a_table_version_changes_with_any_write_even_with_its_mtime_set_back(tmp_path):
    t = tmp_path / "t.csv"
    t.write_text("id\n1\n")
    before = ubcache.TableVersion.of(t)
    st = t.stat()
    time.sleep(0.05)  # the kernel's file times move by clock ticks (a few ms)
    t.write_text("id\n2\n")  # same size
    os.utime(t, ns=(st.st_atime_ns, st.st_mtime_ns))  # the modification time put back
    after = ubcache.TableVersion.of(t)
    assert after.size == before.size and after.mtime_ns == before.mtime_ns
    assert after != before  # the ctime moved
    assert "bytes, modified" in before.describe()


def test_a_removed_half_is_gone_whole_and_listed_no_more(tmp_path):
    ubcache.commit(_staging(tmp_path), tmp_path, _manifest())
    assert ubcache.remove(tmp_path, "alice", "acc") is True
    assert list((ubcache.cache_root(tmp_path) / "alice").iterdir()) == []
    assert ubcache.list_caches(tmp_path) == []
    with pytest.raises(ubcache.CacheMissing, match="no cache 'acc' of alice"):
        ubcache.load(tmp_path, "alice", "acc", "alice")
    assert ubcache.remove(tmp_path, "alice", "acc") is False


def test_a_linked_server_folder_is_never_followed_out_of_the_caches(tmp_path):
    outside = tmp_path / "elsewhere"
    (outside / "acc").mkdir(parents=True)
    ubcache.cache_root(tmp_path).mkdir(parents=True)
    (ubcache.cache_root(tmp_path) / "alice").symlink_to(outside)
    assert ubcache.remove(tmp_path, "alice", "acc") is False
    assert (outside / "acc").is_dir()

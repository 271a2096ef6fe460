"""Unbalanced PSI's checks before any SecretFlow work: a cache is made only once (unless asked
again), and a query finds each party's half as the request expects it — there, for this peer,
made by the job it names, of the server's table as it is now — or is refused saying which."""

from __future__ import annotations

import datetime as dt
import stat

import pytest

from node.contract import ErrorType, TaskParams
from node.dataroot import ubcache
from node.jobtypes import ub_psi, ub_psi_cache
from node.jobtypes.spec import JobRefused

from .test_table import make_params, make_settings

CACHE = {
    "cache": "acc",
    "server": "alice",
    "client": "bob",
    "input_path": "big.csv",
    "keys": ["uid"],
}


def _params(party: str, **cfg) -> TaskParams:
    base = make_params(party)
    return base.model_copy(update={"task_config": cfg})


def _cache_params(party: str, **over) -> TaskParams:
    return _params(party, task_type="ub_psi_cache", **{**CACHE, **over})


def _query_params(party: str, **over) -> TaskParams:
    cfg = {**CACHE, "task_type": "ub_psi", "made_by": "job-1", "input_path": "small.csv",
           "keys": ["id"], "output_path": "out/answer.csv", **over}  # fmt: skip
    return _params(party, **cfg)


@pytest.fixture()
def alice(tmp_path):
    s = make_settings(tmp_path / "a", "alice")
    s.data_root.mkdir(parents=True)
    (s.data_root / "big.csv").write_text("uid,x\n1,a\n2,b\n2,c\n")
    return s


@pytest.fixture()
def bob(tmp_path):
    s = make_settings(tmp_path / "b", "bob")
    s.data_root.mkdir(parents=True)
    (s.data_root / "small.csv").write_text("id,y\n2,p\n3,q\n")
    return s


def _made(settings, role, made_by="job-1", version=None):
    """A half as a cache job leaves it."""
    staging = settings.data_root / ".partyline/work/w/cache"
    ubcache.private_dirs(staging / "spu", settings.data_root / ".partyline/work/w")
    ubcache.commit(
        staging,
        settings.data_root,
        ubcache.CacheManifest(
            cache="acc",
            role=role,
            server="alice",
            client="bob",
            made_by=made_by,
            made_at=dt.datetime.now(dt.UTC),
            rows=2,
            table="big.csv" if version else None,
            keys=["uid"] if version else None,
            table_version=version,
        ),
    )


def test_the_cache_job_checks_the_servers_table_and_makes_its_half_in_a_private_folder(alice):
    p = ub_psi_cache.prepare(_cache_params("alice"), alice)
    assert p.role is ubcache.CacheRole.SERVER and p.table == "big.csv"
    assert p.input_check["rows"] == 3 and p.table_version == ubcache.TableVersion.of(
        alice.data_root / "big.csv"
    )
    assert (
        stat.S_IMODE((alice.data_root / ".partyline/work" / "exe-91c2.alice").stat().st_mode)
        == 0o700
    )
    with pytest.raises(JobRefused, match="repeat") as exc:
        ub_psi_cache.prepare(_cache_params("alice", duplicates="refuse"), alice)
    assert exc.value.type == ErrorType.DUPLICATE_KEYS


def test_a_cache_of_that_name_is_made_again_only_when_asked(alice):
    _made(
        alice,
        ubcache.CacheRole.SERVER,
        version=ubcache.TableVersion.of(alice.data_root / "big.csv"),
    )
    with pytest.raises(
        JobRefused, match="cache 'acc' of alice already exists at party alice"
    ) as exc:
        ub_psi_cache.prepare(_cache_params("alice"), alice)
    assert exc.value.type == ErrorType.OUTPUT_EXISTS
    assert ub_psi_cache.prepare(_cache_params("alice", overwrite=True), alice).table == "big.csv"


def test_a_new_cache_beyond_the_partys_limit_is_refused_naming_the_oldest(alice):
    """NODE_MAX_UB_CACHES: a party's disk does not fill with caches; the one it holds can still
    be made again (it replaces itself)."""
    limited = alice.model_copy(update={"max_ub_caches": 1})
    _made(limited, ubcache.CacheRole.SERVER)
    with pytest.raises(JobRefused, match="holds 1 unbalanced PSI caches") as exc:
        ub_psi_cache.prepare(_cache_params("alice", cache="other"), limited)
    assert exc.value.type == ErrorType.CACHE_LIMIT
    assert "python -m node caches --delete alice/acc" in str(exc.value)
    assert ub_psi_cache.prepare(_cache_params("alice", overwrite=True), limited).cache == "acc"
    ubcache.remove(limited.data_root, "alice", "acc")
    assert ub_psi_cache.prepare(_cache_params("alice", cache="other"), limited).cache == "other"


def test_a_query_without_its_half_is_refused_naming_the_cache_and_the_party(alice, bob):
    with pytest.raises(JobRefused, match="no cache 'acc' of alice at party bob") as exc:
        ub_psi.prepare(_query_params("bob"), bob)
    assert exc.value.type == ErrorType.CACHE_NOT_FOUND


def test_a_half_made_by_another_job_is_refused(alice, bob):
    _made(bob, ubcache.CacheRole.CLIENT, made_by="job-0")
    with pytest.raises(JobRefused, match="made by job job-0, the request names job-1") as exc:
        ub_psi.prepare(_query_params("bob"), bob)
    assert exc.value.type == ErrorType.CACHE_STALE


def test_the_client_checks_its_table_and_claims_its_output(bob):
    _made(bob, ubcache.CacheRole.CLIENT)
    p = ub_psi.prepare(_query_params("bob"), bob)
    assert p.role is ubcache.CacheRole.CLIENT and p.server_rows == 2
    assert p.output_claim == ["out", "answer.csv"] and p.input_check["rows"] == 2


def test_a_server_table_changed_since_the_cache_refuses_the_query_naming_both_versions(alice):
    table = alice.data_root / "big.csv"
    _made(alice, ubcache.CacheRole.SERVER, version=ubcache.TableVersion.of(table))
    assert ub_psi.prepare(_query_params("alice"), alice).role is ubcache.CacheRole.SERVER
    with open(table, "a") as fh:
        fh.write("4,d\n")
    with pytest.raises(JobRefused) as exc:
        ub_psi.prepare(_query_params("alice"), alice)
    assert exc.value.type == ErrorType.CACHE_STALE
    msg = str(exc.value)
    assert msg.startswith("cache 'acc' was made from table big.csv as it was then (")
    assert "the table changed since (now " in msg and msg.endswith(
        "make the cache again (ub_psi_cache with overwrite: true)"
    )
    table.unlink()
    with pytest.raises(JobRefused, match="it is gone"):
        ub_psi.prepare(_query_params("alice"), alice)

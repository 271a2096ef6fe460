"""The session host's bookkeeping (which job may use which session) — pure logic, no driver is
started: sessions are claimed and ended, the rules a peer relies on are checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.contract import ErrorType, TaskParams
from node.launch.child_spec import JobSpec
from node.sessions.driver import identity
from node.sessions.host import Host
from node.sessions.paths import socket_path
from node.settings import NodeSettings


def settings(tmp_path: Path, **kw) -> NodeSettings:
    base = {
        "party": "alice",
        "broker_url": "rediss://node:s3cret-Zq81@alice.example:6380/0",
        "data_root": tmp_path / "data",
        "state_dir": tmp_path / "state",
        "cert_file": tmp_path / "alice.crt",
        "key_file": tmp_path / "alice.key",
        "ca_file": tmp_path / "ca.crt",
        "trusted_signers": str(tmp_path / "coordinator.crt"),
        "allowed_peers": ["bob", "carol"],
        "spare_runner": False,
    }
    return NodeSettings(**{**base, **kw})


def params(
    session: str | None = "ses-1",
    execution: str = "exe-1",
    peer: str = "bob",
    fed_port: int = 21000,
    spu: bool = True,
) -> TaskParams:
    parties = ["alice", peer]
    spu_config = {
        "cluster_def": {
            "nodes": [
                {"party": "alice", "address": "127.0.0.1:21100"},
                {"party": peer, "address": "127.0.0.1:22100"},
            ]
        }
    }
    return TaskParams.model_validate(
        {
            "task_id": "job-1",
            "subtask_id": "psi",
            "execution_id": execution,
            "deadline": "2099-01-01T00:00:00Z",
            "sf_init_config": {
                "parties": parties,
                "self_party": "alice",
                "cluster": {
                    "alice": {"address": f"127.0.0.1:{fed_port}"},
                    peer: {"address": "127.0.0.1:22000"},
                },
            },
            "spu_config": spu_config if spu else None,
            "task_config": {"task_type": "psi" if spu else "hello"},
            "session": {"id": session, "idle_timeout_s": 600} if session else None,
        }
    )


def done(host: Host, sid: str) -> None:
    """What the host does when a session's job succeeded."""
    sess = host._sessions[sid]
    sess.busy, sess.jobs = None, sess.jobs + 1


def test_jobs_of_one_session_reuse_it_one_at_a_time(tmp_path):
    host = Host(settings(tmp_path))
    first, new, err = host._claim(params(execution="exe-1"))
    assert (new, err) == (True, None) and first is not None
    busy, _, err = host._claim(params(execution="exe-2"))
    assert busy is None and err.error.type == ErrorType.INTERNAL
    assert "already running job exe-1" in err.error.message
    done(host, "ses-1")
    again, new, err = host._claim(params(execution="exe-2"))
    assert again is first and new is False and err is None and again.busy == "exe-2"


def test_a_job_with_other_ports_than_its_session_is_refused(tmp_path):
    host = Host(settings(tmp_path))
    host._claim(params())
    done(host, "ses-1")
    sess, _, err = host._claim(params(execution="exe-2", fed_port=21001))
    assert sess is None and err.error.type == ErrorType.INVALID_PARAMS
    assert host._sessions["ses-1"].busy is None  # the session itself is untouched


def test_an_ended_session_is_never_started_again_under_its_id(tmp_path):
    host = Host(settings(tmp_path))
    sess, _, _ = host._claim(params())
    host._end(sess, "its job failed")
    again, _, err = host._claim(params(execution="exe-2"))
    assert again is None and err.error.type == ErrorType.SESSION_LOST
    assert "ses-1 has ended here (its job failed)" in err.error.message


def test_a_restarted_host_refuses_the_sessions_of_the_previous_one(tmp_path):
    host = Host(settings(tmp_path))
    host._claim(params())
    restarted = Host(settings(tmp_path))
    sess, _, err = restarted._claim(params(execution="exe-2"))
    assert sess is None and err.error.type == ErrorType.SESSION_LOST
    assert "restarted" in err.error.message


def test_a_new_session_of_the_same_parties_replaces_the_old_one(tmp_path):
    host = Host(settings(tmp_path))
    host._claim(params("ses-1"))
    done(host, "ses-1")
    _, new, err = host._claim(params("ses-2", execution="exe-2", fed_port=21001))
    assert new and err is None
    assert set(host._sessions) == {"ses-2"}
    assert "replaced" in host._ended["ses-1"]


def test_a_session_without_spu_lives_beside_the_spu_session_of_the_same_parties(tmp_path):
    """A kind of job without an SPU device (its devices differ) has a session of its own: it
    does not replace the PSI session of the same parties, and neither job may use the other's."""
    host = Host(settings(tmp_path))
    host._claim(params("ses-psi"))
    done(host, "ses-psi")
    plain, new, err = host._claim(params("ses-plain", execution="exe-2", fed_port=21001, spu=False))
    assert new and err is None and plain is not None and not plain.spu
    assert set(host._sessions) == {"ses-psi", "ses-plain"} and host._sessions["ses-psi"].spu
    assert [s["spu"] for s in host.listing()] == [True, False]
    done(host, "ses-plain")
    _, _, err = host._claim(params("ses-psi", execution="exe-3", fed_port=21001, spu=False))
    assert err is not None and err.error.type == ErrorType.INVALID_PARAMS
    # a newer session of the same shape still replaces the old one
    _, new, _ = host._claim(params("ses-plain-2", execution="exe-4", fed_port=21002, spu=False))
    assert new and set(host._sessions) == {"ses-psi", "ses-plain-2"}


def test_sessions_of_other_party_sets_are_kept_apart_and_capped(tmp_path):
    host = Host(settings(tmp_path, max_sessions=2))
    ab, _, _ = host._claim(params("ses-ab"))
    done(host, "ses-ab")
    ac, _, _ = host._claim(params("ses-ac", peer="carol", fed_port=21001))
    assert ab is not None and ac is not None and ab.parties != ac.parties
    # a job of alice+carol naming alice+bob's session is refused (other parties, other ports)
    sess, _, err = host._claim(params("ses-ab", execution="exe-9", peer="carol"))
    assert sess is None and err.error.type == ErrorType.INVALID_PARAMS
    done(host, "ses-ac")
    host._sessions["ses-ab"].last_used -= 100  # the least recently used
    # a third party set over the cap of 2 closes the least recently used idle session
    host._claim(params("ses-ad", peer="dave", fed_port=21002))
    assert set(host._sessions) == {"ses-ac", "ses-ad"}


def test_idle_sessions_are_closed_after_their_timeout(tmp_path):
    host = Host(settings(tmp_path))
    host._claim(params())
    done(host, "ses-1")
    host._close_idle()
    assert "ses-1" in host._sessions
    host._sessions["ses-1"].last_used -= 601
    host._close_idle()
    assert "ses-1" not in host._sessions and "no job for 600 s" in host._ended["ses-1"]


def test_identity_is_the_same_for_every_job_of_a_session():
    assert identity(params(execution="exe-1")) == identity(params(execution="exe-2"))
    assert identity(params()) != identity(params(fed_port=21001))
    assert identity(params()) != identity(params("ses-2"))


def test_the_socket_fits_a_unix_socket_path(tmp_path):
    short = settings(tmp_path)
    assert socket_path(short) == short.state_dir / "run" / "sessions.sock"
    deep = settings(tmp_path, state_dir=tmp_path / ("x" * 120))
    path = socket_path(deep)
    assert len(str(path)) < 100 and path == socket_path(deep)


@pytest.mark.parametrize("timeout", [10, 100_000])
def test_the_idle_timeout_is_bounded(timeout):
    with pytest.raises(ValueError):
        params().model_validate(
            {**params().model_dump(), "session": {"id": "s", "idle_timeout_s": timeout}}
        )


def test_a_session_from_before_a_ray_head_restart_is_not_used(tmp_path, monkeypatch):
    from node.rayhead import head

    monkeypatch.setattr(head, "head_session", lambda _s: "session_1")
    host = Host(settings(tmp_path))
    host._claim(params())
    done(host, "ses-1")
    monkeypatch.setattr(head, "head_session", lambda _s: "session_2")  # the head restarted
    sess, _, err = host._claim(params(execution="exe-2"))
    assert sess is None and err.error.type == ErrorType.SESSION_LOST
    assert "Ray head restarted" in err.error.message


def test_a_busy_session_is_never_killed_to_make_room_for_a_new_one(tmp_path):
    """A newer session of the same parties (the coordinator restarted mid-job) starts beside
    the busy one, which is only marked: it ends once its job does."""
    host = Host(settings(tmp_path))
    host._claim(params("ses-1"))  # busy with exe-1
    _, new, err = host._claim(params("ses-2", execution="exe-2", fed_port=21001))
    assert new and err is None
    assert set(host._sessions) == {"ses-1", "ses-2"}
    assert host._sessions["ses-1"].busy == "exe-1"
    assert "replaced" in (host._sessions["ses-1"].retire_after_job or "")


class _GoneConn:
    """The task's end of the socket, already closed (its Celery task was killed)."""

    def sendall(self, data):
        raise BrokenPipeError


class _Driver:
    pid, killed = 4242, False

    def kill(self):
        self.killed = True


def test_a_session_whose_task_is_gone_before_its_job_starts_is_ended_not_left_busy(tmp_path):
    host = Host(settings(tmp_path))
    host._claim(params("ses-1"))
    done(host, "ses-1")
    sess, new, _ = host._claim(params("ses-1", execution="exe-2"))
    assert sess is not None and not new
    sess.proc = _Driver()  # type: ignore[assignment]
    host._start_job(_GoneConn(), {}, params("ses-1", execution="exe-2"), sess, new)  # type: ignore[arg-type]
    assert "ses-1" not in host._sessions and sess.proc.killed
    assert "gone before the job started" in host._ended["ses-1"]


def test_any_failure_after_the_claim_ends_the_session(tmp_path, monkeypatch):
    host = Host(settings(tmp_path))
    host._claim(params("ses-1"))
    done(host, "ses-1")

    def broken(*_a, **_kw):
        raise OSError("the driver's pipe broke")

    monkeypatch.setattr(host, "_start_job", broken)
    with pytest.raises(OSError):
        spec = JobSpec(
            params=params("ses-1", execution="exe-2"), prepared={}, settings={}, log_path=""
        )
        host._run(_GoneConn(), spec)  # type: ignore[arg-type]
    assert "ses-1" not in host._sessions
    assert "failed while running its job" in host._ended["ses-1"]


def test_the_settings_a_job_process_gets_carry_no_redis_password(tmp_path):
    s = settings(tmp_path, result_backend="rediss://node:0ther-Secret@alice.example:6380/1")
    sent = s.for_job_process()
    assert "s3cret-Zq81" not in str(sent) and "0ther-Secret" not in str(sent)
    again = NodeSettings.model_validate(sent)  # what the job process rebuilds
    assert again.data_root == s.data_root and again.party == "alice"


def test_a_session_is_not_used_after_a_new_revocation_list_was_installed(tmp_path):
    """Its fed link took the list of its start: once NODE_CRL_FILE changes, the session ends at
    its next job (SessionLost: the next attempt starts one with the new list)."""
    crl = tmp_path / "crl.pem"
    crl.write_text("list 1\n")
    host = Host(settings(tmp_path, crl_file=crl))
    host._claim(params("ses-1"))
    done(host, "ses-1")
    crl.write_text("list 2, one more serial\n")
    sess, _new, err = host._claim(params("ses-1", execution="exe-2"))
    assert sess is None and err is not None
    assert err.error.type == "SessionLost" and "revocation list" in err.error.message

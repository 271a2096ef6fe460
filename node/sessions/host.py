"""This party's session host: `python -m node.sessions.host`, started by the SecretFlow worker.

It owns the warm sessions' driver processes (node.sessions.driver) and hands them jobs. A
Celery task — in whichever of the worker's pool processes took it — connects to the host's Unix
socket, sends `{"op": "run", "spec": …}` and reads the driver's messages back (node.sessions.
client). Closing the connection before the result (cancel, deadline, time limit) ends the
session. The rules:

- one job per session at a time;
- a session whose job did not succeed (error, crash, cancel) is closed, and its id remembered —
  except a job refused before any work (this party refused and released its peers, or a peer
  refused: PeerRefused), which leaves every party's session in step;
  a closed session's id is remembered:
  a later job naming it gets SessionLost, never a new session under the old id (the peer may
  still hold the old one, and the two would not be in step);
- one session per party set: a job of a new session closes an older one of the same parties
  (at once when it is idle; when its job ends when it is busy: a busy session is never killed
  to make room);
- at most NODE_MAX_SESSIONS sessions: beyond that the least recently used idle one is closed;
- a session without a job for its `idle_timeout_s` is closed;
- one driver is kept pre-started (secretflow imported) for the next new session.

`{"op": "list"}` answers the sessions; `{"op": "close", "ids": [...] | null}` ends some or all.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import queue
import signal
import socket
import sys
import threading
import time
from concurrent.futures import Future
from typing import Any

from node.contract import ErrorInfo, ErrorType, TaskParams
from node.launch.child_spec import (
    ChildExited,
    JobFailed,
    JobResult,
    JobSpec,
    SessionStarted,
    refusal,
)
from node.launch.jobprocess import JobProcess
from node.launch.runner import READY_TIMEOUT_S, busy_port
from node.rayhead import head
from node.sessions import wire
from node.sessions.driver import identity
from node.sessions.paths import SocketUnsafe, check_peer, private_folder, socket_path
from node.sessions.paths import remove as remove_socket
from node.sessions.registry import ENDED_KEPT, SEEN_FILE, HostedSession, read_seen, remember
from node.settings import NodeSettings, get_settings

log = logging.getLogger("partyline.sessions")
security_log = logging.getLogger("partyline.security")

DRIVER_MODULE = "node.sessions.driver"


class Host:
    def __init__(self, settings: NodeSettings) -> None:
        self.settings = settings
        self._sessions: dict[str, HostedSession] = {}
        self._ended: collections.OrderedDict[str, str] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._spare: JobProcess | None = None
        self._spawns: queue.Queue[Future[JobProcess]] = queue.Queue()
        self.stop = threading.Event()
        # every session id this party ever started (kept across host restarts): a job naming
        # one that is not running any more gets SessionLost, never a new session under that id
        self._seen_file = settings.state_dir / "run" / SEEN_FILE
        for sid in read_seen(self._seen_file)[-ENDED_KEPT:]:
            self._ended[sid] = "the session host restarted"

    # --- driver processes: all made by the main thread (PR_SET_PDEATHSIG follows the thread) --
    def _new_driver(self) -> JobProcess:
        return JobProcess(
            self.settings, self.settings.state_dir / "runner" / "sessions-spawn.log", DRIVER_MODULE
        )

    def _take_driver(self) -> JobProcess:
        with self._lock:
            proc, self._spare = self._spare, None
        if proc is not None and proc.alive():
            return proc
        if proc is not None:
            proc.close()
        fut: Future[JobProcess] = Future()
        self._spawns.put(fut)
        return fut.result(timeout=60)

    def run_main_loop(self) -> None:
        """Make drivers on request, keep the spare, close idle sessions — until `stop`."""
        while not self.stop.is_set():
            try:
                fut = self._spawns.get(timeout=0.5)
            except queue.Empty:
                pass
            else:
                try:
                    fut.set_result(self._new_driver())
                except BaseException as exc:
                    fut.set_exception(exc)
                continue
            self._close_idle()
            self._keep_spare()

    def _keep_spare(self) -> None:
        """A pre-started driver while no session is up (the first job of a party set, or the
        retry after a failure, finds it ready); none beside a live session — it would only hold
        memory (a new party set's session then waits for its driver's import, ≈ 12 s)."""
        with self._lock:
            live = any(s.jobs for s in self._sessions.values())  # established ones
            spare = self._spare
            if live and spare is not None:
                self._spare = None
        if live:
            if spare is not None:
                spare.kill()
            return
        if self.settings.spare_runner and (spare is None or not spare.alive()):
            fresh = self._new_driver()
            with self._lock:
                self._spare = fresh

    def shutdown(self) -> None:
        with self._lock:
            procs = [s.proc for s in self._sessions.values() if s.proc] + [self._spare]
            self._sessions.clear()
            self._spare = None
        for proc in procs:
            if proc is not None:
                proc.kill()

    # --- bookkeeping ----------------------------------------------------------------------
    def _end(self, sess: HostedSession, why: str, *, owner: bool = False) -> None:
        """Close a session for good (kill its driver; its Ray job and actors end with it).

        `owner`: called by the thread relaying the session's job (or no job is running). Any
        other thread only kills the driver's process group: the relay thread sees the end of
        the pipe and closes it itself (closing it here could hand its fd number to a new pipe
        under the relay's feet)."""
        with self._lock:
            if self._sessions.get(sess.id) is sess:
                del self._sessions[sess.id]
            self._ended[sess.id] = why
            while len(self._ended) > ENDED_KEPT:
                self._ended.popitem(last=False)
            busy = sess.busy is not None
        log.info("session %s closed: %s", sess.id, why)
        if sess.proc is None:
            return
        if owner or not busy:
            sess.proc.kill()
        else:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(sess.proc.pid, signal.SIGKILL)

    def _close_idle(self) -> None:
        now = time.monotonic()
        with self._lock:
            idle = [s for s in self._sessions.values() if s.busy is None]
        for s in idle:
            if now - s.last_used > s.idle_timeout_s:
                self._end(s, f"no job for {s.idle_timeout_s:.0f} s")
            elif s.proc is not None and not s.proc.alive():
                self._end(s, f"its driver exited (code {s.proc.proc.poll()}) while idle")

    def close(self, ids: list[str] | None = None) -> list[str]:
        """End the named sessions (all with None), busy or not; their ids in the answer."""
        with self._lock:
            chosen = [s for s in self._sessions.values() if ids is None or s.id in ids]
        for sess in chosen:
            self._end(sess, "closed by request")
        return [s.id for s in chosen]

    def listing(self) -> list[dict[str, Any]]:
        with self._lock:
            return [s.as_dict() for s in self._sessions.values()]

    def _claim(self, params: TaskParams) -> tuple[HostedSession | None, bool, JobFailed | None]:
        """(session, is_new, error message) for a job; the session comes back marked busy."""
        assert params.session is not None
        ref, key = params.session, identity(params)
        parties, spu = frozenset(params.sf_init_config.parties), params.spu_config is not None
        ray_session = head.head_session(self.settings)
        crl = self.settings.crl_stamp()
        self._end_outdated(ref.id, ray_session, crl)
        with self._lock:
            sess = self._sessions.get(ref.id)
            if sess is not None:
                return self._claim_running(sess, params, key)
            if ref.id in self._ended:
                return None, False, refusal(
                    ErrorType.SESSION_LOST,
                    f"its warm session {ref.id} has ended here ({self._ended[ref.id]}); "
                    "the next attempt starts a new one",
                )  # fmt: skip
            retire = self._make_room(ref.id, parties, spu)
            sess = HostedSession(
                ref.id, parties, key, ref.idle_timeout_s, spu=spu, ray_session=ray_session,
                busy=params.execution_id, crl=crl,
            )  # fmt: skip
            self._sessions[ref.id] = sess
            remember(self._seen_file, ref.id)
        for old, why in retire:
            self._end(old, why)
        return sess, True, None

    def _claim_for_release(
        self, params: TaskParams
    ) -> tuple[HostedSession | None, bool, JobFailed | None]:
        """The session a refused job names, if it runs here (never a new one for it)."""
        assert params.session is not None
        with self._lock:
            sess = self._sessions.get(params.session.id)
            if sess is None:
                return None, False, refusal(
                    ErrorType.SESSION_LOST, f"no warm session {params.session.id} runs here"
                )  # fmt: skip
            return self._claim_running(sess, params, identity(params))

    def _end_outdated(
        self, session_id: str, ray_session: str | None, crl: tuple[int, int] | None
    ) -> None:
        """An idle session whose Ray head or revocation list is not today's ends first."""
        with self._lock:
            sess = self._sessions.get(session_id)
        if sess is None or sess.busy is not None:
            return
        if sess.ray_session != ray_session:  # its driver talks to a Ray head that is gone
            self._end(sess, "this party's Ray head restarted since the session began")
        elif sess.crl != crl:  # its fed link took the old revocation list
            self._end(sess, "a new revocation list (NODE_CRL_FILE) was installed since it began")

    def _claim_running(
        self, sess: HostedSession, params: TaskParams, key: str
    ) -> tuple[HostedSession | None, bool, JobFailed | None]:
        """A job for a session that runs here (under the lock): it must be idle and the same."""
        if sess.busy is not None:
            return None, False, refusal(
                ErrorType.INTERNAL,
                f"its warm session {sess.id} is already running job {sess.busy}",
            )  # fmt: skip
        if sess.key != key:
            return None, False, refusal(
                ErrorType.INVALID_PARAMS,
                f"job {params.execution_id} names session {sess.id} with other parties "
                "or ports than the session was started with",
            )  # fmt: skip
        sess.busy = params.execution_id
        return sess, False, None

    def _make_room(
        self, session_id: str, parties: frozenset[str], spu: bool
    ) -> list[tuple[HostedSession, str]]:
        """Under the lock, for a new session: the sessions to end (an idle one of the same
        shape — parties and SPU or not —, the least recently used beyond NODE_MAX_SESSIONS); a
        busy one of the same shape ends once its job does (never killed mid-job)."""
        retire: list[tuple[HostedSession, str]] = []
        for other in self._sessions.values():
            if other.parties == parties and other.spu == spu:
                why = f"session {session_id} of the same parties replaced it"
                if other.busy is None:
                    retire.append((other, why))
                else:
                    other.retire_after_job = why
        replaced = {o.id for o, _ in retire}
        idle = sorted(
            (s for s in self._sessions.values() if s.busy is None and s.id not in replaced),
            key=lambda s: s.last_used,
        )
        excess = len(self._sessions) - len(retire) + 1 - self.settings.max_sessions
        retire += [(s, "more sessions than NODE_MAX_SESSIONS") for s in idle[: max(0, excess)]]
        return retire

    # --- one connection: one job ------------------------------------------------------------
    def serve_connection(self, conn: socket.socket) -> None:
        with contextlib.closing(conn):
            line = conn.makefile("rb").readline()
            if not line:
                return
            req = json.loads(line)
            if req.get("op") == "list":
                wire.send(conn, {"type": "sessions", "sessions": self.listing()})
                return
            if req.get("op") == "close":  # by an operator (or a test): ids, or every session
                closed = self.close(req.get("ids"))
                wire.send(conn, {"type": "closed", "ids": closed})
                return
            self._run(conn, JobSpec.model_validate(req["spec"]))

    def _run(self, conn: socket.socket, spec: JobSpec) -> None:
        params = spec.params
        if params.session is None:
            wire.send(conn, refusal(ErrorType.INVALID_PARAMS, "a job without a session was sent"))
            return
        if spec.refused is not None:  # only a session that runs here, idle, may release peers
            sess, new, err = self._claim_for_release(params)
        else:
            sess, new, err = self._claim(params)
        if err is not None or sess is None:
            wire.send(conn, err or {})
            return
        try:
            self._start_job(conn, spec, params, sess, new)
        except BaseException as exc:  # never left busy: the session ends with its job
            self._end(sess, f"the host failed while running its job: {exc!r}", owner=True)
            raise

    def _start_job(
        self, conn: socket.socket, spec: JobSpec, params: TaskParams,
        sess: HostedSession, new: bool,
    ) -> None:  # fmt: skip
        if new:
            busy = busy_port(params, self.settings)
            if busy is not None:
                self._end(sess, "its ports were in use", owner=True)
                from node.launch import failures

                info: ErrorInfo = failures.port_in_use(*busy)
                wire.send(conn, refusal(info.type, info.message))
                return
            try:
                sess.proc = self._take_driver()
            except Exception as exc:
                self._end(sess, "no driver could be started", owner=True)
                wire.send(
                    conn,
                    refusal(ErrorType.RUNNER_START_ERROR, f"no session driver could start: {exc}"),
                )
                return
            with self._lock:
                replaced = self._sessions.get(sess.id) is not sess
            if replaced:  # closed while its driver was being made
                self._end(sess, self._ended.get(sess.id, "closed"), owner=True)
                wire.send(
                    conn,
                    refusal(ErrorType.SESSION_LOST, f"its warm session {sess.id} was closed"),
                )
                return
        proc = sess.proc
        assert proc is not None
        if not wire.send(
            conn, SessionStarted(id=sess.id, new=new, pid=proc.pid, job=sess.jobs + 1)
        ):
            self._end(sess, "its job's task was gone before the job started", owner=True)
            return
        if not proc.wait_ready(READY_TIMEOUT_S):
            self._end(sess, "its driver did not start", owner=True)
            wire.send(
                conn,
                refusal(
                    ErrorType.RUNNER_START_ERROR,
                    f"the driver of session {sess.id} did not start (exit code "
                    f"{proc.proc.poll()}); see {self.settings.state_dir / 'runner'}",
                ),
            )
            return
        proc.send_job(spec)
        self._relay(conn, sess, proc)

    def _job_done(self, sess: HostedSession) -> None:
        """The session's job ended and left it in step: idle, for the next one."""
        with self._lock:
            sess.busy, sess.last_used, sess.jobs = None, time.monotonic(), sess.jobs + 1
        if sess.retire_after_job:
            self._end(sess, sess.retire_after_job, owner=True)

    def _relay(self, conn: socket.socket, sess: HostedSession, proc: JobProcess) -> None:
        while True:
            for msg in proc.read_messages(0.25):
                if isinstance(msg, ChildExited):
                    with contextlib.suppress(Exception):
                        proc.proc.wait(timeout=10)
                    msg = ChildExited(rc=proc.proc.poll())
                    self._end(sess, f"its driver exited (code {msg.rc}) during a job", owner=True)
                    wire.send(conn, msg)
                    return
                delivered = wire.send(conn, msg)
                if isinstance(msg, JobResult):
                    if not delivered:
                        self._end(sess, "its job's task was gone when the result came", owner=True)
                        return
                    self._job_done(sess)
                    return
                if isinstance(msg, JobFailed) and _peer_refused(msg):
                    self._job_done(sess)  # a peer refused: nothing ran, the session stays
                    return
                if isinstance(msg, JobFailed):
                    self._end(sess, "its job failed", owner=True)
                    return
            if wire.gone(conn):
                self._end(sess, "its job was stopped (cancel, deadline or time limit)", owner=True)
                return


def _peer_refused(msg: JobFailed) -> bool:
    return msg.error.refusal and msg.error.type == ErrorType.PEER_REFUSED


def serve(settings: NodeSettings) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    host = Host(settings)
    # before it listens: a worker that sees it listen may stop it at once (and the socket file
    # must go with it)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: host.stop.set())
    path = socket_path(settings)
    private_folder(path.parent)  # ours, 0700, not a link: or the host does not start
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        listener.bind(str(path))
    finally:
        os.umask(old_umask)
    listener.listen(64)

    def accept() -> None:
        while not host.stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            try:
                check_peer(conn, "process connecting to the session host")
            except (OSError, SocketUnsafe) as exc:
                security_log.warning("session host of party %s refused: %s", settings.party, exc)
                conn.close()
                continue
            threading.Thread(
                target=_guarded, args=(host, conn), name="session-job", daemon=True
            ).start()

    threading.Thread(target=accept, name="session-accept", daemon=True).start()
    log.info("session host of party %s listening on %s", settings.party, path)
    try:
        host.run_main_loop()
    finally:
        listener.close()
        remove_socket(path)
        host.shutdown()
    return 0


def _guarded(host: Host, conn: socket.socket) -> None:
    try:
        host.serve_connection(conn)
    except Exception:
        log.exception("a session request failed")


def main() -> int:
    return serve(get_settings())


if __name__ == "__main__":
    sys.exit(main())

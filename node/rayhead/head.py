"""This party's Ray head: start, stop (by its own PIDs — never `ray stop`), status.

Two parties' heads coexist on one machine, so every port comes from NodeSettings. Ray has no
authentication: these ports must never face other parties.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from node.rayhead.supervisor import READY, STOP_GRACE_S, proc_stat
from node.settings import NodeSettings


def temp_dir(settings: NodeSettings) -> Path:
    # Ray's unix-socket paths must stay short: keep the temp dir under /tmp with a short name.
    if settings.ray_temp_dir:
        return settings.ray_temp_dir
    digest = hashlib.sha1(str(settings.state_dir.resolve()).encode()).hexdigest()[:8]
    return Path(f"/tmp/ray-{settings.party}-{digest}")


def head_session(settings: NodeSettings) -> str | None:
    """The name of the Ray head's current session (Ray's `session_latest` link): it changes
    when the head restarts, so a driver connected before then is stale."""
    try:
        return os.readlink(temp_dir(settings) / "session_latest")
    except OSError:
        return None


def pid_file(settings: NodeSettings) -> Path:
    return settings.state_dir / "ray-head.pid"


def log_file(settings: NodeSettings) -> Path:
    return settings.state_dir / "ray-head.log"


def start_command(settings: NodeSettings) -> list[str]:
    _host, _, port = settings.ray_address.rpartition(":")
    ray = str(Path(sys.executable).with_name("ray"))
    cmd = [
        ray,
        "start",
        "--head",
        f"--node-ip-address={settings.ray_node_ip}",
        f"--port={port}",
        f"--min-worker-port={settings.ray_min_worker_port}",
        f"--max-worker-port={settings.ray_max_worker_port}",
        "--include-dashboard=false",
        f"--temp-dir={temp_dir(settings)}",
        "--disable-usage-stats",
        f'--resources={{"{settings.party}": 100}}',
    ]
    # 0 = Ray picks the port (`ray start` refuses 0 for some of them, so the flag is left out)
    for flag, value in (
        ("node-manager-port", settings.ray_node_manager_port),
        ("object-manager-port", settings.ray_object_manager_port),
        ("runtime-env-agent-port", settings.ray_runtime_env_agent_port),
    ):
        if value:
            cmd.append(f"--{flag}={value}")
    if settings.ray_num_cpus is not None:
        cmd.append(f"--num-cpus={settings.ray_num_cpus}")
    return cmd


def supervised_command(settings: NodeSettings) -> list[str]:
    """The head as one long-lived process: node/rayhead/supervisor.py running `ray start`."""
    return [sys.executable, "-m", "node.rayhead.supervisor", *start_command(settings)]


def head_environment(settings: NodeSettings) -> dict[str, str]:
    from node.dataroot.paths import scratch_dir
    from node.rayhead.hook import HOOK

    # every Ray worker of this party (SPU runtime included) inherits TMPDIR: inside the data root
    return dict(
        os.environ,
        RAY_USAGE_STATS_ENABLED="0",
        RAY_START_HOOK=HOOK,
        # Ray starts one idle worker per CPU when the first driver connects: the actors of this
        # node's jobs and sessions did not use them, they stayed idle (≈80 MB each)
        RAY_prestart_worker_first_driver="0",
        # no metrics agent (node/rayhead/agent.py stands in for the dashboard agent): nothing
        # of the head exports metrics to it
        RAY_enable_metrics_collection="0",
        TMPDIR=str(scratch_dir(settings.data_root)),
    )


def run_foreground(settings: NodeSettings) -> None:
    """Become the head's supervisor in this process: for a service manager such as systemd,
    which stops it and every process it started through its own cgroup."""
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    cmd = supervised_command(settings)
    os.execve(cmd[0], cmd, head_environment(settings))


def _port_open(address: str, timeout: float = 0.5) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return True
    except OSError:
        return False


def running_pid(settings: NodeSettings) -> int | None:
    path = pid_file(settings)
    if not path.exists():
        return None
    try:
        pid = int(path.read_text().strip())
    except ValueError:
        return None
    return None if _zombie(pid) else pid


def is_up(settings: NodeSettings) -> bool:
    return _port_open(settings.ray_address)


def start(settings: NodeSettings, timeout: float = 120.0, on_wait=None) -> int:
    """Start the head (its supervisor) in its own session; return the supervisor's PID once
    `ray start` has ended with GCS, raylet and the agents up."""
    if (pid := running_pid(settings)) is not None and is_up(settings):
        return pid
    if is_up(settings):
        raise RuntimeError(
            f"something already listens on {settings.ray_address}: not this party's head"
        )
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    logf = open(log_file(settings), "ab")
    offset = logf.tell()  # this start's lines only: the log keeps earlier heads' lines
    env = head_environment(settings)
    proc = subprocess.Popen(
        supervised_command(settings),
        stdout=logf,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        env=env,
    )
    logf.close()
    pid_file(settings).write_text(str(proc.pid))
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(
                f"ray head exited with code {proc.returncode}; see {log_file(settings)}"
            )
        if is_up(settings) and _supervisor_ready(settings, offset):
            return proc.pid
        if on_wait:
            on_wait(f"waiting for Ray head on {settings.ray_address}")
        time.sleep(0.5)
    stop(settings)
    raise TimeoutError(f"ray head did not come up on {settings.ray_address} within {timeout:.0f}s")


def _supervisor_ready(settings: NodeSettings, offset: int) -> bool:
    # the supervisor says so once `ray start` has ended, with GCS, raylet and the agents up
    try:
        with open(log_file(settings), "rb") as f:
            f.seek(offset)
            return f"supervisor: {READY} ".encode() in f.read()
    except OSError:
        return False


def _zombie(pid: int) -> bool:
    """Gone, or exited and not yet reaped by its parent (the supervisor is a child of whoever
    called `start`: in that process it stays a zombie after it exits until it is reaped)."""
    fields = proc_stat(pid)
    return fields is None or fields[0] == "Z"


def _ours(pid: int) -> bool:
    """The pid file's process is a head supervisor, or gone (its session may still run Ray):
    not another program that got the pid of a supervisor long gone."""
    try:
        return b"node.rayhead.supervisor" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True


def _session_pids(sid: int) -> list[int]:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(sid, os.WNOHANG)  # the supervisor, when this process started it
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getsid(int(entry.name)) == sid and not _zombie(int(entry.name)):
                pids.append(int(entry.name))
        except (ProcessLookupError, PermissionError):
            continue
    return pids


def stop(settings: NodeSettings, timeout: float = 30.0) -> bool:
    """Stop this party's head and every process of its session. True if something was stopped.
    (The session, not only the supervisor: a supervisor killed by SIGKILL leaves Ray running.)"""
    try:
        pid = int(pid_file(settings).read_text().strip())
    except (OSError, ValueError):
        return False
    sid = pid  # started with start_new_session: the supervisor's pid is the session id
    if not _session_pids(sid) or not _ours(pid):
        pid_file(settings).unlink(missing_ok=True)
        return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    # the supervisor sends SIGKILL after its grace; without it (killed), GCS ignores SIGTERM
    start = time.monotonic()
    grace = min(timeout, STOP_GRACE_S + 3.0)
    while (left := _session_pids(sid)) and time.monotonic() - start < timeout:
        if time.monotonic() - start > grace:
            for p in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p, signal.SIGKILL)
        time.sleep(0.3)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    pid_file(settings).unlink(missing_ok=True)
    return True


def status(settings: NodeSettings) -> dict:
    pid = running_pid(settings)
    return {
        "address": settings.ray_address,
        "pid": pid,
        "up": is_up(settings),
        "processes": len(_session_pids(pid)) if pid else 0,
        "temp_dir": str(temp_dir(settings)),
    }

"""This party's Ray head as the node starts it (node/rayhead/head.py): a real `ray start` under the
supervisor (node/rayhead/supervisor.py), a real driver using it, a real raylet killed."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from node.rayhead import head, hook
from node.settings import NodeSettings


@pytest.fixture()
def head_settings(tmp_path, ports):
    ray_tmp = Path(tempfile.mkdtemp(prefix="rh-", dir="/tmp"))  # Ray's socket paths stay short
    workers = ports.block(32)
    settings = NodeSettings(
        party="alice",
        broker_url="rediss://node:s3cret-Zq81@alice.example:6380/0",
        data_root=tmp_path / "data",
        state_dir=tmp_path / "state",
        cert_file=tmp_path / "alice.crt",
        key_file=tmp_path / "alice.key",
        ca_file=tmp_path / "ca.crt",
        trusted_signers=str(tmp_path / "coordinator.crt"),
        ray_address=f"127.0.0.1:{ports.one()}",
        ray_temp_dir=ray_tmp,
        ray_num_cpus=1,
        ray_node_manager_port=ports.one(),
        ray_object_manager_port=ports.one(),
        ray_min_worker_port=workers.start,
        ray_max_worker_port=workers.stop - 1,
    )
    (tmp_path / "data").mkdir()
    try:
        yield settings
    finally:
        head.stop(settings)
        shutil.rmtree(ray_tmp, ignore_errors=True)


def head_processes(pid: int) -> dict[int, str]:
    """pid → what it runs, for the head's supervisor and everything under it."""
    root = psutil.Process(pid)
    out = {}
    for proc in [root, *root.children(recursive=True)]:
        try:
            out[proc.pid] = " ".join(proc.cmdline())
        except psutil.NoSuchProcess:
            continue
    return out


def wait_gone(pid: int, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.2)
    raise AssertionError(f"process {pid} still runs after {timeout:.0f} s")


def test_the_head_runs_only_what_a_party_uses_and_a_driver_runs_tasks_on_it(head_settings):
    pid = head.start(head_settings)
    procs = head_processes(pid)
    cmds = " | ".join(procs.values())
    assert "node.rayhead.supervisor" in procs[pid]
    assert "gcs_server" in cmds and "raylet" in cmds and "log_monitor.py" in cmds
    # the dashboard agent's stand-in (its script, not the raylet's flag naming it)
    assert any(cmd.split()[1:2] == [hook.AGENT_SCRIPT] for cmd in procs.values()), cmds
    # what the hook leaves out, and `ray start` itself: it has ended
    absent_ones = (
        "ray.util.client.server",
        "_private/monitor.py",
        "dashboard/dashboard.py",
        "dashboard/agent.py",
        "start --head",
    )
    for absent in absent_ones:
        assert not any(absent in cmd for p, cmd in procs.items() if p != pid), absent

    address = head_settings.ray_address
    driver = (
        f"import ray; ray.init(address='{address}', logging_level='ERROR', log_to_driver=False)\n"
        "@ray.remote(resources={'alice': 1})\n"
        "def double(x): return 2 * x\n"
        "print(sum(ray.get([double.remote(i) for i in range(10)])))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", driver], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "90"

    session = set(head_processes(pid))
    assert head.stop(head_settings) is True
    assert head.running_pid(head_settings) is None
    assert not [p for p in session if psutil.pid_exists(p) and _alive(p)]


def test_a_dead_raylet_takes_the_head_down_and_the_log_names_it(head_settings):
    pid = head.start(head_settings)
    procs = head_processes(pid)
    raylet = next(p for p, cmd in procs.items() if "/raylet/raylet" in cmd)
    os.kill(raylet, signal.SIGKILL)
    wait_gone(pid)
    assert not [p for p in procs if p != pid and _alive(p)]
    log = head.log_file(head_settings).read_text()
    assert f"raylet (pid {raylet}) exited: killed by SIGKILL" in log
    assert not head.is_up(head_settings)
    # the party starts a new head on the same ports
    again = head.start(head_settings)
    assert again != pid and head.is_up(head_settings)


def test_stop_ends_rays_processes_even_when_the_supervisor_was_killed(head_settings):
    pid = head.start(head_settings)
    procs = head_processes(pid)
    os.kill(pid, signal.SIGKILL)  # Ray's processes are left without their watcher
    wait_gone(pid)
    assert [p for p in procs if p != pid and _alive(p)]
    assert head.stop(head_settings) is True
    assert not [p for p in procs if _alive(p)]
    assert not head.is_up(head_settings)
    assert head.stop(head_settings) is False  # nothing left: says so


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False

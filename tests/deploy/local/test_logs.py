"""The local federation's logs (`make demo`): capped by size while their processes run."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from deploy.local.federation import LocalFederation
from deploy.local.logs import CHUNK, spawn
from node import logfiles

pytestmark = pytest.mark.timeout(120)

CAP = 1000


def wait_for(pred, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


def text(path: Path) -> str:
    return path.read_text() if path.exists() else ""


@pytest.fixture
def small_cap(monkeypatch):
    monkeypatch.setattr(logfiles, "LOG_MAX_BYTES", CAP)


def test_a_log_over_the_cap_is_rotated_while_its_process_runs(tmp_path, small_cap):
    log = tmp_path / "worker.log"
    # two bursts, each over the cap; the second only once the first is in the file (the
    # launcher may read a burst in one chunk, and it rotates before writing the next chunk)
    script = (
        "import os, sys, time\n"
        "def burst(first):\n"
        "    for i in range(first, first + 30):\n"
        "        print(f'line {i:03d} ' + 'x' * 90, flush=True)\n"
        "burst(0)\n"
        "def logged():\n"
        "    files = (sys.argv[1], sys.argv[1] + '.1')\n"
        "    return ''.join(open(f).read() for f in files if os.path.exists(f))\n"
        "while 'line 029' not in logged():\n"
        "    time.sleep(0.01)\n"
        "burst(30)\n"
        "print('all written', flush=True)\n"
        "time.sleep(60)\n"
    )
    proc, capped = spawn([sys.executable, "-c", script, str(log)], log)
    try:
        wait_for(lambda: "all written" in text(log))  # the newest line: in the live file
        older = log.with_name("worker.log.1")
        assert older.exists() and "line 000" not in text(log)
        for path in (log, older):
            assert path.stat().st_size <= CAP + CHUNK
        assert proc.poll() is None  # rotated under a running process
        assert sorted(p.name for p in tmp_path.iterdir()) == ["worker.log", "worker.log.1"]
    finally:
        proc.kill()
        proc.wait(10)
        capped.wait()


def test_a_log_is_whole_once_its_process_ended(tmp_path):
    log = tmp_path / "coordinator.log"
    log.write_bytes(b"an earlier run\n")
    proc, capped = spawn([sys.executable, "-c", "print('first'); print('last')"], log)
    proc.wait(30)
    capped.wait()
    assert log.read_text() == "an earlier run\nfirst\nlast\n"  # appended, nothing lost


def test_a_demo_partys_redis_log_is_capped(tmp_path, small_cap):
    fed = LocalFederation(tmp_path / "fed", ["alice"], log=lambda m: None)
    fed.create_certs()
    node = fed.nodes["alice"]
    try:
        fed.start_redis(node)
        # its start says more than CAP; the launcher may have read it in one chunk, and it
        # rotates before writing the next: each SAVE logs a line ("DB saved on disk")
        client = node.redis()
        wait_for(lambda: client.save() and (node.base / "redis.log.1").exists())
        assert "Ready to accept connections" in text(node.base / "redis.log") + text(
            node.base / "redis.log.1"
        )
        assert node.procs["redis"].poll() is None
    finally:
        fed.stop()
    assert "redis" not in node.procs and "redis" not in node.logs

"""`make demo` (python -m deploy.local demo): the whole federation + coordinator from one command,
on fresh ports and a temp directory; every process it started is gone afterwards."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from deploy.local.demo import sample_ids
from deploy.local.ports import port_free

REPO = Path(__file__).resolve().parents[2]


def _demo(base: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "deploy.local",
            "demo",
            "--rows",
            "600",
            "--port",
            "0",
            "--base",
            str(base),
            *extra,
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(os.environ, COLUMNS="200"),
        start_new_session=True,
    )


def _redis_ports(base: Path) -> list[int]:
    topo = yaml.safe_load((base / "topology.yaml").read_text())
    return [int(p["broker_url"].rsplit(":", 1)[1].split("/")[0]) for p in topo["parties"].values()]


def _assert_all_stopped(base: Path) -> None:
    for port in _redis_ports(base):
        assert port_free(port, "127.0.0.1"), f"something still listens on Redis port {port}"
    for pidfile in base.rglob("*.pid"):
        try:
            pid = int(pidfile.read_text().strip())
        except ValueError:
            continue
        assert (
            not Path(f"/proc/{pid}").exists()
            or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
        ), pidfile


def _truth(rows: int) -> set[str]:
    ids = sample_ids(["alice", "bob"], rows)
    return {f"u{i:09d}" for i in set(ids["alice"]) & set(ids["bob"])}


def test_demo_once_runs_a_psi_and_stops_everything(tmp_path):
    base = tmp_path / "demo"
    proc = _demo(base, "--once", "--parties", "alice,bob,carol")
    try:
        out, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, out[-4000:]
    assert "intersection" in out and "(expected 300)" in out, out[-3000:]
    # SecretFlow's start-up is paid before the first PSI, by the warm-up of its pair
    assert "warm session of alice + bob up" in out, out[-3000:]
    assert "token" in out and "/docs" in out
    with open(base / "parties" / "alice" / "data" / "out" / "demo-intersection.csv") as fh:
        got = {row["uid"] for row in csv.DictReader(fh)}
    assert got == _truth(600)
    assert not (base / "parties" / "bob" / "data" / "out" / "demo-intersection.csv").exists()
    _assert_all_stopped(base)


def test_demo_keeps_running_until_ctrl_c(tmp_path):
    base = tmp_path / "demo"
    proc = _demo(base)
    lines: list[str] = []
    try:
        end = time.monotonic() + 600
        for line in proc.stdout:
            lines.append(line)
            if "Ctrl-C" in line:
                break
            assert time.monotonic() < end, "".join(lines)[-3000:]
        assert any("Ctrl-C" in x for x in lines), "".join(lines)[-3000:]
        assert all(not port_free(p, "127.0.0.1") for p in _redis_ports(base))  # still up
        os.killpg(proc.pid, signal.SIGINT)
        rest, _ = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, "".join(lines)[-3000:]
    assert "stopped." in rest
    _assert_all_stopped(base)

"""One supervisor for a party's long-running processes (`worker --role all` and `up`).

Every child runs in the supervisor's own process group. When one exits, the others are stopped
(SIGTERM, then SIGKILL after a grace period) and the supervisor reports failure; SIGTERM or
SIGINT to the supervisor is passed to every child, and once they have all exited it reports
success.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from types import FrameType

from node.settings import NodeSettings

GRACE_S = 60.0  # a Celery worker finishes its warm shutdown within this


def node_children(
    settings: NodeSettings, *, loglevel: str = "info", slots: int = 1, probe: bool = True
) -> dict[str, list[str]]:
    """The processes of one party's node: both Celery workers, when NODE_PROBE_PORT is set (and
    `probe`) the mTLS probe, and when NODE_METRICS_PORT is set the Prometheus exporter."""
    base = [sys.executable, "-m", "node"]
    worker = [*base, "worker", f"--loglevel={loglevel}", f"--slots={slots}"]
    children = {"sf worker": [*worker, "--role=sf"], "web worker": [*worker, "--role=web"]}
    if probe and settings.probe_port is not None:
        children["probe"] = [*base, "probe"]
    if settings.metrics_port is not None:
        children["metrics"] = [*base, "metrics"]
    return children


def supervise(
    children: Mapping[str, Sequence[str]],
    *,
    say: Callable[[str], None] = print,
    grace_s: float = GRACE_S,
    poll_s: float = 0.5,
) -> int:
    """Run `children` (name → argv) until one exits (→ 1) or this process gets SIGTERM/SIGINT
    (→ 0 once every child has exited). The previous signal handlers are restored on return."""
    procs: dict[str, subprocess.Popen[bytes]] = {}
    stopping = False

    def forward(signum: int, _frame: FrameType | None = None) -> None:
        nonlocal stopping
        stopping = True
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for name, argv in children.items():
            procs[name] = subprocess.Popen(list(argv))
            if stopping:  # a signal arrived while the children were being started
                forward(signal.SIGTERM)
        failed = None
        while failed is None:
            failed = next((n for n, p in procs.items() if p.poll() is not None), None)
            if failed is None:
                time.sleep(poll_s)
        requested = stopping
        if not requested:
            say(f"{failed} exited with code {procs[failed].returncode}; stopping the others")
            forward(signal.SIGTERM)
        _wait_all(procs, grace_s, say)
        return 0 if requested else 1
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _wait_all(
    procs: Mapping[str, subprocess.Popen[bytes]], grace_s: float, say: Callable[[str], None]
) -> None:
    end = time.monotonic() + grace_s
    for name, p in procs.items():
        try:
            p.wait(timeout=max(0.1, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            say(f"{name} did not stop within {grace_s:.0f} s; killing it")
            p.kill()
            p.wait()

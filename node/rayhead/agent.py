"""What this party's raylet runs as its dashboard agent: `python …/node/rayhead/agent.py …`
(the raylet's arguments are ignored; the standard library only, ≈10 MB).

The raylet starts a "dashboard agent" and exits when it exits; with metrics collection off
(`enable_metrics_collection`, node/rayhead/head.py) it needs nothing else from it. Ray's own agent
(≈125 MB) serves what a party never uses, on every interface: metrics export, and an HTTP
server (52365) for the dashboard's log and job APIs — whoever reaches that port can submit a
Ray job, i.e. run a command on the host. `node/rayhead/hook.py` has the raylet start this
instead: it stays until its parent (the raylet) is gone, or SIGTERM, and exits 0.
"""

from __future__ import annotations

import os
import signal
import sys
import time

POLL_S = 1.0


def main() -> int:
    parent = os.getppid()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
    while os.getppid() == parent:  # re-parented: the raylet is gone
        time.sleep(POLL_S)
    return 0


if __name__ == "__main__":
    sys.exit(main())

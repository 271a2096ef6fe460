"""What this party's Ray head leaves out: loaded by `ray start` through `RAY_START_HOOK`
(see node/rayhead/head.py), in the `ray start` process, before it starts anything.

A party's head serves one machine's drivers and workers, reached by their GCS address. It never
serves a Ray client (`ray://`), never autoscales and nobody opens its dashboard, so it starts
neither the Ray client server (≈85 MB), nor the autoscaler monitor (≈85 MB), nor the dashboard
API server (≈135 MB); and the raylet's dashboard agent (≈125 MB, with an HTTP job API on every
interface) is node/rayhead/agent.py, a process that only lives as long as the raylet.

`ray start` has no flag for these that works on a head with the client installed
(`--ray-client-server-port` refuses 0) or at all (the dashboard's API server starts even with
`--include-dashboard=false`; the raylet always starts an agent). The hook sets what Ray's own
parameters allow, replaces `Node.start_api_server` by what Ray does when that server fails to
start (no URL, no process), and rewrites the raylet's `--dashboard_agent_command`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

HOOK = "node.rayhead.hook.configure"  # the value of RAY_START_HOOK
AGENT_FLAG = "--dashboard_agent_command="
AGENT_SCRIPT = str(Path(__file__).with_name("agent.py"))


def configure(ray_params: Any, head: bool) -> None:
    if not head:
        return
    import ray._private.node as ray_node
    import ray._private.ray_constants as ray_constants

    ray_params.ray_client_server_port = None
    ray_params.no_monitor = True

    def start_api_server(self: Any, *, include_dashboard: Any, raise_on_failure: bool) -> None:
        self._webui_url = None

    ray_node.Node.start_api_server = start_api_server  # type: ignore[method-assign]

    import ray._private.services as services

    start_ray_process = services.start_ray_process

    def start_with_our_agent(command: list[str], process_type: str, *args: Any, **kw: Any) -> Any:
        if process_type == ray_constants.PROCESS_TYPE_RAYLET:
            command = [_agent_flag(a) for a in command]
        return start_ray_process(command, process_type, *args, **kw)

    services.start_ray_process = start_with_our_agent


def _agent_flag(arg: str) -> str:
    """The raylet's `--dashboard_agent_command=…` with node/rayhead/agent.py instead."""
    if not arg.startswith(AGENT_FLAG):
        return arg
    return AGENT_FLAG + subprocess.list2cmdline([sys.executable, AGENT_SCRIPT])

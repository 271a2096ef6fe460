"""What this party's Ray head leaves out: loaded by `ray start` through `RAY_START_HOOK`
(see node/rayhead.py), in the `ray start` process, before it starts anything.

A party's head serves one machine's drivers and workers, reached by their GCS address. It never
serves a Ray client (`ray://`), never autoscales and nobody opens its dashboard, so it starts
neither the Ray client server (≈85 MB), nor the autoscaler monitor (≈85 MB), nor the dashboard
API server (≈135 MB). `ray start` has no flag for the last two that works on a head with the
client installed (`--ray-client-server-port` refuses 0) or at all (the dashboard's API server
starts even with `--include-dashboard=false`); the hook sets what Ray's own parameters allow
and replaces `Node.start_api_server` by what Ray does when that server fails to start (no URL,
no process).
"""

from __future__ import annotations

from typing import Any

HOOK = "node.rayhead_hook.configure"  # the value of RAY_START_HOOK


def configure(ray_params: Any, head: bool) -> None:
    if not head:
        return
    import ray._private.node as ray_node

    ray_params.ray_client_server_port = None
    ray_params.no_monitor = True

    def start_api_server(self: Any, *, include_dashboard: Any, raise_on_failure: bool) -> None:
        self._webui_url = None

    ray_node.Node.start_api_server = start_api_server  # type: ignore[method-assign]

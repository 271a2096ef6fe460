"""Where a party's session host listens (a Unix socket only the node's user may open)."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from node.settings import NodeSettings

SOCKET_NAME = "sessions.sock"
MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes


def socket_path(settings: NodeSettings) -> Path:
    """`<state_dir>/run/sessions.sock`, or — when that path is too long for a Unix socket — a
    private folder in the temp dir named after the state dir."""
    path = settings.state_dir / "run" / SOCKET_NAME
    if len(os.fsencode(path)) < MAX_SOCKET_PATH:
        return path
    digest = hashlib.sha256(os.fsencode(settings.state_dir.resolve())).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"partyline-{os.getuid()}-{digest}" / SOCKET_NAME

"""Where a party's session host listens (a Unix socket only the node's user may open)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path

from node.settings import NodeSettings

SOCKET_NAME = "sessions.sock"
MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes
FALLBACK_PREFIX = "partyline-"


def socket_path(settings: NodeSettings) -> Path:
    """`<state_dir>/run/sessions.sock`, or — when that path is too long for a Unix socket — a
    private folder in the temp dir named after the state dir."""
    path = settings.state_dir / "run" / SOCKET_NAME
    if len(os.fsencode(path)) < MAX_SOCKET_PATH:
        return path
    digest = hashlib.sha256(os.fsencode(settings.state_dir.resolve())).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"{FALLBACK_PREFIX}{os.getuid()}-{digest}" / SOCKET_NAME


def remove(path: Path) -> None:
    """Remove the socket file and, when it lives in a private folder of the temp dir (the
    fallback above), that folder too: a stopped host leaves nothing in /tmp."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    folder = path.parent
    if folder.parent == Path(tempfile.gettempdir()) and folder.name.startswith(FALLBACK_PREFIX):
        with contextlib.suppress(OSError):  # not empty, or already gone
            folder.rmdir()


def answers(path: Path, timeout: float = 1.0) -> bool:
    """Whether a session host accepts a connection on `path` now (it reads the empty request
    as nothing asked). A socket file left by a host that was killed refuses: False."""
    import socket

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        sock.close()

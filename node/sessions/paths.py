"""Where a party's session host listens (a Unix socket only the node's user may open)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import stat
import struct
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


class SocketUnsafe(RuntimeError):
    """The socket's folder, or the process at the other end, is not this node user's own."""


def private_folder(folder: Path) -> None:
    """Make (if missing) and check the socket's folder: a real folder, not a link, owned by this
    user and open to nobody else (0700; a folder of ours with wider rights is narrowed). In the
    shared temp dir another local user could have made it first — then it is refused, and the
    job spec never reaches a listener of theirs."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.mkdir(folder, 0o700)
    st = os.lstat(folder)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        raise SocketUnsafe(
            f"the session socket's folder {folder} is not a folder of this user (uid "
            f"{os.getuid()}): a link, or made by uid {st.st_uid}; refusing to use it"
        )
    if st.st_mode & 0o077:
        os.chmod(folder, 0o700, follow_symlinks=False)


def peer_uid(sock: socket.socket) -> int:
    """The user id of the process at the other end of a Unix socket (SO_PEERCRED)."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", raw)[1])


def check_peer(sock: socket.socket, what: str) -> None:
    """Refuse the other end unless it runs as this user (the node's)."""
    uid = peer_uid(sock)
    if uid != os.getuid():
        raise SocketUnsafe(f"the {what} runs as uid {uid}, not this node's uid {os.getuid()}")


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

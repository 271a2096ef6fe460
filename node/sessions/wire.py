"""The session host's side of its Unix-socket line protocol (one JSON object a line; the task's
side is node.sessions.client)."""

from __future__ import annotations

import json
import select
import socket
from typing import Any

from node.launch.child_spec import Message, encode


def send(conn: socket.socket, msg: Message | dict[str, Any]) -> bool:
    """Send one message (a job's: `child_spec`; an answer to list or close: a dict); False when
    the task's side is gone."""
    line = encode(msg) if isinstance(msg, Message) else (json.dumps(msg) + "\n").encode()
    try:
        conn.sendall(line)
        return True
    except OSError:
        return False


def gone(conn: socket.socket) -> bool:
    """The task's side closed (it sends nothing after its request)."""
    readable, _, _ = select.select([conn], [], [], 0)
    if not readable:
        return False
    try:
        return conn.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True

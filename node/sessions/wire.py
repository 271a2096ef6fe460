"""The session host's side of its Unix-socket line protocol (one JSON object a line; the task's
side is node.sessions.client)."""

from __future__ import annotations

import json
import select
import socket
from typing import Any

from node.contract import ErrorType


def refusal(kind: ErrorType, message: str) -> dict[str, Any]:
    """The message that refuses a request (the task reports it as the job's error)."""
    return {"type": "error", "error": {"type": kind.value, "message": message, "refusal": True}}


def send(conn: socket.socket, msg: dict[str, Any]) -> bool:
    """Send one message; False when the task's side is gone."""
    try:
        conn.sendall((json.dumps(msg, default=str) + "\n").encode())
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

"""A Redis client that refuses a reply before loading it when it is larger than stated.

Whatever the coordinator reads from a party's Redis — stream entries, heartbeats, Celery results
— is written by that party, and a party may be hostile (or its Redis may be). redis-py loads a
reply whole, whatever its size: a 1 GB stream entry or result would be loaded before any check
could look at its length. This parser (redis-py's own RESP3 parser over a bounded socket buffer)
reads the length in each bulk and array header first, and stops with `ReplyTooLarge` — before
reading the body — when a bulk string is longer than `max_bulk`, an array has more than
`max_items` elements, or the reply as a whole passes `max_reply` bytes. The connection is then
closed (redis-py drops a connection whose reply failed), so nothing of the reply stays behind.
"""

from __future__ import annotations

from typing import Any

import redis
from redis._parsers import _RESP3Parser
from redis._parsers.socket import SocketBuffer


class ReplyTooLarge(redis.RedisError):
    """A reply over the client's bounds (`size` is the bulk's or array's stated length, or the
    bytes read so far). Not a ConnectionError: redis-py does not retry it."""

    def __init__(self, what: str, size: int, limit: int) -> None:
        super().__init__(f"{what} of {size} > {limit}: refused before loading")
        self.size = size
        self.limit = limit


# RESP3 headers that state a length: bulk, verbatim and error strings (bytes); arrays, sets,
# pushes (elements); maps and attributes (pairs: two elements each)
_SIZED = {
    b"$": ("a value", 1), b"=": ("a value", 1), b"!": ("a value", 1),
    b"*": ("an array", 1), b"~": ("an array", 1), b">": ("an array", 1),
    b"%": ("an array", 2), b"|": ("an array", 2),
}  # fmt: skip


class _BoundedBuffer(SocketBuffer):
    limits: tuple[int, int, int] = (0, 0, 0)  # max_bulk, max_items, max_reply (set per class)

    def _read_from_socket(self, *args: Any, **kwargs: Any) -> bool:
        got = super()._read_from_socket(*args, **kwargs)
        buffered = self._buffer.getbuffer().nbytes
        if buffered > self.limits[2]:
            raise ReplyTooLarge("a reply", buffered, self.limits[2])
        return got

    def readline(self, *args: Any, **kwargs: Any) -> bytes:
        line = super().readline(*args, **kwargs)
        kind, rest = line[:1], line[1:]
        if kind in _SIZED and rest.isdigit():
            size, (max_bulk, max_items, _) = int(rest) * _SIZED[kind][1], self.limits
            limit = max_bulk if _SIZED[kind][0] == "a value" else max_items
            if size > limit:
                raise ReplyTooLarge(_SIZED[kind][0], size, limit)
        return line


def bounded_parser(max_bulk: int, max_items: int, max_reply: int) -> type[_RESP3Parser]:
    """A parser class for `redis.Redis(parser_class=…)` with these bounds."""
    buffer = type("BoundedBuffer", (_BoundedBuffer,), {"limits": (max_bulk, max_items, max_reply)})

    class BoundedParser(_RESP3Parser):
        def on_connect(self, connection: Any) -> None:
            super().on_connect(connection)
            self._buffer = buffer(self._sock, self.socket_read_size, connection.socket_timeout)

    return BoundedParser

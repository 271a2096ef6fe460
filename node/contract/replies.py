"""A Redis client that refuses a reply larger than stated, before loading more than a bound.

Whatever the coordinator reads from a party's Redis — stream entries, heartbeats, Celery results
— is written by that party, and a party may be hostile (or its Redis may be). redis-py loads a
reply whole, whatever its size: a 1 GB stream entry or result would be loaded before any check
could look at its length. This parser is redis-py's hiredis parser (C, as fast as the unbounded
client) with three bounds, each raising `ReplyTooLarge`:

  - the reply as a whole: the bytes fed to hiredis for one reply are counted, and reading stops
    once they pass `max_reply` — whatever the reply's shape or how its bytes arrive, no more
    than that is ever loaded for one reply;
  - a reply's own header: a single value (`GET` of a result or heartbeat) or the outer array is
    refused from the length it states, before its body is read;
  - every value and array inside a complete reply: a value over `max_bulk` bytes or an array of
    more than `max_items` elements is refused after parsing (it was loaded, within `max_reply`).

After a refusal the connection is closed (redis-py drops a connection whose read failed), so
nothing of the reply stays behind and the next command starts clean.
"""

from __future__ import annotations

from typing import Any

import redis
from redis._parsers.hiredis import NOT_ENOUGH_DATA, _HiredisParser


class ReplyTooLarge(redis.RedisError):
    """A reply over the client's bounds (`size` is the value's or array's length, or the bytes
    read so far). Not a ConnectionError: redis-py does not retry it."""

    def __init__(self, what: str, size: int, limit: int) -> None:
        super().__init__(f"{what} of {size} > {limit}: refused before loading")
        self.size = size
        self.limit = limit


class _Limits:
    __slots__ = ("max_bulk", "max_items", "max_reply")

    def __init__(self, max_bulk: int, max_items: int, max_reply: int) -> None:
        self.max_bulk, self.max_items, self.max_reply = max_bulk, max_items, max_reply


# RESP headers that state a length: bulk, verbatim and error strings (bytes); arrays, sets,
# pushes (elements); maps and attributes (pairs: two elements each)
_SIZED = {
    ord("$"): (False, 1), ord("="): (False, 1), ord("!"): (False, 1),
    ord("*"): (True, 1), ord("~"): (True, 1), ord(">"): (True, 1),
    ord("%"): (True, 2), ord("|"): (True, 2),
}  # fmt: skip
_HEADER_MAX = 24  # a header line: one type byte, up to 20 digits, CRLF


def _check_header(head: bytes, limits: _Limits) -> None:
    """The reply's first line, when it states a length over the bounds."""
    end = head.find(b"\r\n")
    if not head or head[0] not in _SIZED or end < 2 or not head[1:end].isdigit():
        return
    is_array, per = _SIZED[head[0]]
    size = int(head[1:end]) * per
    if is_array and size > limits.max_items:
        raise ReplyTooLarge("an array", size, limits.max_items)
    if not is_array and size > limits.max_bulk:
        raise ReplyTooLarge("a value", size, limits.max_bulk)


def _check_parts(reply: Any, limits: _Limits) -> None:
    """Every value and array of a parsed reply within the bounds."""
    stack = [reply]
    while stack:
        part = stack.pop()
        if isinstance(part, bytes | str):
            if len(part) > limits.max_bulk:
                raise ReplyTooLarge("a value", len(part), limits.max_bulk)
        elif isinstance(part, list):
            if len(part) > limits.max_items:
                raise ReplyTooLarge("an array", len(part), limits.max_items)
            stack.extend(part)
        elif isinstance(part, dict):
            if 2 * len(part) > limits.max_items:
                raise ReplyTooLarge("an array", 2 * len(part), limits.max_items)
            stack.extend(part)
            stack.extend(part.values())


class _CountingReader:
    """hiredis's Reader, counting what is fed to it for the reply being read."""

    __slots__ = ("_fed", "_limits", "_reader")

    def __init__(self, reader: Any, limits: _Limits) -> None:
        self._reader, self._limits, self._fed = reader, limits, 0

    def feed(self, buf: Any, off: int = 0, n: int | None = None) -> None:
        n = len(buf) - off if n is None else n
        if self._fed == 0 and not self._reader.has_data():  # a reply's first bytes
            _check_header(bytes(buf[off : off + min(n, _HEADER_MAX)]), self._limits)
        self._fed += n
        if self._fed > self._limits.max_reply:
            self._drop()
            raise ReplyTooLarge("a reply", self._fed, self._limits.max_reply)
        self._reader.feed(buf, off, n)

    def _drop(self) -> None:
        """Free what hiredis holds of the refused reply now, not when the traceback that
        references this reader is collected."""
        self._reader = type(self._reader)()  # a blank hiredis.Reader

    def gets(self, *args: Any) -> Any:
        reply = self._reader.gets(*args)
        if reply is not NOT_ENOUGH_DATA:
            self._fed = 0
        return reply

    def has_data(self) -> bool:
        return bool(self._reader.has_data())


class _BoundedHiredisParser(_HiredisParser):
    limits = _Limits(0, 0, 0)  # set per class (bounded_parser)

    def on_connect(self, connection: Any, **kwargs: Any) -> None:
        super().on_connect(connection, **kwargs)
        self._reader = _CountingReader(self._reader, self.limits)  # type: ignore[assignment]

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        reply = super().read_response(*args, **kwargs)
        _check_parts(reply, self.limits)
        return reply


def bounded_parser(max_bulk: int, max_items: int, max_reply: int) -> type[_HiredisParser]:
    """A parser class for `redis.Redis(parser_class=…)` with these bounds."""
    limits = _Limits(max_bulk, max_items, max_reply)
    return type("BoundedParser", (_BoundedHiredisParser,), {"limits": limits})

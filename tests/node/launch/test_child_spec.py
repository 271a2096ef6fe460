"""The task's end of a child's messages (node/launch/child_spec.py): one JSON line a message,
whatever the chunks the bytes arrive in; junk and overlong lines are dropped, never kept."""

from __future__ import annotations

import os
import socket

from node.launch.child_spec import (
    MAX_LINE,
    ChildExited,
    LineReader,
    Ready,
    StageReached,
    encode,
)


def reader() -> LineReader:
    return LineReader(None, lambda n: b"")  # feed() only


def test_a_message_split_across_chunks_arrives_once_whole():
    lines = reader()
    raw = encode(Ready(import_s=1.5)) + encode(StageReached(stage="devices_ready", progress=0.4))
    got = [m for i in range(0, len(raw), 7) for m in lines.feed(raw[i : i + 7])]
    assert [type(m) for m in got] == [Ready, StageReached]
    assert got[1].stage == "devices_ready" and got[1].progress == 0.4


def test_junk_lines_are_skipped():
    got = reader().feed(b'not json\n\n{"type": "nosuch"}\n' + encode(Ready(import_s=0.1)))
    assert [type(m) for m in got] == [Ready]


def test_an_overlong_line_is_dropped_and_the_next_one_read():
    lines = reader()
    assert lines.feed(b"x" * (MAX_LINE + 1)) == []
    assert lines._buf == b""  # not kept
    assert lines.feed(b"y" * 1000) == []  # still the same line: dropped as it comes
    got = lines.feed(b"tail of the long line\n" + encode(Ready(import_s=0.2)))
    assert [type(m) for m in got] == [Ready]


def test_read_waits_on_a_pipe_and_a_socket_and_ends_with_child_exited():
    r, w = os.pipe()
    pipe = LineReader(r, lambda n: os.read(r, n))
    assert pipe.read(0.05) == []  # nothing yet
    os.write(w, encode(Ready(import_s=0.3)))
    assert [type(m) for m in pipe.read(1)] == [Ready]
    os.close(w)
    assert pipe.read(1) == [ChildExited()]
    os.close(r)
    a, b = socket.socketpair()
    sock = LineReader(a, a.recv)
    b.sendall(encode(ChildExited(rc=3)))
    assert sock.read(1) == [ChildExited(rc=3)]
    b.close()
    assert sock.read(1) == [ChildExited()]
    a.close()

"""Whether a peer's pickle may be unpickled: checked by reading its opcodes, never running them.

An allow-list of globals alone does not make unpickling safe: `bytearray(2**31)` or
`frozenset(range(10**8))` are allowed globals called with a tiny argument, a dict keyed by a
tuple that holds itself twice at each of 100 levels (memo references) takes 2^100 steps to
hash, and a dict of integer keys that all share one hash takes quadratic time. So a message is
read as a stream of opcodes, with the type (not the value) of every stack item followed, and
taken only when

  - it names only globals of the allow-list, and only calls them (REDUCE / NEWOBJ) or sets their
    state (BUILD) — the allow-list holds exception classes, whose construction costs what their
    arguments cost;
  - it builds no set or frozenset, and every dict key is a string (randomised hash: no
    collisions a sender can plan, no recursion);
  - it has at most `MAX_OPCODES` opcodes, and uses no opcode outside a small known set (no
    persistent ids, extension registry, out-of-band buffers or text-form numbers).

Every opcode that remains costs time and memory in proportion to its own bytes, so unpickling a
message that passes costs at most in proportion to the message.
"""

from __future__ import annotations

import pickletools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

MAX_OPCODES = 100_000


class Refused(ValueError):
    """Why a pickle may not be unpickled."""


@dataclass(frozen=True)
class _Item:
    kind: str  # str, bytes, int, float, bool, none, tuple, list, dict, global, object, mark
    text: str | None = None  # a short string's value (a STACK_GLOBAL's module and name)


_MARK = _Item("mark")
_PUSH = {
    "SHORT_BINUNICODE": "str", "BINUNICODE": "str", "BINUNICODE8": "str",
    "SHORT_BINBYTES": "bytes", "BINBYTES": "bytes", "BINBYTES8": "bytes",
    "BININT": "int", "BININT1": "int", "BININT2": "int", "LONG1": "int",
    "BINFLOAT": "float", "NONE": "none", "NEWTRUE": "bool", "NEWFALSE": "bool",
    "EMPTY_TUPLE": "tuple", "EMPTY_LIST": "list", "EMPTY_DICT": "dict",
}  # fmt: skip
_IGNORED = {"PROTO", "FRAME", "STOP"}


class _Machine:
    def __init__(self, allowed: Mapping[str, Sequence[str]]) -> None:
        self.allowed = allowed
        self.stack: list[_Item] = []
        self.memo: dict[int, _Item] = {}

    def pop(self) -> _Item:
        if not self.stack or self.stack[-1] is _MARK:
            raise Refused("a stack underflow")
        return self.stack.pop()

    def pop_mark(self) -> list[_Item]:
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i] is _MARK:
                items = self.stack[i + 1 :]
                del self.stack[i:]
                return items
        raise Refused("no mark")

    def top(self, kind: str) -> None:
        if not self.stack or self.stack[-1].kind != kind:
            raise Refused(f"expected a {kind} on the stack")

    def keys_are_text(self, items: list[_Item]) -> None:
        if len(items) % 2 or any(k.kind != "str" for k in items[::2]):
            raise Refused("a dict key that is not a string")

    def glob(self, module: str, name: str) -> _Item:
        if name not in self.allowed.get(module, ()):
            raise Refused(f"forbidden global {module}.{name}")
        return _Item("global")

    def step(self, name: str, arg: object) -> None:
        if name in _PUSH:
            text = arg if isinstance(arg, str) and len(arg) <= 256 else None
            self.stack.append(_Item(_PUSH[name], text))
        elif name not in _IGNORED:
            handler = _HANDLERS.get(name)
            if handler is None:
                raise Refused(f"opcode {name} is not taken")
            handler(self, arg)

    # --- one method per opcode (or family) ------------------------------------------------
    def mark(self, _arg: object) -> None:
        self.stack.append(_MARK)

    def memoize(self, arg: object) -> None:
        if not self.stack or self.stack[-1] is _MARK:
            raise Refused("memoize of nothing")
        self.memo[len(self.memo) if arg is None else int(str(arg))] = self.stack[-1]

    def get(self, arg: object) -> None:
        item = self.memo.get(int(str(arg)))
        if item is None:
            raise Refused("a memo reference to nothing")
        self.stack.append(item)

    def tuple_n(self, n: int) -> None:
        for _ in range(n):
            self.pop()
        self.stack.append(_Item("tuple"))

    def collect(self, kind: str) -> None:  # TUPLE, LIST, DICT: everything since the mark
        items = self.pop_mark()
        if kind == "dict":
            self.keys_are_text(items)
        self.stack.append(_Item(kind))

    def append(self, many: bool) -> None:
        self.pop_mark() if many else self.pop()
        self.top("list")

    def setitem(self, many: bool) -> None:
        if many:
            self.keys_are_text(self.pop_mark())
        else:
            self.pop()
            self.keys_are_text([self.pop(), _MARK])
        self.top("dict")

    def dup(self, _arg: object) -> None:
        self.stack.append(self.pop())
        self.stack.append(self.stack[-1])

    def stack_global(self, _arg: object) -> None:
        qual, module = self.pop(), self.pop()
        if module.text is None or qual.text is None:
            raise Refused("a global named by something other than two strings")
        self.stack.append(self.glob(module.text, qual.text))

    def text_global(self, arg: object) -> None:
        module, _, qual = str(arg).partition(" ")
        self.stack.append(self.glob(module, qual))

    def call(self, _arg: object) -> None:  # REDUCE, NEWOBJ: an allowed class, a tuple of args
        self.expect(self.pop(), "tuple")
        self.expect(self.pop(), "global")
        self.stack.append(_Item("object"))

    def build(self, _arg: object) -> None:  # an object's state: a dict of string keys
        self.expect(self.pop(), "dict", "none")
        self.top("object")

    @staticmethod
    def expect(item: _Item, *kinds: str) -> None:
        if item.kind not in kinds:
            raise Refused(f"expected {' or '.join(kinds)}, got {item.kind}")


_Handler = Callable[[_Machine, object], object]
_HANDLERS: dict[str, _Handler] = {
    "MARK": _Machine.mark,
    "MEMOIZE": _Machine.memoize, "BINPUT": _Machine.memoize, "LONG_BINPUT": _Machine.memoize,
    "BINGET": _Machine.get, "LONG_BINGET": _Machine.get,
    "TUPLE1": lambda m, _a: m.tuple_n(1), "TUPLE2": lambda m, _a: m.tuple_n(2),
    "TUPLE3": lambda m, _a: m.tuple_n(3),
    "TUPLE": lambda m, _a: m.collect("tuple"), "LIST": lambda m, _a: m.collect("list"),
    "DICT": lambda m, _a: m.collect("dict"),
    "APPEND": lambda m, _a: m.append(False), "APPENDS": lambda m, _a: m.append(True),
    "SETITEM": lambda m, _a: m.setitem(False), "SETITEMS": lambda m, _a: m.setitem(True),
    "POP": lambda m, _a: m.pop(), "POP_MARK": lambda m, _a: m.pop_mark(),
    "DUP": _Machine.dup,
    "STACK_GLOBAL": _Machine.stack_global, "GLOBAL": _Machine.text_global,
    "REDUCE": _Machine.call, "NEWOBJ": _Machine.call,
    "BUILD": _Machine.build,
}  # fmt: skip


def check(data: bytes, allowed: Mapping[str, Sequence[str]]) -> None:
    """Raise `Refused` unless `data` is one pickle that unpickles at a cost in proportion to its
    size, naming only `allowed` globals (module → names)."""
    machine = _Machine(allowed)
    end = -1
    try:
        for n, (op, arg, pos) in enumerate(pickletools.genops(data)):
            if n >= MAX_OPCODES:
                raise Refused(f"more than {MAX_OPCODES} opcodes")
            machine.step(op.name, arg)
            if op.name == "STOP":
                end = (pos or 0) + 1
    except Refused:
        raise
    except Exception as exc:  # truncated, not a pickle at all …
        raise Refused(f"not a valid message ({type(exc).__name__})") from None
    if end != len(data) or len(machine.stack) != 1:
        raise Refused("not exactly one pickled value")

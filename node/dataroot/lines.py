"""A table as the node reads it: decoded lines (strict UTF-8, counted for messages), its rows,
the record of its check, the hashes of its keys and the message that names a repeated key —
shared by the table check's two paths (node.dataroot.tables, node.dataroot.table_arrow) and the
output (node.dataroot.output)."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from node.contract import ErrorType

BOM = "\ufeff"
# The last line of every key-only copy, one value per key column: a key both parties have, so
# the intersection is never empty — SPU 0.9.3b0 with keys_unique=true aborts the receiver on an
# empty one while the sender waits out its timeout — and never a real key (not hex). The
# output (node.dataroot.output) and the counts (node.jobtypes.psi) leave it out.
SENTINEL = "partyline-sentinel"
SHOW_LINES = 5  # line numbers named in a duplicate-key refusal
LINES_BLOCK_BYTES = 4 << 20  # a table is read and decoded this much at a time


class TableError(ValueError):
    """The table cannot be used; `message` names the file, the line and the problem."""

    def __init__(self, type_: ErrorType, message: str) -> None:
        super().__init__(message)
        self.type = type_
        self.message = message


@dataclass
class TableCheck:
    name: str  # the dataset name the request gave
    columns: list[str]
    rows: int = 0
    distinct_keys: int = 0
    duplicate_rows: int = 0  # rows whose key already appeared on an earlier row
    bytes: int = 0
    seconds: float = 0.0
    psi_input: Path | None = None  # what the PSI reads: the key-only copy (k0, k1, … hex)
    source: Path | None = None  # the table as given (what the output rows are taken from)
    plain: bool = False  # no quotes, no stray CR: a row is a line (table_output's fast path)

    def metrics(self) -> dict:
        return {
            "rows": self.rows,
            "distinct_keys": self.distinct_keys,
            "duplicate_rows": self.duplicate_rows,
            "bytes": self.bytes,
            "check_s": round(self.seconds, 3),
        }


class Lines:
    """Decoded physical lines of a file (strict UTF-8), counting them for error messages."""

    def __init__(self, path: Path, name: str) -> None:
        self.path, self.name = path, name
        self.line = 0
        self.crlf = False
        self.bom = False
        self.bytes = 0
        self.plain = True  # no quote character, no carriage return inside a line

    def __iter__(self) -> Iterator[str]:
        # blocks of whole lines, decoded and split at once; a block that is not UTF-8 is
        # gone through line by line to name the line
        with open(self.path, "rb") as fh:
            while block := fh.read(LINES_BLOCK_BYTES):
                block += fh.readline()
                self.bytes += len(block)
                try:
                    text = block.decode("utf-8")
                except UnicodeDecodeError:
                    yield from self._each_line(block)
                    continue
                if self.line == 0 and text.startswith(BOM):
                    self.bom = True
                    text = text[1:]
                self.crlf = self.crlf or "\r\n" in text
                if self.plain and ('"' in text or text.count("\r") != text.count("\r\n")):
                    self.plain = False
                lines = text.split("\n")
                last = lines.pop()  # "" after a final newline; else the file's last line
                self.line += len(lines)
                yield from [ln + "\n" for ln in lines]
                if last:
                    self.line += 1
                    yield last

    def _each_line(self, block: bytes) -> Iterator[str]:
        for raw in split_lf(block):
            self.line += 1
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise TableError(
                    ErrorType.MALFORMED_CSV,
                    f"{self.name} line {self.line}: not UTF-8 (byte {raw[exc.start]:#04x} at "
                    f"column {exc.start + 1}); save the table as UTF-8",
                ) from None
            if self.line == 1 and text.startswith(BOM):
                self.bom = True
                text = text[1:]
            self.crlf = self.crlf or text.endswith("\r\n")
            if self.plain and ('"' in text or "\r" in text.rstrip("\r\n")):
                self.plain = False
            yield text


def split_lf(block: bytes) -> list[bytes]:
    """The lines of a block, each with its "\\n" (the last one may have none)."""
    lines = [ln + b"\n" for ln in block.split(b"\n")]
    lines[-1] = lines[-1][:-1]
    return [ln for ln in lines if ln]


def show(value: str, limit: int = 40) -> str:
    return repr(value if len(value) <= limit else value[: limit - 1] + "…")


def sentinel_line(width: int) -> str:
    return ",".join([SENTINEL] * width) + "\n"


def rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(first line number, fields) of every non-blank data row (the file is known good)."""
    lines = Lines(path, path.name)
    reader = csv.reader(iter(lines), strict=True)
    next(reader)
    start = 2
    for row in reader:
        if row:
            yield start, row
        start = reader.line_num + 1


def key_hashes(row: list[str], idx: list[int]) -> tuple[int, int]:
    if len(idx) == 1:
        key = row[idx[0]]
        return hash(key), hash("\x1f" + key)
    kt = tuple(row[i] for i in idx)
    return hash(kt), hash(("\x1f", *kt))


def duplicate_message(
    path: Path,
    name: str,
    columns: list[str],
    keys: list[str],
    target: tuple[int, int],
    first: int,
    repeats: int,
) -> str:
    """Name the first row that repeats a key (data row `first`, whose key hashes to `target`,
    as `key_hashes` does): its key and the lines holding that key."""
    first = int(first)
    idx = [columns.index(k) for k in keys]
    lines, value = [], None
    for i, (line, row) in enumerate(rows(path)):
        if key_hashes(row, idx) == target:
            lines.append(line)
            value = [row[j] for j in idx]
            if i >= first and len(lines) >= SHOW_LINES:
                break
    shown = ", ".join(str(n) for n in lines[:SHOW_LINES])
    key = ", ".join(show(v) for v in value or [])
    return (
        f"{name} repeats key {key} on lines {shown}; {repeats} row(s) repeat an earlier "
        "key — deduplicate the table, or ask for duplicates 'distinct' (one row per key) or "
        "'join' (every row)"
    )

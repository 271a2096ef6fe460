"""The PSI's output as the user's rows: the rows of the party's own table whose key the PSI
found in common, made after the PSI from the table itself (node/dataroot/tables.py says why).

Three ways to read the table, the same bytes out: a table without a quote character or a stray
carriage return ("plain", as `check_table` found it) is read as lines — a row is a line, its
fields the line split on commas, and the line itself is what csv.writer would write for them.
With one key column, blocks of lines are parsed by Arrow and looked up in bulk (1M rows: 0.4 s
instead of 2.4 s through the csv module); with several, line by line. Any other table goes
through the csv module."""

from __future__ import annotations

import csv
import io
from array import array
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, BinaryIO

from node.dataroot.lines import SENTINEL, Lines, key_hashes
from node.dataroot.paths import OutputTarget

CHUNK_ROWS = 65_536  # rows looked up at once
SENTINEL_B = SENTINEL.encode()

Hashes = Callable[[list[Any], list[int]], tuple[int, int]]


def _byte_key_hashes(row: list[bytes], idx: list[int]) -> tuple[int, int]:
    """node.dataroot.lines.key_hashes for fields read as bytes."""
    if len(idx) == 1:
        key = row[idx[0]]
        return hash(key), hash(b"\x1f" + key)
    kt = tuple(row[i] for i in idx)
    return hash(kt), hash((b"\x1f", *kt))


class _Common:
    """The common keys, as sorted pairs of 64-bit hashes (16 bytes a key), looked up in bulk.
    `decode` turns a hex key value into what the table's rows are hashed as (str or bytes)."""

    def __init__(self, psi_output: Path, decode: Callable[[str], Any], hashes: Hashes) -> None:
        import numpy as np

        with open(psi_output, newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            width = len(next(reader))
            ha, hb = array("q"), array("q")
            cols = list(range(width))
            for row in reader:
                if not row or row[0] == SENTINEL:
                    continue
                x, y = hashes([decode(v) for v in row[:width]], cols)
                ha.append(x)
                hb.append(y)
        a = np.frombuffer(ha, dtype=np.int64)
        b = np.frombuffer(hb, dtype=np.int64)
        order = np.lexsort((b, a))
        self.a, self.b = a[order], b[order]
        self.done = np.zeros(len(self.a), dtype=bool)  # "distinct": the key's first row is out
        self.hashes = hashes  # how the table's rows are to be hashed

    def positions(self, xs: array, ys: array) -> list[int]:
        """Index of each (x, y) among the common keys, -1 when absent."""
        import numpy as np

        qa = np.frombuffer(xs, dtype=np.int64)
        qb = np.frombuffer(ys, dtype=np.int64)
        sa, sb = self.a, self.b
        if not len(sa):
            return [-1] * len(qa)
        lo = np.searchsorted(sa, qa, side="left")
        hi = np.searchsorted(sa, qa, side="right")
        n = hi - lo
        at = np.where((n == 1) & (sb[np.minimum(lo, len(sb) - 1)] == qb), lo, -1)
        for i in np.nonzero(n > 1)[0]:  # equal first hashes are rare: check the (tiny) range
            hit = np.nonzero(sb[lo[i] : hi[i]] == qb[i])[0]
            at[i] = lo[i] + hit[0] if len(hit) else -1
        return at.tolist()

    def keep(self, pos: int, every_row: bool) -> bool:
        if pos < 0 or (self.done[pos] and not every_row):
            return False
        self.done[pos] = True
        return True


def _select(
    rows: Iterable[tuple[Any, Any]],
    common: _Common,
    idx: list[int],
    every_row: bool,
    write: Callable[[Any], object],
) -> int:
    """Write each (row, fields) whose key is common; the count written."""
    written = 0
    chunk: list[Any] = []
    xs, ys = array("q"), array("q")

    hashes = common.hashes

    def flush() -> None:
        nonlocal written
        for row, pos in zip(chunk, common.positions(xs, ys), strict=True):
            if common.keep(pos, every_row):
                write(row)
                written += 1
        chunk.clear()
        del xs[:], ys[:]

    for row, fields in rows:
        x, y = hashes(fields, idx)
        chunk.append(row)
        xs.append(x)
        ys.append(y)
        if len(chunk) >= CHUNK_ROWS:
            flush()
    flush()
    return written


def write_output(
    source: Path,
    psi_output: Path,
    keys: list[str],
    target: OutputTarget,
    *,
    every_row: bool,
    plain: bool = False,
) -> int:
    """The PSI's output, as the user's rows: every row of `source` whose key is in
    `psi_output` (the PSI's key-only answer, hex) — all of them (`every_row`, "join") or the
    first of each key ("distinct") — written to `target` in `source` order (header first, plain
    UTF-8 CSV, LF): into a temporary file of its own, renamed into place once complete
    (`OutputTarget.writing`). `plain`: `source` has no quote character (TableCheck.plain).
    Returns the number of rows written. Streams both files; memory: 16 bytes per common key."""
    with target.writing() as out:
        if plain and len(keys) == 1:
            return _write_plain_blocks(source, psi_output, keys[0], out, every_row)
        if plain:
            return _write_plain(source, psi_output, keys, out, every_row)
        return _write_parsed(source, psi_output, keys, out, every_row)


def _write_parsed(
    source: Path, psi_output: Path, keys: list[str], out: BinaryIO, every_row: bool
) -> int:
    common = _Common(psi_output, lambda v: bytes.fromhex(v).decode(), key_hashes)
    reader = csv.reader(iter(Lines(source, source.name)), strict=True)
    columns = [c.strip() for c in next(reader)]
    idx = [columns.index(k) for k in keys]
    text = io.TextIOWrapper(out, encoding="utf-8", newline="")
    try:
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(columns)
        rows = ((row, row) for row in reader if row)
        return _select(rows, common, idx, every_row, writer.writerow)
    finally:
        text.flush()
        text.detach()  # `out` is closed by its owner


def _write_plain(
    source: Path, psi_output: Path, keys: list[str], out: BinaryIO, every_row: bool
) -> int:
    # keys hashed as bytes on both sides (the table is known to be UTF-8)
    common = _Common(psi_output, bytes.fromhex, _byte_key_hashes)
    with open(source, "rb") as fh:
        idx, _ = _header(fh, out, keys)

        def rows():
            for raw in fh:
                line = raw.rstrip(b"\r\n")
                if line:  # (a blank line is no row)
                    yield line, line.split(b",")

        return _select(rows(), common, idx, every_row, lambda line: out.write(line + b"\n"))


BLOCK_BYTES = 16 << 20  # a plain table is read this much at a time (then to the end of the line)


def _header(fh: Any, out: Any, keys: list[str]) -> tuple[list[int], int]:
    """Read the header line of a plain table and write it as the csv path does; the key
    indices and the number of columns."""
    columns = [c.strip() for c in fh.readline().decode("utf-8-sig").rstrip("\r\n").split(",")]
    head = _Header()
    csv.writer(head, lineterminator="\n").writerow(columns)
    out.write(head.text.encode())
    return [columns.index(k) for k in keys], len(columns)


def _write_plain_blocks(
    source: Path, psi_output: Path, key: str, out: BinaryIO, every_row: bool
) -> int:
    """One key column: each block of lines is parsed by Arrow (no quoting: the table has no
    quote), its keys looked up among the common ones in bulk (pyarrow.compute.index_in), and
    the lines of the rows kept are written as they are (less a CR)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    with open(psi_output, "rb") as fh:
        fh.readline()  # "k0"
        values = (v.strip().strip(b'"') for v in fh)
        common = pa.array(
            [bytes.fromhex(v.decode()) for v in values if v and v != SENTINEL_B], pa.binary()
        )
    done = np.zeros(len(common), dtype=bool)  # "distinct": the key's first row is out
    written = 0
    with open(source, "rb") as fh:
        (at,), width = _header(fh, out, [key])
        names = [f"c{i}" for i in range(width)]
        read = pacsv.ReadOptions(column_names=names, use_threads=False)
        parse = pacsv.ParseOptions(quote_char=False, double_quote=False, ignore_empty_lines=True)
        convert = pacsv.ConvertOptions(
            column_types={names[at]: pa.binary()}, include_columns=[names[at]]
        )
        while block := fh.read(BLOCK_BYTES):
            block += fh.readline()
            lines = list(filter(None, block.split(b"\n")))
            if b"\r" in block:  # a blank CRLF line is no row
                lines = [ln for ln in lines if ln != b"\r"]
            table = pacsv.read_csv(
                pa.py_buffer(block),
                read_options=read,
                parse_options=parse,
                convert_options=convert,
            )
            ix = pc.fill_null(pc.index_in(table.column(0), value_set=common), -1).to_numpy()
            if len(ix) != len(lines):
                raise AssertionError(f"{source.name}: {len(ix)} rows parsed, {len(lines)} lines")
            rows = np.nonzero(ix >= 0)[0]
            if not every_row and len(rows):
                keys_at, first = np.unique(ix[rows], return_index=True)
                new = ~done[keys_at]
                done[keys_at[new]] = True
                rows = np.sort(rows[first[new]])
            if len(rows):
                out.write(b"\n".join(lines[i].rstrip(b"\r") for i in rows.tolist()) + b"\n")
                written += len(rows)
    return written


class _Header:
    """What csv.writer writes, kept (the header as the parsed path writes it)."""

    text = ""

    def write(self, s: str) -> None:
        self.text += s

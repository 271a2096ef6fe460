"""The check of a PSI input table, before any SecretFlow work: one streaming pass.

A table is refused — with the file, the line and the problem — when it is not UTF-8, a row has
another number of fields than the header, a quote is never closed, a key value is empty, it has
no header line, or (duplicates "refuse") a key repeats. A header without rows is a valid empty
set: its key copy holds only the sentinel line, which every party's copy ends with, so the PSI
runs (in every protocol) and finds nothing but the sentinel — 0 rows. Nothing is loaded whole: each key is kept as
two 64-bit hashes (16 bytes a row), so a 10M-row table needs ~160 MB whatever its width.

The PSI never reads the table itself: the check writes, in the same pass, a **key-only copy**
into the job's work folder inside the data root — one column per key (`k0`, `k1`, …), each
value hex-encoded UTF-8, each key once, and last the `SENTINEL` line. Hex keeps every key
intact through the PSI library's CSV readers (the legacy ECDH reader splits on every comma,
quoted or not; SPU copies data rows raw, CRLF included) and preserves byte order. SPU's own handling of repeated keys
(keys_unique=false + inner join) would write a×b rows per key, telling the receiver how often
each of its keys repeats at the peer; here the PSI sees each key once, and the output — the
first row of each common key ("distinct") or all of them ("join") — is made afterwards from the
table itself (`node.dataroot.output.write_output`).
"""

from __future__ import annotations

import csv
import time
from array import array
from pathlib import Path

from node.contract import DuplicateMode, ErrorType
from node.dataroot.lines import (
    Lines,
    TableCheck,
    TableError,
    duplicate_message,
    sentinel_line,
)


def check_table(
    path: Path,
    name: str,
    keys: list[str],
    *,
    duplicates: DuplicateMode,
    work_dir: Path,
) -> TableCheck:
    """Check `path` (dataset `name`) for a PSI on `keys`; raise TableError or return what the
    PSI should read (`psi_input`) with the counts."""
    t0 = time.perf_counter()  # check_s includes an Arrow attempt that stepped aside
    if len(keys) == 1:  # a plain table goes through Arrow (it imports this module)
        from node.dataroot.table_arrow import check_plain

        fast = check_plain(path, name, keys[0], duplicates=duplicates, work_dir=work_dir)
        if fast is not None:
            return fast
    lines = Lines(path, name)
    reader = csv.reader(iter(lines), strict=True)
    columns = _header(reader, name, keys)
    work_dir.mkdir(parents=True, exist_ok=True)
    all_keys = work_dir / f"keys-{path.stem}.all.csv"
    with open(all_keys, "w", encoding="ascii", newline="") as keyfile:
        keyfile.write(",".join(f"k{i}" for i in range(len(keys))) + "\n")
        copy = _KeyCopy(keyfile.write)
        rows = _copy_keys(reader, copy, name, keys, columns)
        keyfile.write(sentinel_line(len(keys)))
    check = TableCheck(
        name=name, columns=columns, rows=rows, bytes=lines.bytes, source=path, plain=lines.plain
    )
    _once_per_key(check, path, copy, keys, duplicates, all_keys)
    check.seconds = time.perf_counter() - t0
    return check


def _header(reader, name: str, keys: list[str]) -> list[str]:
    """The header's column names, refused when missing, without a key column or repeating one."""
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise TableError(ErrorType.MALFORMED_CSV, f"{name} line 1 (header): {exc}") from None
    if header is None or not any(c.strip() for c in header):
        raise TableError(ErrorType.EMPTY_TABLE, f"{name} is empty: no header line")
    columns = [c.strip() for c in header]
    missing = [k for k in keys if k not in columns]
    if missing:
        raise TableError(
            ErrorType.KEY_COLUMN_MISSING,
            f"{name} has no column {', '.join(map(repr, missing))} (columns: {', '.join(columns)})",
        )
    if len(set(columns)) != len(columns):
        twice = sorted({c for c in columns if columns.count(c) > 1})
        raise TableError(
            ErrorType.MALFORMED_CSV, f"{name} header names {', '.join(map(repr, twice))} twice"
        )
    return columns


class _KeyCopy:
    """The key-only copy being written, and each row's key as two 64-bit hashes (in row order).
    A single key column is hashed and written a chunk at a time."""

    CHUNK = 65_536

    def __init__(self, put) -> None:
        self.put = put
        self.h1, self.h2 = array("q"), array("q")
        self.chunk: list[str] = []

    def flush(self) -> None:
        chunk = self.chunk
        self.h1.extend(map(hash, chunk))
        self.h2.extend(map(hash, map("\x1f".__add__, chunk)))
        self.put("".join([k.encode().hex() + "\n" for k in chunk]))
        chunk.clear()

    def add_tuple(self, kt: tuple[str, ...]) -> None:
        self.h1.append(hash(kt))
        self.h2.append(hash(("\x1f", *kt)))
        self.put(",".join(v.encode().hex() for v in kt) + "\n")


def _copy_keys(reader, copy: _KeyCopy, name: str, keys: list[str], columns: list[str]) -> int:
    """One pass over the rows: each checked (width, empty key), its key into `copy`. Returns
    the number of rows (blank lines are skipped)."""
    width, idx = len(columns), [columns.index(k) for k in keys]
    one = idx[0] if len(idx) == 1 else None
    chunk, row_start, rows = copy.chunk, 2, 0
    try:
        for row in reader:
            if len(row) != width:
                if not row:  # a blank line
                    row_start = reader.line_num + 1
                    continue
                raise _bad_row(name, row_start, f"{len(row)} field(s), the header has {width}")
            if one is not None:
                if not row[one]:
                    raise _bad_row(name, row_start, f"key column {keys[0]!r} is empty")
                chunk.append(row[one])
                if len(chunk) >= copy.CHUNK:
                    copy.flush()
            else:
                kt = tuple(row[i] for i in idx)
                if not all(kt):
                    empty = keys[[bool(v) for v in kt].index(False)]
                    raise _bad_row(name, row_start, f"key column {empty!r} is empty")
                copy.add_tuple(kt)
            rows += 1
            row_start = reader.line_num + 1
        copy.flush()
    except csv.Error as exc:
        if "unexpected end of data" in str(exc):
            raise _bad_row(
                name, row_start, "a quoted field is never closed (the quote runs to the end of "
                "the file)",
            ) from None  # fmt: skip
        raise _bad_row(name, reader.line_num, f"bad quoting ({exc})") from None
    return rows


def _bad_row(name: str, line: int, problem: str) -> TableError:
    return TableError(ErrorType.MALFORMED_CSV, f"{name} line {line}: {problem}")


def _once_per_key(
    check: TableCheck,
    path: Path,
    copy: _KeyCopy,
    keys: list[str],
    duplicates: DuplicateMode,
    all_keys: Path,
) -> None:
    """Count the repeated keys (refused with "refuse"); the PSI's input is the copy with each
    key once (its first row), beside `all_keys`."""
    psi_input = all_keys.with_name(f"keys-{path.stem}.csv")
    dup_rows = _repeats(copy.h1, copy.h2)
    check.duplicate_rows = len(dup_rows)
    check.distinct_keys = check.rows - len(dup_rows)
    if len(dup_rows) and duplicates == DuplicateMode.REFUSE:
        first = dup_rows[0]
        raise TableError(
            ErrorType.DUPLICATE_KEYS,
            duplicate_message(
                path, check.name, check.columns, keys, _pair(copy.h1, copy.h2, first),
                first, len(dup_rows),
            ),
        )  # fmt: skip
    if len(dup_rows):
        check.psi_input = _drop_rows(all_keys, dup_rows, psi_input)
        all_keys.unlink()
    else:
        check.psi_input = all_keys.replace(psi_input)


def _repeats(h1: array, h2: array):
    """Indices (ascending) of the rows whose key hash pair already appeared on an earlier row."""
    import numpy as np

    a = np.frombuffer(h1, dtype=np.int64)
    b = np.frombuffer(h2, dtype=np.int64)
    order = np.lexsort((b, a))  # stable: within a key, rows keep their file order
    sa, sb = a[order], b[order]
    same = (sa[1:] == sa[:-1]) & (sb[1:] == sb[:-1])
    return np.sort(order[1:][same])


def _pair(h1: array, h2: array, row) -> tuple[int, int]:
    return h1[int(row)], h2[int(row)]


def _drop_rows(keys_csv: Path, drop, target: Path) -> Path:
    """`keys_csv` (header + one line per row, in table order) without the lines in `drop`."""
    import numpy as np

    skip = np.zeros(int(drop[-1]) + 1, dtype=bool)
    skip[np.asarray(drop, dtype=np.int64)] = True
    n_skip = len(skip)
    with open(keys_csv, encoding="ascii") as src, open(target, "w", encoding="ascii") as out:
        out.write(src.readline())
        for i, line in enumerate(src):
            if i < n_skip and skip[i]:
                continue
            out.write(line)
    return target

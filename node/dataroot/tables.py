"""The check of a PSI input table, before any SecretFlow work: one streaming pass.

A table is refused — with the file, the line and the problem — when it is not UTF-8, a row has
another number of fields than the header, a quote is never closed, a key value is empty, it has
no rows, or (duplicates "refuse") a key repeats. Nothing is loaded whole: each key is kept as
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
    width = len(columns)
    idx = [columns.index(k) for k in keys]
    one = idx[0] if len(idx) == 1 else None
    h1, h2 = array("q"), array("q")
    row_start = 2
    rows = 0
    work_dir.mkdir(parents=True, exist_ok=True)
    all_keys = work_dir / f"keys-{path.stem}.all.csv"
    keyfile = open(all_keys, "w", encoding="ascii", newline="")
    keyfile.write(",".join(f"k{i}" for i in range(len(idx))) + "\n")
    put = keyfile.write
    chunk: list[str] = []  # one key column: keys hashed and written a chunk at a time

    def flush() -> None:
        h1.extend(map(hash, chunk))
        h2.extend(map(hash, map("\x1f".__add__, chunk)))
        put("".join([k.encode().hex() + "\n" for k in chunk]))
        chunk.clear()

    try:
        for row in reader:
            if len(row) != width:
                if not row:  # a blank line
                    row_start = reader.line_num + 1
                    continue
                raise TableError(
                    ErrorType.MALFORMED_CSV,
                    f"{name} line {row_start}: {len(row)} field(s), the header has {width}",
                )
            if one is not None:
                key = row[one]
                if not key:
                    raise TableError(
                        ErrorType.MALFORMED_CSV,
                        f"{name} line {row_start}: key column {keys[0]!r} is empty",
                    )
                chunk.append(key)
                if len(chunk) >= 65_536:
                    flush()
            else:
                kt = tuple(row[i] for i in idx)
                empty = [keys[j] for j, v in enumerate(kt) if not v]
                if empty:
                    raise TableError(
                        ErrorType.MALFORMED_CSV,
                        f"{name} line {row_start}: key column {empty[0]!r} is empty",
                    )
                h1.append(hash(kt))
                h2.append(hash(("\x1f", *kt)))
                put(",".join(v.encode().hex() for v in kt) + "\n")
            rows += 1
            row_start = reader.line_num + 1
        flush()
        put(sentinel_line(len(idx)))
    except csv.Error as exc:
        keyfile.close()
        if "unexpected end of data" in str(exc):
            raise TableError(
                ErrorType.MALFORMED_CSV,
                f"{name} line {row_start}: a quoted field is never closed (the quote runs to "
                "the end of the file)",
            ) from None
        raise TableError(
            ErrorType.MALFORMED_CSV, f"{name} line {reader.line_num}: bad quoting ({exc})"
        ) from None
    except BaseException:
        keyfile.close()
        raise
    keyfile.close()
    check = TableCheck(
        name=name, columns=columns, rows=rows, bytes=lines.bytes, source=path, plain=lines.plain
    )
    if rows == 0:
        raise TableError(ErrorType.EMPTY_TABLE, f"{name} has no rows (only a header line)")
    dup_rows = _repeats(h1, h2)
    check.duplicate_rows = len(dup_rows)
    check.distinct_keys = rows - len(dup_rows)
    if len(dup_rows) and duplicates == DuplicateMode.REFUSE:
        raise TableError(
            ErrorType.DUPLICATE_KEYS,
            duplicate_message(
                path, name, columns, keys, _pair(h1, h2, dup_rows[0]), dup_rows[0], len(dup_rows)
            ),
        )
    if len(dup_rows):  # the PSI sees each key once (its first row)
        check.psi_input = _drop_rows(all_keys, dup_rows, work_dir / f"keys-{path.stem}.csv")
        all_keys.unlink()
    else:
        check.psi_input = all_keys.replace(work_dir / f"keys-{path.stem}.csv")
    check.seconds = time.perf_counter() - t0
    return check


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

"""The PSI's output made of the party's own rows (node/dataroot/output.py): the line-by-line path
for plain tables writes exactly what the csv-module path writes, and both write the rows of the
common keys in table order."""

from __future__ import annotations

import csv
import io
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from node.contract import DuplicateMode
from node.dataroot.lines import SENTINEL
from node.dataroot.output import write_output
from node.dataroot.tables import check_table

# no quote, comma, CR or LF: what a plain table's fields are made of (spaces and non-ASCII too)
FIELD = st.text(alphabet=st.sampled_from(list("ab zé中1-_.;\t")), min_size=1, max_size=4)


def _psi_output(path, keys: list[tuple[str, ...]]) -> None:
    """What the PSI writes: a quoted header, one hex column per key part, and among the keys
    the sentinel line both parties' key-only copies end with."""
    width = len(keys[0]) if keys else 1
    lines = [",".join(f'"k{i}"' for i in range(width))]
    lines += [",".join(v.encode().hex() for v in k) for k in keys]
    lines.insert(1 + len(keys) // 2, ",".join([SENTINEL] * width))
    path.write_text("\n".join(lines) + "\n")


def _both(tmp_path, content: bytes, keys: list[str], common, every_row: bool):
    src = tmp_path / "src.csv"
    src.write_bytes(content)
    check = check_table(
        src, "src.csv", keys, duplicates=DuplicateMode.DISTINCT, work_dir=tmp_path / "w"
    )
    psi = tmp_path / "psi.csv"
    _psi_output(psi, common)
    got = {}
    for plain in (False, True):
        out = tmp_path / f"out-{plain}.csv"
        n = write_output(src, psi, keys, _target(out), every_row=every_row, plain=plain)
        got[plain] = (n, out.read_bytes())
    return check, got


def test_a_table_with_quotes_or_a_stray_cr_is_not_plain(tmp_path):
    def plain(content: bytes) -> bool:
        src = tmp_path / "t.csv"
        src.write_bytes(content)
        w = tmp_path / "w"
        return check_table(src, "t", ["uid"], duplicates=DuplicateMode.DISTINCT, work_dir=w).plain

    assert plain(b"\xef\xbb\xbfuid,v\r\na,1\r\n\r\nb,2")
    assert not plain(b'uid,v\na,"1"\n')
    assert not plain(b'uid,v\n"a,b",1\n')


def test_the_plain_path_writes_what_the_csv_path_writes(tmp_path):
    content = "\ufeffv , uid\r\n1,b\r\n\r\n2,a\r\n3,b\r\n4,c d\r\n5,b\r\n6,é".encode()
    for every_row, want in ((True, "v,uid\n1,b\n3,b\n4,c d\n5,b\n6,é\n"), (False, None)):
        check, got = _both(tmp_path, content, ["uid"], [("b",), ("c d",), ("é",)], every_row)
        assert check.plain
        assert got[True] == got[False]
        if want:
            assert got[True] == (5, want.encode())
    assert got[True] == (3, "v,uid\n1,b\n4,c d\n6,é\n".encode())


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(st.tuples(FIELD, FIELD, FIELD), min_size=1, max_size=40),
    composite=st.booleans(),
    crlf=st.booleans(),
    bom=st.booleans(),
    every_row=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_property_plain_and_parsed_paths_agree_with_plain_python(
    tmp_path_factory, rows, composite, crlf, bom, every_row, seed
):
    tmp = tmp_path_factory.mktemp("out")
    keys = ["a", "b"] if composite else ["b"]
    nl = "\r\n" if crlf else "\n"
    text = ("\ufeff" if bom else "") + nl.join(["a,b,c", *(",".join(r) for r in rows)]) + nl
    key_of = (lambda r: (r[0], r[1])) if composite else (lambda r: (r[1],))
    distinct = list(dict.fromkeys(key_of(r) for r in rows))
    common = random.Random(seed).sample(distinct, k=len(distinct) // 2)
    check, got = _both(tmp, text.encode(), keys, common, every_row)
    assert check.plain
    assert got[True] == got[False]
    want, seen = [], set()
    for r in rows:
        k = key_of(r)
        if k in common and (every_row or k not in seen):
            want.append(list(r))
        seen.add(k)
    n, out = got[True]
    assert n == len(want)
    assert list(csv.reader(io.StringIO(out.decode())))[1:] == want


def test_blocks_of_a_few_lines_give_the_same_output(tmp_path, monkeypatch):
    """A key's first row in one block, its repeats in later ones; CRLF blank lines between."""
    import node.dataroot.output as table_output

    rng = random.Random(7)
    rows = [(str(i), f"k{rng.randrange(30)}") for i in range(400)]
    text = "n,uid\r\n" + "".join(
        f"{a},{b}\r\n" + ("\r\n" if a.endswith("7") else "") for a, b in rows
    )
    common = [(f"k{i}",) for i in range(0, 30, 2)]
    want = {}
    for every_row in (True, False):
        _, got = _both(tmp_path, text.encode(), ["uid"], common, every_row)
        want[every_row] = got[True]
        monkeypatch.setattr(table_output, "BLOCK_BYTES", 50)
        _, small = _both(tmp_path, text.encode(), ["uid"], common, every_row)
        monkeypatch.undo()
        assert small[True] == small[False] == want[every_row]
    firsts = list(dict.fromkeys(b for _, b in rows if int(b[1:]) % 2 == 0))
    assert want[False][0] == len(firsts)


def _target(path):
    """Where write_output writes `path` (its folder as the data root, fixed now)."""
    from node.dataroot.paths import OutputTarget

    return OutputTarget.at_preflight(path.parent, path, "exe-test")

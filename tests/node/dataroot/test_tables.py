"""The streaming check of a PSI input table (node/dataroot/tables.py): refusals name file, line, problem;
the PSI reads a normalized copy only when the library could not take the file as it is."""

from __future__ import annotations

import csv
import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.contract import DuplicateMode, ErrorType
from node.dataroot.lines import SENTINEL, TableError
from node.dataroot.tables import check_table


def _check(tmp_path, content: bytes | str, keys=("uid",), mode=DuplicateMode.REFUSE):
    path = tmp_path / "t.csv"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return check_table(path, "probe/t.csv", list(keys), duplicates=mode, work_dir=tmp_path / "w")


def _refusal(tmp_path, content, **kw) -> TableError:
    with pytest.raises(TableError) as info:
        _check(tmp_path, content, **kw)
    return info.value


def _keys(c) -> list[str]:
    """The PSI's key-only input, decoded (its last line is the sentinel, every column)."""
    lines = c.psi_input.read_text(encoding="ascii").splitlines()
    assert lines[0].startswith("k0")
    assert set(lines[-1].split(",")) == {SENTINEL} and len(lines[-1].split(",")) == len(
        lines[0].split(",")
    )
    return [",".join(bytes.fromhex(v).decode() for v in ln.split(",")) for ln in lines[1:-1]]


def test_the_psi_reads_a_key_only_hex_copy_inside_the_work_folder(tmp_path):
    c = _check(tmp_path, "uid,x\na,1\nb,2\n")
    assert c.psi_input.parent == tmp_path / "w"
    assert c.psi_input.read_text() == "k0\n61\n62\npartyline-sentinel\n"
    assert c.source == tmp_path / "t.csv"
    assert (c.rows, c.distinct_keys, c.duplicate_rows) == (2, 2, 0)
    assert c.metrics()["rows"] == 2 and c.metrics()["check_s"] >= 0


@pytest.mark.parametrize(
    "content", ["uid,x\n", "uid,x\n\n\n", "uid,x"], ids=["nl", "blank", "no-nl"]
)
def test_a_header_without_rows_is_a_valid_empty_set(tmp_path, content):
    """The PSI still runs: the key copy is the sentinel alone, which every copy ends with."""
    c = _check(tmp_path, content)
    assert (c.rows, c.distinct_keys, c.duplicate_rows) == (0, 0, 0)
    assert c.psi_input.read_text() == "k0\npartyline-sentinel\n"


@pytest.mark.parametrize(
    ("content", "etype", "needle"),
    [
        ("", ErrorType.EMPTY_TABLE, "probe/t.csv is empty: no header line"),
        ("id,x\n1,2\n", ErrorType.KEY_COLUMN_MISSING, "has no column 'uid' (columns: id, x)"),
        ("uid,x\na,1\nb\nc,3\n", ErrorType.MALFORMED_CSV, "line 3: 1 field(s), the header has 2"),
        ("uid,x\na,1\nb,2,3\n", ErrorType.MALFORMED_CSV, "line 3: 3 field(s), the header has 2"),
        (
            'uid,x\na,1\n"b,2\nc,3\n',
            ErrorType.MALFORMED_CSV,
            "line 3: a quoted field is never closed",
        ),
        ('uid,x\na,1\n"b"c,2\n', ErrorType.MALFORMED_CSV, "line 3: bad quoting"),
        ("uid,x\na,1\n,2\n", ErrorType.MALFORMED_CSV, "line 3: key column 'uid' is empty"),
        (b"uid,x\na,1\n\xe9t\xe9,2\n", ErrorType.MALFORMED_CSV, "line 3: not UTF-8 (byte 0xe9"),
        ("uid,uid\na,1\n", ErrorType.MALFORMED_CSV, "header names 'uid' twice"),
    ],
    ids=[
        "empty-file",
        "key-column-missing",
        "short-row",
        "long-row",
        "unclosed-quote",
        "stray-quote",
        "empty-key",
        "latin-1",
        "repeated-column",
    ],
)
def test_refusals_name_the_file_the_line_and_the_problem(tmp_path, content, etype, needle):
    err = _refusal(tmp_path, content)
    assert err.type == etype
    assert needle in err.message, err.message
    assert "probe/t.csv" in err.message
    assert "\n" not in err.message


def test_a_quoted_field_over_several_lines_counts_its_first_line(tmp_path):
    err = _refusal(tmp_path, 'uid,x\na,"one\ntwo"\nb\n')
    assert "line 4: 1 field(s)" in err.message


def test_refuse_names_the_first_repeated_key_and_its_lines(tmp_path):
    err = _refusal(tmp_path, "uid,x\nb,0\na,1\nc,2\na,3\nb,4\na,5\n")
    assert err.type == ErrorType.DUPLICATE_KEYS
    # 'a' is the first key whose repeat comes earliest (line 5); all its lines are named
    assert "repeats key 'a' on lines 3, 5, 7" in err.message
    assert "3 row(s) repeat an earlier key" in err.message


def test_refuse_with_a_composite_key(tmp_path):
    content = "k1,k2,x\na,1,0\na,2,0\nb,1,0\na,2,9\n"
    err = _refusal(tmp_path, content, keys=("k1", "k2"))
    assert "repeats key 'a', '2' on lines 3, 5" in err.message
    c = _check(tmp_path, content, keys=("k1", "k2"), mode=DuplicateMode.DISTINCT)
    assert c.distinct_keys == 3


def test_repeated_keys_reach_the_psi_once_in_first_row_order(tmp_path):
    for mode in (DuplicateMode.DISTINCT, DuplicateMode.JOIN):
        c = _check(tmp_path, "uid,x\nb,0\na,1\nb,2\na,3\nc,4\n", mode=mode)
        assert _keys(c) == ["b", "a", "c"]
        assert (c.rows, c.distinct_keys, c.duplicate_rows) == (5, 3, 2)


def test_bom_crlf_blank_lines_quotes_and_commas_never_reach_the_psi(tmp_path):
    c = _check(tmp_path, b'\xef\xbb\xbf uid , x\r\na,1\r\n\r\n"b,""q""","2,5"\r\n')
    assert c.columns == ["uid", "x"]
    assert _keys(c) == ['b,"q"', "a"][::-1]
    assert b"\r" not in c.psi_input.read_bytes()


def test_composite_keys_keep_one_column_each(tmp_path):
    c = _check(tmp_path, "k1,k2,x\na,1,0\nb,2,0\n", keys=("k2", "k1"))
    assert c.psi_input.read_text().splitlines() == [
        "k0,k1",
        "31,61",
        "32,62",
        "partyline-sentinel,partyline-sentinel",
    ]


def test_keys_are_strings_not_numbers(tmp_path):
    c = _check(tmp_path, "uid\n007\n7\n7.0\n")
    assert c.distinct_keys == 3


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(
        st.tuples(st.sampled_from(["a", "b", "c", "d", "e,f", 'q"t', "é", "7", "07"]), st.text()),
        min_size=1,
        max_size=40,
    )
)
def test_property_the_psi_sees_each_key_once_and_the_output_their_first_rows(
    tmp_path_factory, rows
):
    tmp = tmp_path_factory.mktemp("prop")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["uid", "v"])
    rows = [(k, v.replace("\r", "").replace("\x00", "")) for k, v in rows]
    w.writerows(rows)
    path = tmp / "t.csv"
    path.write_text(buf.getvalue(), encoding="utf-8", newline="")
    keys = [k for k, _ in rows]
    dup = len(keys) != len(set(keys))
    try:
        check_table(path, "t.csv", ["uid"], duplicates=DuplicateMode.REFUSE, work_dir=tmp / "w")
        refused = False
    except TableError as exc:
        assert exc.type == ErrorType.DUPLICATE_KEYS
        refused = True
    assert refused == dup
    c = check_table(path, "t.csv", ["uid"], duplicates=DuplicateMode.DISTINCT, work_dir=tmp / "w")
    assert _keys(c) == list(dict.fromkeys(keys))  # each key once, in first-row order
    assert c.distinct_keys == len(set(keys)) and c.rows == len(rows)
    from node.dataroot.output import write_output

    out = tmp / "out.csv"
    n = write_output(path, c.psi_input, ["uid"], _target(out), every_row=False)  # all keys "common"
    first: dict[str, str] = {}
    for k, v in rows:
        first.setdefault(k, v)
    with open(out, newline="", encoding="utf-8") as fh:
        got = [tuple(r) for r in list(csv.reader(fh))[1:]]
    assert n == len(first) and got == list(first.items())


def test_output_is_made_of_the_own_rows_of_each_common_key(tmp_path):
    from node.dataroot.output import write_output

    source = tmp_path / "src.csv"
    source.write_bytes(b'\xef\xbb\xbfv,uid\r\n1,b\r\n2,a\r\n3,b\r\n4,"c,d"\r\n5,b\r\n')
    psi_out = tmp_path / "psi.csv"
    hexes = [b"b".hex(), b"c,d".hex()]
    psi_out.write_text('"k0"\n' + "\n".join([hexes[0], SENTINEL, hexes[1]]) + "\n")  # as SPU
    target = tmp_path / "out.csv"
    assert write_output(source, psi_out, ["uid"], _target(target), every_row=True) == 4
    assert target.read_text() == 'v,uid\n1,b\n3,b\n4,"c,d"\n5,b\n'
    assert write_output(source, psi_out, ["uid"], _target(target), every_row=False) == 2
    assert target.read_text() == 'v,uid\n1,b\n4,"c,d"\n'
    empty = tmp_path / "none.csv"
    empty.write_text("k0\n")
    assert write_output(source, empty, ["uid"], _target(target), every_row=False) == 0
    assert target.read_text() == "v,uid\n"


@pytest.mark.parametrize("block", [16, 1 << 20])
def test_blocks_count_lines_bom_and_crlf_as_lines_do(tmp_path, monkeypatch, block):
    """The table is decoded in blocks of lines: the line named, the BOM, CRLF and the key copy
    do not depend on where a block ends."""
    import node.dataroot.lines as table_lines

    monkeypatch.setattr(table_lines, "LINES_BLOCK_BYTES", block)
    body = "".join(f"{i},k{i}\r\n" + ("\r\n" if i % 7 == 0 else "") for i in range(60))
    c = _check(tmp_path, ("\ufeffn,uid\r\n" + body).encode(), mode=DuplicateMode.REFUSE)
    assert c.rows == 60 and _keys(c) == [f"k{i}" for i in range(60)] and c.plain
    bad = ("n,uid\n" + "".join(f"{i},k{i}\n" for i in range(40))).encode() + b"40,k\xff\n1,z\n"
    err = _refusal(tmp_path, bad)
    assert err.type == ErrorType.MALFORMED_CSV
    assert "line 42: not UTF-8 (byte 0xff at column 5)" in err.message, err.message
    last = _check(tmp_path, b"uid\na\nb")  # no newline at the end
    assert _keys(last) == ["a", "b"]


def _target(path):
    """Where write_output writes `path` (its folder as the data root, fixed now)."""
    from node.dataroot.paths import OutputTarget

    return OutputTarget.at_preflight(path.parent, path, "exe-test")

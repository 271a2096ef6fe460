"""The table check's Arrow path (node/dataroot/table_arrow.py) gives what the csv path gives: the same
key-only copy byte for byte, the same counts, the same refusals — and steps aside for any table
it does not handle."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import node.dataroot.table_arrow as table_arrow
from node.contract import DuplicateMode, ErrorType
from node.dataroot.lines import TableError
from node.dataroot.tables import check_table


def _both(tmp, content: bytes, mode: DuplicateMode, keys=("uid",)):
    """(Arrow path's answer or None, check_table's answer, the csv path's answer); an answer is
    (psi_input bytes, counts, columns, plain) or the refusal's (type, message)."""
    path = tmp / "t.csv"
    path.write_bytes(content)

    def answer(run):
        try:
            c = run()
        except TableError as exc:
            return exc.type, exc.message
        if c is None:
            return None
        return c.psi_input.read_bytes(), (c.rows, c.distinct_keys, c.duplicate_rows), c.columns

    arrow = answer(
        lambda: table_arrow.check_plain(path, "t.csv", keys[0], duplicates=mode, work_dir=tmp / "a")
    )
    full = answer(
        lambda: check_table(path, "t.csv", list(keys), duplicates=mode, work_dir=tmp / "f")
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(table_arrow, "check_plain", lambda *a, **kw: None)
        reference = answer(
            lambda: check_table(path, "t.csv", list(keys), duplicates=mode, work_dir=tmp / "c")
        )
    return arrow, full, reference


KEYS = ["a", "b", "é", "日本", " a ", "NULL", "NA", "nan", "N/A", "true", "1e3", "007", "7", "x y"]


@settings(max_examples=80, deadline=None)
@given(
    rows=st.lists(
        st.tuples(st.sampled_from(KEYS), st.sampled_from(["1", "", "zz", "ü"])),
        min_size=1,
        max_size=30,
    ),
    crlf=st.booleans(),
    bom=st.booleans(),
    blank_every=st.sampled_from([0, 3, 7]),
    final_newline=st.booleans(),
    mode=st.sampled_from(list(DuplicateMode)),
)
def test_property_arrow_and_csv_paths_agree_on_plain_tables(
    tmp_path_factory, rows, crlf, bom, blank_every, final_newline, mode
):
    tmp = tmp_path_factory.mktemp("plain")
    nl = "\r\n" if crlf else "\n"
    lines = ["v,uid"]
    for i, (k, v) in enumerate(rows):
        lines.append(f"{v},{k}")
        if blank_every and i % blank_every == 0:
            lines.append("")
    text = ("\ufeff" if bom else "") + nl.join(lines) + (nl if final_newline else "")
    arrow, full, reference = _both(tmp, text.encode(), mode)
    assert full == reference
    assert arrow == reference  # the Arrow path took the table (plain, one key column)
    keys = [k for k, _ in rows]
    if isinstance(reference[0], bytes):
        hexed = "".join(k.encode().hex() + "\n" for k in dict.fromkeys(keys))
        expected = "k0\n" + hexed + "partyline-sentinel\n"
        assert reference[0].decode() == expected
        assert reference[1] == (len(keys), len(set(keys)), len(keys) - len(set(keys)))
    else:
        assert mode == DuplicateMode.REFUSE and reference[0] == ErrorType.DUPLICATE_KEYS


@pytest.mark.parametrize(
    "content",
    [
        b'uid,x\na,1\n"b",2\n',  # a quote
        b"uid,x\na,1\rb,2\n",  # a stray carriage return
        b"uid,x\na,1\n\xe9t\xe9,2\n",  # not UTF-8
        b"uid,x\na,1\nb\n",  # a short row
        b"uid,x\na,1\nb,2,3\n",  # a long row
        b"uid,x\na,1\n,2\n",  # an empty key
        b"uid,x\n",  # no rows
        b"uid,uid\na,1\n",  # a repeated column
        b"id,x\na,1\n",  # no key column
        b"",  # no header
    ],
    ids=[
        "quote",
        "stray-cr",
        "latin-1",
        "short",
        "long",
        "empty-key",
        "no-rows",
        "twice",
        "missing",
        "empty",
    ],
)
def test_the_arrow_path_steps_aside_and_the_csv_path_answers(tmp_path, content):
    for mode in DuplicateMode:
        arrow, full, reference = _both(tmp_path, content, mode)
        assert arrow is None
        assert full == reference


def test_a_quote_after_the_first_block_hands_the_table_to_the_csv_path(tmp_path, monkeypatch):
    monkeypatch.setattr(table_arrow, "BLOCK_BYTES", 64)
    body = "".join(f"k{i},{i}\n" for i in range(200))
    content = ("uid,x\n" + body + '"k,q",1\n').encode()
    arrow, full, reference = _both(tmp_path, content, DuplicateMode.REFUSE)
    assert arrow is None and full == reference
    assert reference[1] == (201, 201, 0)


def test_blocks_and_hex_slices_do_not_change_the_copy(tmp_path, monkeypatch):
    monkeypatch.setattr(table_arrow, "BLOCK_BYTES", 50)
    monkeypatch.setattr(table_arrow, "HEX_KEYS", 7)
    body = "".join(f"{i % 37},k{i % 53}\r\n" for i in range(500))
    arrow, full, reference = _both(tmp_path, ("x,uid\r\n" + body).encode(), DuplicateMode.JOIN)
    assert arrow == full == reference
    assert reference[1] == (500, 53, 447)


def test_refusal_of_a_repeated_key_names_it_and_its_lines(tmp_path):
    content = b"uid,x\nb,0\na,1\nc,2\n\na,3\nb,4\na,5\n"
    arrow, _, reference = _both(tmp_path, content, DuplicateMode.REFUSE)
    assert arrow == reference
    assert arrow[0] == ErrorType.DUPLICATE_KEYS
    assert "repeats key 'a' on lines 3, 6, 8; 3 row(s) repeat an earlier key" in arrow[1]

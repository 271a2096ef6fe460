"""node.ops.health.list_datasets: what a party shows of its data root (names, sizes, headers)."""

from __future__ import annotations

import os

from node.ops.health import list_datasets
from tests.node.sessions.test_host import settings


def _root(tmp_path):
    s = settings(tmp_path)
    s.data_root.mkdir()
    return s


def test_a_table_with_a_huge_header_field_is_listed_without_columns_and_the_rest_as_usual(tmp_path):
    s = _root(tmp_path)
    (s.data_root / "a.csv").write_text("uid,name\n1,x\n")
    (s.data_root / "b.csv").write_bytes(b"uid," + b"x" * 50_000_000 + b"\n1,2\n")  # 50 MB field
    (s.data_root / "c.csv").write_bytes(b"uid,\xff\xfe\n")  # not UTF-8
    (s.data_root / "d.csv").write_text('uid,"unclosed\n1,2\n')
    got = {d["name"]: d["columns"] for d in list_datasets(s)}
    assert got == {"a.csv": ["uid", "name"], "b.csv": [], "c.csv": [], "d.csv": ["uid", "unclosed"]}


def test_the_listing_skips_hidden_folders_and_links_out_and_stops_at_its_limit(tmp_path):
    s = _root(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.csv").write_text("ssn\n1\n")
    (s.data_root / "linked").symlink_to(outside, target_is_directory=True)
    (s.data_root / "leak.csv").symlink_to(outside / "secret.csv")
    private = s.data_root / ".partyline" / "work"
    private.mkdir(parents=True)
    (private / "keys.csv").write_text("k0\n")
    for i in range(30):
        (s.data_root / f"t{i:02d}.csv").write_text("uid\n1\n")
    names = [d["name"] for d in list_datasets(s)]
    assert names == [f"t{i:02d}.csv" for i in range(30)]
    assert [d["name"] for d in list_datasets(s, limit=5)] == names[:5]


def test_a_wide_header_is_cut_to_the_bound(tmp_path):
    from node.dataroot.paths import COLUMN_NAME_MAX, MAX_COLUMNS

    s = _root(tmp_path)
    cols = [f"c{i}" + "x" * 300 for i in range(2000)]
    (s.data_root / "wide.csv").write_text(",".join(cols)[:60_000] + "\n")
    [entry] = list_datasets(s)
    assert len(entry["columns"]) <= MAX_COLUMNS
    assert all(len(c) <= COLUMN_NAME_MAX for c in entry["columns"])
    assert os.path.getsize(s.data_root / "wide.csv") == entry["size"]

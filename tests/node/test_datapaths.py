"""node/datapaths.py: every way out of the data root is refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from node.datapaths import PathEscapeError, read_csv_header, resolve_in_root


@pytest.fixture()
def root(tmp_path) -> Path:
    r = (tmp_path / "data").resolve()
    r.mkdir()
    (r / "customers.csv").write_text("uid,name\n1,a\n")
    (r / "sub").mkdir()
    (r / "sub" / "nested.csv").write_text("uid\n1\n")
    return r


@pytest.fixture()
def outside(tmp_path) -> Path:
    o = (tmp_path / "outside").resolve()
    o.mkdir()
    (o / "secret.csv").write_text("uid,ssn\n1,123\n")
    return o


# --- accepted ---------------------------------------------------------------------------------
def test_plain_name(root):
    assert resolve_in_root(root, "customers.csv") == root / "customers.csv"


def test_nested_name(root):
    assert resolve_in_root(root, "sub/nested.csv") == root / "sub" / "nested.csv"


def test_absolute_path_inside_root(root):
    assert resolve_in_root(root, str(root / "sub" / "nested.csv")) == root / "sub" / "nested.csv"


def test_result_is_absolute_even_for_relative_root(root, monkeypatch):
    monkeypatch.chdir(root.parent)
    got = resolve_in_root(Path("data"), "customers.csv")
    assert got.is_absolute()
    assert got == root / "customers.csv"


def test_symlink_inside_root_is_followed(root):
    (root / "alias.csv").symlink_to(root / "customers.csv")
    assert resolve_in_root(root, "alias.csv") == root / "customers.csv"


def test_missing_file_inside_root_is_resolved_not_refused(root):
    # existence is the caller's business (psi.prepare reports it by name)
    assert resolve_in_root(root, "later.csv") == root / "later.csv"


# --- refused ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["", "   "])
def test_empty_name(root, name):
    with pytest.raises(PathEscapeError, match="empty"):
        resolve_in_root(root, name)


@pytest.mark.parametrize("name", ["..", "../x.csv", "a/../../x", "sub/../customers.csv"])
def test_dotdot_components(root, name):
    with pytest.raises(PathEscapeError, match=r"'\.\.'"):
        resolve_in_root(root, name)


def test_absolute_path_outside_root(root):
    with pytest.raises(PathEscapeError, match="outside the data root"):
        resolve_in_root(root, "/etc/passwd")


def test_absolute_path_with_dotdot_back_out(root):
    with pytest.raises(PathEscapeError):
        resolve_in_root(root, f"{root}/../outside/secret.csv")


def test_nul_byte(root):
    with pytest.raises(PathEscapeError, match="NUL"):
        resolve_in_root(root, "customers.csv\x00.txt")


def test_symlink_file_pointing_outside(root, outside):
    (root / "leak.csv").symlink_to(outside / "secret.csv")
    with pytest.raises(PathEscapeError, match="outside the data root"):
        resolve_in_root(root, "leak.csv")


def test_symlinked_directory_pointing_outside(root, outside):
    (root / "linkdir").symlink_to(outside, target_is_directory=True)
    (outside / "x.csv").write_text("uid\n")
    with pytest.raises(PathEscapeError, match="outside the data root"):
        resolve_in_root(root, "linkdir/x.csv")


def test_symlinked_directory_outside_for_write(root, outside):
    (root / "linkdir").symlink_to(outside, target_is_directory=True)
    with pytest.raises(PathEscapeError):
        resolve_in_root(root, "linkdir/new/out.csv", for_write=True)
    assert not (outside / "new").exists()


def test_relative_symlink_escaping(root, outside):
    (root / "sub" / "up").symlink_to(Path("..") / ".." / "outside")
    with pytest.raises(PathEscapeError):
        resolve_in_root(root, "sub/up/secret.csv")


def test_dangling_symlink_to_outside_for_write(root, outside):
    (root / "out.csv").symlink_to(outside / "not-yet.csv")
    with pytest.raises(PathEscapeError):
        resolve_in_root(root, "out.csv", for_write=True)
    assert not (outside / "not-yet.csv").exists()


def test_output_is_existing_symlink_inside_root(root):
    (root / "out.csv").symlink_to(root / "customers.csv")
    # readable through the link …
    assert resolve_in_root(root, "out.csv") == root / "customers.csv"
    # … but never written through it
    with pytest.raises(PathEscapeError, match="symlink"):
        resolve_in_root(root, "out.csv", for_write=True)


def test_output_is_a_directory(root):
    with pytest.raises(PathEscapeError, match="directory"):
        resolve_in_root(root, "sub", for_write=True)


def test_output_is_the_root_itself(root):
    with pytest.raises(PathEscapeError, match="directory"):
        resolve_in_root(root, ".", for_write=True)


# --- for_write ----------------------------------------------------------------------------------
def test_for_write_creates_parent_dirs_inside_root(root):
    got = resolve_in_root(root, "out/2026/job-7f3a.csv", for_write=True)
    assert got == root / "out" / "2026" / "job-7f3a.csv"
    assert (root / "out" / "2026").is_dir()
    assert not got.exists()  # only the parents are created


def test_for_write_existing_regular_file_is_allowed(root):
    (root / "old.csv").write_text("x\n")
    assert resolve_in_root(root, "old.csv", for_write=True) == root / "old.csv"


def test_refused_write_creates_nothing(root):
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    for bad in ("../x/out.csv", "a/../../x/out.csv", "/tmp/partyline-escape/out.csv"):
        with pytest.raises(PathEscapeError):
            resolve_in_root(root, bad, for_write=True)
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before
    assert not os.path.exists("/tmp/partyline-escape")


def test_path_escape_error_is_a_value_error():
    assert issubclass(PathEscapeError, ValueError)


# --- read_csv_header --------------------------------------------------------------------------
def test_read_csv_header(root):
    assert read_csv_header(root / "customers.csv") == ["uid", "name"]


def test_read_csv_header_strips_and_quotes(tmp_path):
    f = tmp_path / "h.csv"
    f.write_text('uid ,"full, name", age\r\n1,"a, b",3\r\n')
    assert read_csv_header(f) == ["uid", "full, name", "age"]


def test_read_csv_header_header_only(tmp_path):
    f = tmp_path / "h.csv"
    f.write_text("id")
    assert read_csv_header(f) == ["id"]


def test_read_csv_header_empty_file(tmp_path):
    f = tmp_path / "empty.csv"
    f.write_text("")
    with pytest.raises(ValueError, match=r"empty\.csv is empty"):
        read_csv_header(f)


def test_read_csv_header_tolerates_a_byte_order_mark(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes("\ufeffuid,amount\n1,2\n".encode())
    assert read_csv_header(path) == ["uid", "amount"]


def test_scratch_is_inside_the_data_root_and_pruned_only_when_old(tmp_path):
    import os
    import time

    from node.datapaths import prune_scratch, scratch_dir

    root = tmp_path / "data"
    scratch = scratch_dir(root)
    assert scratch == root / ".partyline" / "tmp" and scratch.is_dir()
    old, new = scratch / "old-run", scratch / "new-run"
    old.mkdir()
    (old / "inter.csv").write_text("x")
    new.mkdir()
    past = time.time() - 3600
    os.utime(old, (past, past))
    assert prune_scratch(root, older_than_s=600) == 1
    assert not old.exists() and new.exists()

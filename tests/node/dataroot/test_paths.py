"""node/dataroot/paths.py: every way out of the data root is refused."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from node.dataroot.paths import PathEscapeError, read_csv_header, resolve_in_root


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

    from node.dataroot.paths import prune_scratch, scratch_dir

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


# --- outputs without races (issue 22, point 4) -------------------------------------------------
def _target(root, name="out/res.csv", writer="exe-1"):
    from node.dataroot.paths import OutputTarget

    real = resolve_in_root(root, name, for_write=True)
    return OutputTarget.at_preflight(root, real, writer)


def test_an_output_is_written_under_a_temporary_name_and_renamed_into_place(root):
    target = _target(root)
    with target.writing() as out:
        out.write(b"a,b\n")
        assert [p.name for p in (root / "out").iterdir()] == [".res.csv.exe-1.partial"]
    assert (root / "out/res.csv").read_bytes() == b"a,b\n"
    assert [p.name for p in (root / "out").iterdir()] == ["res.csv"]


def test_a_planted_partial_link_is_never_written_through(root, outside):
    """The temporary file is created exclusively, without following a link: a link planted
    under its name (or under the old `<out>.partial`) makes the write fail, and nothing is
    written outside the data root."""
    target = _target(root)
    victim = outside / "victim.csv"
    victim.write_text("theirs\n")
    (root / "out/res.csv.partial").symlink_to(victim)
    (root / "out/.res.csv.exe-1.partial").symlink_to(victim)
    with pytest.raises(FileExistsError), target.writing() as out:
        out.write(b"rows\n")
    assert victim.read_text() == "theirs\n"
    assert not (root / "out/res.csv").exists()
    assert (root / "out/.res.csv.exe-1.partial").is_symlink()  # the planted link, not followed


def test_a_folder_swapped_for_a_link_after_the_check_is_refused(root, outside):
    target = _target(root)
    (root / "out").rename(root / "out-moved")
    (root / "out").symlink_to(outside, target_is_directory=True)
    before = sorted(outside.iterdir())
    with (
        pytest.raises(PathEscapeError, match="not a folder inside the data root"),
        target.writing(),
    ):
        pass
    assert sorted(outside.iterdir()) == before


def test_a_folder_swapped_for_another_folder_after_the_check_is_refused(root):
    target = _target(root)
    (root / "out").rename(root / "out-moved")
    (root / "out").mkdir()
    with (
        pytest.raises(PathEscapeError, match="replaced since the job was checked"),
        target.writing(),
    ):
        pass
    assert list((root / "out").iterdir()) == []


def test_a_failed_write_leaves_no_temporary_file(root):
    target = _target(root)
    with pytest.raises(RuntimeError), target.writing() as out:
        out.write(b"half")
        raise RuntimeError("killed midway")
    assert list((root / "out").iterdir()) == []


def test_an_output_name_is_claimed_by_one_job_until_released(root):
    from node.dataroot.paths import OutputBusy, release_output, reserve_output

    parts, later = ("out", "res.csv"), time.time() + 3600
    reserve_output(root, parts, "job-a", "exe-a1", later)
    with pytest.raises(OutputBusy, match="being written by job job-a"):
        reserve_output(root, parts, "job-b", "exe-b1", later)
    reserve_output(root, parts, "job-a", "exe-a2", later)  # the same job's next attempt
    release_output(root, parts, "exe-a1")  # not its claim any more: a no-op
    with pytest.raises(OutputBusy):
        reserve_output(root, parts, "job-b", "exe-b1", later)
    release_output(root, parts, "exe-a2")
    reserve_output(root, parts, "job-b", "exe-b1", later)


def test_a_claim_left_by_a_killed_job_lapses_at_its_deadline(root):
    from node.dataroot.paths import reserve_output

    parts = ("out", "res.csv")
    reserve_output(root, parts, "job-a", "exe-a1", time.time() - 1)  # its deadline passed
    reserve_output(root, parts, "job-b", "exe-b1", time.time() + 3600)


@pytest.mark.parametrize("name", [".partyline/outputs/x", ".partyline/work/exe.alice/keys.csv"])
def test_names_in_the_nodes_own_folder_are_refused(root, name):
    with pytest.raises(PathEscapeError, match=r"node's own \.partyline"):
        resolve_in_root(root, name)
    with pytest.raises(PathEscapeError, match=r"node's own \.partyline"):
        resolve_in_root(root, str(root / name), for_write=True)


def test_a_link_into_the_nodes_own_folder_is_refused(root):
    (root / ".partyline").mkdir()
    (root / ".partyline/secret").write_text("x")
    (root / "innocent.csv").symlink_to(root / ".partyline/secret")
    with pytest.raises(PathEscapeError, match=r"node's own \.partyline"):
        resolve_in_root(root, "innocent.csv")

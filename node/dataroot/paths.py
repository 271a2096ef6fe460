"""Resolve dataset names inside a node's data root; refuse every way out of it."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO


class PathEscapeError(ValueError):
    """A dataset path that would leave the data root."""


def resolve_in_root(root: Path, name: str, *, for_write: bool = False) -> Path:
    """Return the absolute path of `name` inside `root`.

    Refuses: empty names, NUL bytes, absolute paths outside the root, `..` components,
    symlinks (at any level) that lead outside the root, and anything in the node's own
    `.partyline/` tree. For writes, the parent directories are created inside the root and the
    target must not be an existing symlink or directory.
    """
    if not isinstance(name, str) or not name.strip():
        raise PathEscapeError("dataset path is empty")
    if "\x00" in name:
        raise PathEscapeError(f"dataset path {name!r} contains a NUL byte")
    root = Path(root).resolve()
    candidate = Path(name)
    if candidate.is_absolute():
        try:
            candidate = candidate.relative_to(root)
        except ValueError:
            raise PathEscapeError(
                f"dataset path {name!r} is an absolute path outside the data root {root}"
            ) from None
    if ".." in candidate.parts:
        raise PathEscapeError(
            f"dataset path {name!r} contains '..'; use a name inside the data root"
        )
    full = root / candidate
    real = Path(os.path.realpath(full))
    if real != root and root not in real.parents:
        raise PathEscapeError(
            f"dataset path {name!r} leads outside the data root (through a symlink)"
        )
    if PRIVATE_DIR in (candidate.parts[:1] + real.relative_to(root).parts[:1]):
        raise PathEscapeError(f"dataset path {name!r} is in the node's own {PRIVATE_DIR}/ folder")
    if for_write:
        if full.is_symlink():
            raise PathEscapeError(
                f"output path {name!r} is a symlink; refusing to write through it"
            )
        if full.is_dir():
            raise PathEscapeError(f"output path {name!r} is a directory")
        real.parent.mkdir(parents=True, exist_ok=True)
        # re-check after mkdir: a racing symlink swap must not move us out of the root
        again = Path(os.path.realpath(real.parent))
        if again != root and root not in again.parents:
            raise PathEscapeError(f"output path {name!r} leads outside the data root")
    return real


HEADER_MAX_BYTES = 64 * 1024  # a header line longer than this is not read
MAX_COLUMNS = 1000
COLUMN_NAME_MAX = 256


def read_csv_header(path: Path) -> list[str]:
    """Column names of a CSV file's first line (no rows are read, and at most
    HEADER_MAX_BYTES of the file): at most MAX_COLUMNS names of at most COLUMN_NAME_MAX
    characters. ValueError for a file without a header line, or one too long to be one."""
    import csv

    with open(path, "rb") as fh:
        head = fh.read(HEADER_MAX_BYTES + 1)
    line, newline, _ = head.partition(b"\n")
    if not newline and len(head) > HEADER_MAX_BYTES:
        raise ValueError(f"{path.name}: the header line is longer than {HEADER_MAX_BYTES} bytes")
    text = line.decode("utf-8-sig").rstrip("\r")  # a BOM is tolerated; UnicodeDecodeError
    if not text.strip():
        raise ValueError(f"{path.name} is empty: no header line")
    try:
        row = next(csv.reader([text]), [])
    except csv.Error as exc:
        raise ValueError(f"{path.name}: the header line is not CSV ({exc})") from None
    return [c.strip()[:COLUMN_NAME_MAX] for c in row[:MAX_COLUMNS]]


PRIVATE_DIR = ".partyline"  # the node's own files inside the data root (hidden from datasets)


def scratch_dir(data_root: Path) -> Path:
    """TMPDIR of this party's Ray workers and job processes: SPU writes intersection indices
    and sorted key copies there (and leaves them when its process is killed), so they stay
    inside the data root — never in /tmp."""
    path = Path(data_root) / PRIVATE_DIR / "tmp"
    path.mkdir(parents=True, exist_ok=True)
    return path


def prune_scratch(data_root: Path, older_than_s: float) -> int:
    """Remove what SPU left in the scratch folder longer ago than any job may run."""
    return remove_entries(Path(data_root) / PRIVATE_DIR / "tmp", older_than_s=older_than_s)


def remove_entries(folder: Path, *, older_than_s: float) -> int:
    """Remove the entries of `folder` last changed more than `older_than_s` ago (all of them
    with 0; links are removed, never followed); returns how many went."""
    import shutil

    if not folder.is_dir():
        return 0
    limit = time.time() - older_than_s
    removed = 0
    for entry in folder.iterdir():
        try:
            if older_than_s and entry.lstat().st_mtime >= limit:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed += 1
        except OSError:
            continue
    return removed


def _owner_file(data_root: Path, output_name: str) -> Path:
    digest = hashlib.sha256(output_name.encode()).hexdigest()[:32]
    return data_root / PRIVATE_DIR / "outputs" / digest


def output_owner(data_root: Path, output_name: str) -> str | None:
    """The job (task id) that wrote `output_name` last, if this node wrote it."""
    try:
        return _owner_file(data_root, output_name).read_text().strip() or None
    except OSError:
        return None


# --- writing an output: no link, no swapped folder, no second writer -------------------------
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def open_folder(data_root: Path, parts: tuple[str, ...]) -> int:
    """A descriptor of the folder `parts` below the data root, opened one component at a time
    without following a link (so it cannot lead out of the root, whatever was swapped in)."""
    fd = os.open(Path(data_root).resolve(), _DIR_FLAGS)
    try:
        for part in parts:
            nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = nxt
    except OSError:
        os.close(fd)
        raise PathEscapeError(
            f"output folder {'/'.join(parts) or '.'} is not a folder inside the data root "
            "(a link, or it was removed)"
        ) from None
    return fd


def folder_identity(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


@dataclass(frozen=True)
class OutputTarget:
    """Where a job writes its output, fixed at preflight: the real path inside the data root
    and the identity (device, inode) of its folder then. `writing()` opens that folder again
    without following links, checks it is the same folder, creates the temporary file
    exclusively in it (never through a link, never a file another writer made) and renames it
    into place relative to the open folder."""

    data_root: Path
    parts: tuple[str, ...]  # the real path's components below the data root
    folder: tuple[int, int]
    writer: str  # the execution id: the temporary file's name is the writer's own

    @classmethod
    def at_preflight(cls, data_root: Path, real: Path, writer: str) -> OutputTarget:
        parts = real.relative_to(Path(data_root).resolve()).parts
        fd = open_folder(data_root, parts[:-1])
        try:
            return cls(Path(data_root), parts, folder_identity(fd), writer)
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def writing(self) -> Iterator[BinaryIO]:
        fd = open_folder(self.data_root, self.parts[:-1])
        try:
            if folder_identity(fd) != self.folder:
                raise PathEscapeError(
                    f"output folder {'/'.join(self.parts[:-1])} was replaced since the job was "
                    "checked; refusing to write"
                )
            leaf = self.parts[-1]
            tmp = f".{leaf}.{self.writer}.partial"
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            out = os.fdopen(os.open(tmp, flags, 0o640, dir_fd=fd), "wb")
            try:
                with out:
                    yield out
                os.replace(tmp, leaf, src_dir_fd=fd, dst_dir_fd=fd)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=fd)
                raise
        finally:
            os.close(fd)


class OutputBusy(ValueError):
    """Another job is writing (or about to write) this output."""


def _reservation(data_root: Path, parts: tuple[str, ...]) -> Path:
    digest = hashlib.sha256("/".join(parts).encode()).hexdigest()[:32]
    return Path(data_root) / PRIVATE_DIR / "outputs" / f"{digest}.writing"


def reserve_output(
    data_root: Path, parts: tuple[str, ...], task_id: str, writer: str, until: float
) -> None:
    """Claim the output from preflight until its rename: a second job naming the same output
    (another slot, a warm and a cold job side by side) is refused with `OutputBusy`. A claim
    left by a killed worker lapses at `until` (the job's deadline); another attempt of the same
    job takes its own job's claim over."""
    path = _reservation(data_root, parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    claim = json.dumps(
        {"task_id": task_id, "writer": writer, "until": until, "parts": list(parts)}
    ).encode()
    for _ in range(2):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            held = _read_claim(path)
            if held.get("task_id") != task_id and float(held.get("until", 0)) > time.time():
                raise OutputBusy(
                    f"output {'/'.join(parts)!r} is being written by job {held.get('task_id')}"
                ) from None
            path.unlink(missing_ok=True)  # lapsed, or our own job's earlier attempt
            continue
        with os.fdopen(fd, "wb") as fh:
            fh.write(claim)
        return
    raise OutputBusy(f"output {'/'.join(parts)!r} is being claimed by another job")


def _read_claim(path: Path) -> dict:
    try:
        held = json.loads(path.read_bytes()[:4096])
    except (OSError, ValueError):
        return {}
    return held if isinstance(held, dict) else {}


def drop_claims(data_root: Path, *, lapsed_only: bool = False) -> int:
    """Remove every output claim (only when no job can be running: at the worker's start) —
    or, with `lapsed_only`, those past their job's deadline — and the temporary file its writer
    may have left. Returns how many claims were removed."""
    folder = Path(data_root) / PRIVATE_DIR / "outputs"
    claims = list(folder.glob("*.writing")) if folder.is_dir() else []
    dropped = 0
    for path in claims:
        held = _read_claim(path)
        if lapsed_only and float(held.get("until", 0) or 0) > time.time():
            continue
        dropped += 1
        parts, writer = held.get("parts"), held.get("writer")
        if isinstance(parts, list) and parts and isinstance(writer, str):
            with contextlib.suppress(OSError, PathEscapeError):
                fd = open_folder(data_root, tuple(str(p) for p in parts[:-1]))
                try:
                    os.unlink(f".{parts[-1]}.{writer}.partial", dir_fd=fd)
                finally:
                    os.close(fd)
        path.unlink(missing_ok=True)
    return dropped


def release_output(data_root: Path, parts: tuple[str, ...], writer: str) -> None:
    """End this writer's claim (a no-op when it is not this writer's any more)."""
    path = _reservation(data_root, parts)
    if _read_claim(path).get("writer") == writer:
        path.unlink(missing_ok=True)


def record_output_owner(data_root: Path, output_name: str, task_id: str) -> None:
    """Remember which job wrote `output_name`: another attempt of the same job may replace it
    (a retry after a peer failed late), any other job only with overwrite."""
    path = _owner_file(data_root, output_name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(task_id)

"""Resolve dataset names inside a node's data root; refuse every way out of it."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


class PathEscapeError(ValueError):
    """A dataset path that would leave the data root."""


def resolve_in_root(root: Path, name: str, *, for_write: bool = False) -> Path:
    """Return the absolute path of `name` inside `root`.

    Refuses: empty names, NUL bytes, absolute paths outside the root, `..` components and
    symlinks (at any level) that lead outside the root. For writes, the parent directories are
    created inside the root and the target must not be an existing symlink or directory.
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


def read_csv_header(path: Path) -> list[str]:
    """Column names of a CSV file's first line (no rows are read)."""
    import csv

    with open(path, newline="", encoding="utf-8-sig") as fh:  # tolerate a BOM
        row = next(csv.reader(fh), None)
    if row is None:
        raise ValueError(f"{path.name} is empty: no header line")
    return [c.strip() for c in row]


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
    import shutil
    import time

    root = Path(data_root) / PRIVATE_DIR / "tmp"
    if not root.is_dir():
        return 0
    limit = time.time() - older_than_s
    removed = 0
    for entry in root.iterdir():
        try:
            if entry.lstat().st_mtime >= limit:
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


def record_output_owner(data_root: Path, output_name: str, task_id: str) -> None:
    """Remember which job wrote `output_name`: another attempt of the same job may replace it
    (a retry after a peer failed late), any other job only with overwrite."""
    path = _owner_file(data_root, output_name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(task_id)

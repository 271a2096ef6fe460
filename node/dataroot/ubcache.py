"""Where an unbalanced PSI's cache halves live in a party's data root, and what they say of
themselves (docs/node.md "Unbalanced PSI").

    <data root>/.partyline/ubcache/<server>/<cache name>/
        cache.json   the manifest (`CacheManifest`): its role, its peer, the job that made it,
                     and — at the server — the table and the version of it the cache was made of
        spu/         SPU's cache folder: at the server its secret key (plain JSON), a plain copy
                     of its keys and the shuffled OPRF values; at the client the server's OPRF
                     value of every key

Folders 0700 and files 0600: the node's user only. A cache is made in the job's work folder and
renamed into place whole once SPU has written it (`commit`): a half is there complete or not at
all. Nothing here leaves the data root.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, ValidationError

from node.dataroot.paths import PRIVATE_DIR

CACHES = "ubcache"
MANIFEST = "cache.json"
SPU_DIR = "spu"
MANIFEST_MAX_BYTES = 64 * 1024


class CacheRole(StrEnum):
    SERVER = "server"
    CLIENT = "client"


class TableVersion(BaseModel):
    """A table as it was: any write to it changes its ctime (which no user can set back), a
    replacement its inode — so a cache is never used with a table that changed since."""

    size: int
    mtime_ns: int
    ctime_ns: int
    ino: int
    dev: int

    @classmethod
    def of(cls, path: Path) -> TableVersion:
        st = os.stat(path)
        return cls(
            size=st.st_size,
            mtime_ns=st.st_mtime_ns,
            ctime_ns=st.st_ctime_ns,
            ino=st.st_ino,
            dev=st.st_dev,
        )

    def describe(self) -> str:
        at = dt.datetime.fromtimestamp(self.mtime_ns / 1e9, dt.UTC)
        return f"{self.size:,} bytes, modified {at:%Y-%m-%d %H:%M:%S} UTC"


class CacheManifest(BaseModel):
    """One half of a cache, as its party wrote it."""

    cache: str
    role: CacheRole
    server: str
    client: str
    made_by: str  # the cache job's id
    made_at: dt.datetime
    rows: int  # the server's distinct keys (the client learns this number too)
    bytes: int = 0  # this half's size on disk
    table: str | None = None  # the server's table, as the request named it (server only)
    keys: list[str] | None = None  # its key columns (server only)
    table_version: TableVersion | None = None  # (server only)


class CacheMissing(LookupError):
    """No usable half of that cache at this party (the message says why)."""


def cache_root(data_root: Path) -> Path:
    return Path(data_root) / PRIVATE_DIR / CACHES


def cache_dir(data_root: Path, server: str, name: str) -> Path:
    return cache_root(data_root) / server / name


def private_dirs(path: Path, top: Path) -> None:
    """Make `path` and its parents up to `top` (inside the data root) folders only the node's
    user may open."""
    if path != top and top not in path.parents:
        raise ValueError(f"{path} is not inside {top}")
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    for folder in [path, *path.parents]:
        os.chmod(folder, 0o700)
        if folder == top:
            break


def seal(folder: Path) -> int:
    """Narrow everything under `folder` to the node's user (folders 0700, files 0600; SPU
    writes with the process umask); returns the bytes in it."""
    total = 0
    os.chmod(folder, 0o700)
    for base, dirs, files in os.walk(folder):
        for d in dirs:
            os.chmod(Path(base) / d, 0o700, follow_symlinks=False)
        for f in files:
            p = Path(base) / f
            if p.is_symlink():  # SPU writes none; never follow one out of the data root
                p.unlink()
                continue
            os.chmod(p, 0o600)
            total += p.stat().st_size
    return total


def commit(staging: Path, data_root: Path, manifest: CacheManifest) -> CacheManifest:
    """The half made in `staging` (its SPU folder inside) sealed, its manifest written, and put
    in place of any older half of the same name, whole."""
    manifest = manifest.model_copy(update={"bytes": seal(staging)})
    path = staging / MANIFEST
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(manifest.model_dump_json(indent=1))
    final = cache_dir(data_root, manifest.server, manifest.cache)
    private_dirs(final.parent, cache_root(data_root))
    for stale in final.parent.glob(f".{final.name}.old-*"):  # a commit cut off before
        shutil.rmtree(stale, ignore_errors=True)
    old = final.with_name(f".{final.name}.old-{manifest.made_by}")
    if final.exists():
        os.rename(final, old)
    os.rename(staging, final)
    shutil.rmtree(old, ignore_errors=True)
    return manifest


def load(data_root: Path, server: str, name: str, party: str) -> CacheManifest:
    """This party's half of cache `name` of `server`, or CacheMissing saying so."""
    path = cache_dir(data_root, server, name) / MANIFEST
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MANIFEST_MAX_BYTES + 1)
    except FileNotFoundError:
        raise CacheMissing(
            f"no cache {name!r} of {server} at party {party}: make it first (a ub_psi_cache job)"
        ) from None
    if len(raw) > MANIFEST_MAX_BYTES:
        raise CacheMissing(f"the manifest of cache {name!r} at party {party} is too long")
    try:
        return CacheManifest.model_validate_json(raw)
    except ValidationError:
        raise CacheMissing(
            f"the manifest of cache {name!r} at party {party} is unreadable: make the cache again"
        ) from None


def remove(data_root: Path, server: str, name: str) -> bool:
    """This party's half of cache `name` of `server` deleted (renamed aside first, so a query
    never reads half a folder); False when there was none."""
    final = cache_dir(data_root, server, name)
    if not final.is_dir() or final.is_symlink():
        return False
    if not final.resolve().is_relative_to(cache_root(data_root).resolve()):
        return False  # a linked server folder: never delete outside the caches
    aside = final.with_name(f".{final.name}.old-removed")
    shutil.rmtree(aside, ignore_errors=True)
    os.rename(final, aside)
    shutil.rmtree(aside, ignore_errors=True)
    return True


def spu_path(data_root: Path, server: str, name: str) -> Path:
    return cache_dir(data_root, server, name) / SPU_DIR


def list_caches(data_root: Path) -> list[CacheManifest]:
    """Every readable half at this party, by server then name."""
    found = []
    root = cache_root(data_root)
    if not root.is_dir():
        return []
    for server in sorted(p for p in root.iterdir() if p.is_dir()):
        for folder in sorted(p for p in server.iterdir() if p.is_dir()):
            if folder.name.startswith("."):
                continue
            try:
                found.append(load(data_root, server.name, folder.name, "here"))
            except CacheMissing:
                continue
    return found

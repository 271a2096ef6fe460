"""The unbalanced PSI's online job: the client's table against a cache the server made before
(node/jobtypes/ub_psi_cache.py; SPU's UbPsiConfig MODE_ONLINE).

Before any SecretFlow work each party checks its half of the cache: there, made by the job the
request names (`made_by`), for this peer — and at the server, made of the table as it is now
(its version unchanged); else the query is refused naming the cache and what changed. The
client's table is checked and copied as keys as for a PSI (duplicates modes included), and its
answer is made of its own rows. What each party learns: the client, the intersection (which of
its keys the server's table holds); the server, the number of the client's distinct keys and
nothing of the intersection.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from pydantic import Field

from node.contract import ErrorType, Stage, TaskParams
from node.contract.ubpsi import UbPsiTaskConfig
from node.dataroot import ubcache
from node.dataroot.lines import TableError
from node.dataroot.paths import (
    OutputTarget,
    PathEscapeError,
    release_output,
    resolve_in_root,
)
from node.dataroot.tables import check_table
from node.jobtypes.psi import claim_output, work_dir, write_answer
from node.jobtypes.spec import JobContext, JobRefused, JobType, Prepared, read_task_config
from node.jobtypes.spucall import own_runtime_call
from node.jobtypes.ub_psi_cache import check_parties
from node.settings import NodeSettings

NAME = "ub_psi"


class UbPsiPrepared(Prepared):
    role: ubcache.CacheRole
    cache_path: str  # this party's half's SPU folder
    # the client's only
    input_path: str = ""  # its key-only copy
    key_columns: list[str] = Field(default_factory=list)
    source_path: str = ""
    output_name: str = ""
    output_parts: list[str] = Field(default_factory=list)
    output_folder: tuple[int, int] = (0, 0)
    data_root: str = ""
    duplicates: str = "distinct"
    plain: bool = False
    server_rows: int = 0


def prepare(params: TaskParams, settings: NodeSettings) -> UbPsiPrepared:
    cfg = read_task_config(params, UbPsiTaskConfig, "unbalanced PSI")
    check_parties(params, cfg.parties())
    manifest = _half(params, settings, cfg)
    cache_path = str(ubcache.spu_path(settings.data_root, cfg.server, cfg.cache))
    if params.party == cfg.server:
        _same_table(settings, cfg, manifest)
        return UbPsiPrepared(role=ubcache.CacheRole.SERVER, cache_path=cache_path)
    return _client(params, settings, cfg, manifest, cache_path)


def _half(
    params: TaskParams, settings: NodeSettings, cfg: UbPsiTaskConfig
) -> ubcache.CacheManifest:
    """This party's half of the cache, as the request expects it."""
    party = params.party
    try:
        m = ubcache.load(settings.data_root, cfg.server, cfg.cache, party)
    except ubcache.CacheMissing as exc:
        raise JobRefused(str(exc), ErrorType.CACHE_NOT_FOUND) from None
    role = ubcache.CacheRole.SERVER if party == cfg.server else ubcache.CacheRole.CLIENT
    why = None
    if m.role != role or (m.server, m.client) != (cfg.server, cfg.client):
        why = f"it was made between server {m.server} and client {m.client}"
    elif m.made_by != cfg.made_by:
        why = f"it was made by job {m.made_by}, the request names {cfg.made_by}"
    if why:
        raise JobRefused(
            f"cache {cfg.cache!r} of {cfg.server} at party {party} is not the one asked for: "
            f"{why}; make the cache again (ub_psi_cache with overwrite: true)",
            ErrorType.CACHE_STALE,
        )
    return m


def _same_table(settings: NodeSettings, cfg: UbPsiTaskConfig, m: ubcache.CacheManifest) -> None:
    """The server's table is as it was when the cache was made, or the query is refused."""
    assert m.table is not None and m.table_version is not None  # a server half records them
    try:
        now: ubcache.TableVersion | None = ubcache.TableVersion.of(
            resolve_in_root(settings.data_root, m.table)
        )
    except (OSError, PathEscapeError):
        now = None
    if now == m.table_version:
        return
    was = m.table_version.describe()
    is_now = "it is gone" if now is None else f"now {now.describe()}"
    raise JobRefused(
        f"cache {cfg.cache!r} was made from table {m.table} as it was then ({was}); the table "
        f"changed since ({is_now}): make the cache again (ub_psi_cache with overwrite: true)",
        ErrorType.CACHE_STALE,
    )


def _client(
    params: TaskParams,
    settings: NodeSettings,
    cfg: UbPsiTaskConfig,
    manifest: ubcache.CacheManifest,
    cache_path: str,
) -> UbPsiPrepared:
    """The client's table checked and copied as keys, its output claimed and placed."""
    try:
        source = resolve_in_root(settings.data_root, cfg.input_path)
        output = resolve_in_root(settings.data_root, cfg.output_path)
    except PathEscapeError as exc:
        raise JobRefused(str(exc), ErrorType.PATH_OUTSIDE_DATA_ROOT) from None
    if not source.is_file():
        raise JobRefused(
            f"input dataset {cfg.input_path!r} does not exist in the data root",
            ErrorType.DATASET_NOT_FOUND,
        )
    if source == output:
        raise JobRefused(
            "output path equals input path; refusing to overwrite the input",
            ErrorType.INVALID_PARAMS,
        )
    parts = output.relative_to(settings.data_root.resolve()).parts
    claim_output(params, settings, cfg.output_path, cfg.overwrite, output, parts)
    work = work_dir(settings, params)
    try:
        table = check_table(
            source, cfg.input_path, cfg.keys, duplicates=cfg.duplicates, work_dir=work
        )
        real = resolve_in_root(settings.data_root, cfg.output_path, for_write=True)
        target = OutputTarget.at_preflight(settings.data_root, real, params.execution_id)
    except BaseException as exc:  # refused: nothing of the job stays (key copy, the claim)
        shutil.rmtree(work, ignore_errors=True)
        release_output(settings.data_root, parts, params.execution_id)
        raise _refusal(exc, cfg.input_path) from None
    return UbPsiPrepared(
        role=ubcache.CacheRole.CLIENT,
        cache_path=cache_path,
        input_path=str(table.psi_input),
        key_columns=list(cfg.keys),
        source_path=str(source),
        output_name=cfg.output_path,
        output_parts=list(target.parts),
        output_folder=target.folder,
        output_claim=list(parts),
        data_root=str(settings.data_root),
        duplicates=str(cfg.duplicates),
        plain=table.plain,
        server_rows=manifest.rows,
        work_dir=str(work),
        input_check=table.metrics(),
    )


def _refusal(exc: BaseException, name: str) -> BaseException:
    if isinstance(exc, TableError):
        return JobRefused(f"table {exc.message}", exc.type)
    if isinstance(exc, PathEscapeError):
        return JobRefused(str(exc), ErrorType.PATH_OUTSIDE_DATA_ROOT)
    if isinstance(exc, OSError):
        return JobRefused(f"cannot read {name!r}: {exc.strerror}", ErrorType.DATASET_NOT_FOUND)
    return exc


def run(prepared: UbPsiPrepared, ctx: JobContext) -> dict[str, Any]:
    params = ctx.params
    client = prepared.role is ubcache.CacheRole.CLIENT
    own: dict[str, Any] = {"mode": "MODE_ONLINE", "cache_path": prepared.cache_path}
    psi_output = Path(prepared.work_dir or ".") / "psi-output.csv"
    if client:
        keys = [f"k{i}" for i in range(len(prepared.key_columns))]
        own |= {
            "role": "ROLE_CLIENT",
            "input_path": prepared.input_path,
            "keys": keys,
            "output_path": str(psi_output),
        }
    else:
        own |= {"role": "ROLE_SERVER"}
    ctx.report(Stage.ALGORITHM_RUNNING, 0.3)
    report, _ = own_runtime_call(
        ctx, "ub_psi", own, {"mode": "MODE_ONLINE", "role": "", "cache_path": ""}
    )
    result: dict[str, Any] = {
        "role": str(prepared.role),
        # the client's distinct keys (the server sees how many the client sent)
        "original_count": max(int(report["original_count"]) - 1, 0),
        "input_check": prepared.input_check,
    }
    if not client:
        return result
    t = time.perf_counter()
    result |= {
        "intersection_count": max(int(report["intersection_count"]) - 1, 0),
        "server_rows": prepared.server_rows,
        "output_path": prepared.output_name,
        "output_rows": write_answer(prepared, prepared.key_columns, params, psi_output),
        "duplicates": prepared.duplicates,
    }
    result["output_s"] = round(time.perf_counter() - t, 3)
    return result


JOB = JobType(
    name=NAME,
    prepared=UbPsiPrepared,
    prepare=prepare,
    run=run,
    needs_spu=True,
    releases_peers=True,
)

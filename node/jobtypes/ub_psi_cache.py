"""The unbalanced PSI's offline job: the server's table becomes a cache, once (SPU's UbPsiConfig
MODE_OFFLINE). See node/contract/ubpsi.py for the two job types, node/dataroot/ubcache.py for
where each half lives.

At the server: the table is checked and copied as keys (each key once, as for a PSI), then SPU
makes its half from that copy — its secret key, the keys, the shuffled OPRF values — and sends
the client the OPRF value of every key, which becomes the client's half. What each party
learns: the client, the number of the server's distinct keys; the server, nothing of the
client. Both halves are made in the job's work folder and renamed into place only once SPU
succeeded (`ubcache.commit`), named by the cache's name and tied to this job's id; the server's
records the table's version, so a query against a table that changed since is refused.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from node.contract import ErrorType, Stage, TaskParams
from node.contract.ubpsi import UbCacheTaskConfig
from node.dataroot import ubcache
from node.dataroot.lines import TableError
from node.dataroot.paths import PathEscapeError, resolve_in_root
from node.dataroot.tables import check_table
from node.jobtypes.psi import work_dir
from node.jobtypes.spec import JobContext, JobRefused, JobType, Prepared, read_task_config
from node.jobtypes.spucall import own_runtime_call
from node.settings import NodeSettings

NAME = "ub_psi_cache"


class UbCachePrepared(Prepared):
    role: ubcache.CacheRole
    cache: str
    server: str
    client: str
    data_root: str
    staging: str  # the half is made here (in the work folder), then renamed into place
    input_path: str = ""  # the server's key-only copy
    key_columns: int = 1
    table: str | None = None
    keys: list[str] | None = None
    table_version: ubcache.TableVersion | None = None


def config(params: TaskParams) -> UbCacheTaskConfig:
    cfg = read_task_config(params, UbCacheTaskConfig, "unbalanced PSI cache")
    check_parties(params, cfg.parties())
    return cfg


def check_parties(params: TaskParams, parties: list[str]) -> None:
    if sorted(params.sf_init_config.parties) != parties:
        raise JobRefused(
            "task_config's server and client must be exactly the parties of sf_init_config",
            ErrorType.INVALID_PARAMS,
        )
    if params.spu_config is None:
        raise JobRefused("an unbalanced PSI needs spu_config", ErrorType.INVALID_PARAMS)


def prepare(params: TaskParams, settings: NodeSettings) -> UbCachePrepared:
    cfg = config(params)
    role = ubcache.CacheRole.SERVER if params.party == cfg.server else ubcache.CacheRole.CLIENT
    _not_there_yet(settings, cfg, params.party)
    work = work_dir(settings, params)
    staging = work / "cache"
    ubcache.private_dirs(staging, work)
    base = {
        "role": role,
        "cache": cfg.cache,
        "server": cfg.server,
        "client": cfg.client,
        "data_root": str(settings.data_root),
        "staging": str(staging),
        "work_dir": str(work),
    }
    if role is ubcache.CacheRole.CLIENT:
        return UbCachePrepared(**base)
    return _server_table(params, settings, cfg, base)


def _not_there_yet(settings: NodeSettings, cfg: UbCacheTaskConfig, party: str) -> None:
    """Refused: a cache of this name without overwrite, or a new one beyond NODE_MAX_UB_CACHES."""
    try:
        old = ubcache.load(settings.data_root, cfg.server, cfg.cache, party)
    except ubcache.CacheMissing:
        _room_for_one_more(settings, party)
        return
    if cfg.overwrite:
        return
    raise JobRefused(
        f"cache {cfg.cache!r} of {cfg.server} already exists at party {party} (made by "
        f"{old.made_by} at {old.made_at:%Y-%m-%d %H:%M} UTC); ask for overwrite: true to make "
        "it again",
        ErrorType.OUTPUT_EXISTS,
    )


def _room_for_one_more(settings: NodeSettings, party: str) -> None:
    held = ubcache.list_caches(settings.data_root)
    if len(held) < settings.max_ub_caches:
        return
    oldest = min(held, key=lambda m: m.made_at)
    raise JobRefused(
        f"party {party} holds {len(held)} unbalanced PSI caches, its limit "
        f"(NODE_MAX_UB_CACHES); its operator can delete one, e.g. the oldest: "
        f"python -m node caches --delete {oldest.server}/{oldest.cache}",
        ErrorType.CACHE_LIMIT,
    )


def _server_table(
    params: TaskParams, settings: NodeSettings, cfg: UbCacheTaskConfig, base: dict[str, Any]
) -> UbCachePrepared:
    """The server's table checked and copied as keys, and its version taken before and after
    (a table written to during the check is refused)."""
    try:
        path = resolve_in_root(settings.data_root, cfg.input_path)
    except PathEscapeError as exc:
        raise JobRefused(str(exc), ErrorType.PATH_OUTSIDE_DATA_ROOT) from None
    if not path.is_file():
        raise JobRefused(
            f"input dataset {cfg.input_path!r} does not exist in the data root",
            ErrorType.DATASET_NOT_FOUND,
        )
    before = ubcache.TableVersion.of(path)
    try:
        table = check_table(
            path,
            cfg.input_path,
            cfg.keys,
            duplicates=cfg.duplicates,
            work_dir=Path(base["work_dir"]),
        )
    except TableError as exc:
        raise JobRefused(f"table {exc.message}", exc.type) from None
    if ubcache.TableVersion.of(path) != before:
        raise JobRefused(
            f"table {cfg.input_path!r} changed while it was checked; try again once it is written",
            ErrorType.TASK_REFUSED,
        )
    return UbCachePrepared(
        **base,
        input_path=str(table.psi_input),
        key_columns=len(cfg.keys),
        table=cfg.input_path,
        keys=list(cfg.keys),
        table_version=before,
        input_check=table.metrics(),
    )


def run(prepared: UbCachePrepared, ctx: JobContext) -> dict[str, Any]:
    params = ctx.params
    server = prepared.role is ubcache.CacheRole.SERVER
    spu_dir = str(Path(prepared.staging) / ubcache.SPU_DIR)
    own: dict[str, Any] = {"mode": "MODE_OFFLINE", "cache_path": spu_dir}
    if server:
        keys = [f"k{i}" for i in range(prepared.key_columns)]
        own |= {"role": "ROLE_SERVER", "input_path": prepared.input_path, "keys": keys}
    else:
        own |= {"role": "ROLE_CLIENT"}
    ctx.report(Stage.ALGORITHM_RUNNING, 0.3)
    report, _ = own_runtime_call(
        ctx, "ub_psi", own, {"mode": "MODE_OFFLINE", "role": "", "cache_path": ""}
    )
    ctx.report(Stage.ALGORITHM_DONE, 0.9)
    # SPU's count includes the sentinel key every key-only copy ends with
    rows = max(int(report["original_count"]) - 1, 0)
    manifest = ubcache.commit(
        Path(prepared.staging),
        Path(prepared.data_root),
        ubcache.CacheManifest(
            cache=prepared.cache,
            role=prepared.role,
            server=prepared.server,
            client=prepared.client,
            made_by=params.task_id,
            made_at=dt.datetime.now(dt.UTC),
            rows=rows,
            table=prepared.table,
            keys=prepared.keys,
            table_version=prepared.table_version,
        ),
    )
    return {
        "cache": manifest.cache,
        "role": str(manifest.role),
        "server": manifest.server,
        "client": manifest.client,
        "table": manifest.table,
        "rows": manifest.rows,
        "bytes": manifest.bytes,
        "made_by": manifest.made_by,
        "input_check": prepared.input_check,
    }


JOB = JobType(
    name=NAME,
    prepared=UbCachePrepared,
    prepare=prepare,
    run=run,
    needs_spu=True,
    releases_peers=True,
)

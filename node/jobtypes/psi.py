"""The PSI job: SPU's PSI between two to MAX_PSI_PARTIES parties, reading/writing inside each
data root — PSI v2 (RR22, KKRT) between two, the legacy bucket PSI for ECDH and for three or more
(ECDH_PSI_3PC, ECDH_PSI_NPC, KKRT_PSI_NPC).

What each party learns is said before launch by the coordinator's kind (coordinator/jobkinds/psi,
per protocol and party count; docs/node.md "Who learns what"): the receiver, the intersection —
its own rows whose keys every other party holds too (every party, with `broadcast_result`); this
party's report is read locally, never sent over the fed link (`report_sent_to`). Repeated keys
never reach the PSI (each key once), so nobody learns how often a key repeats elsewhere.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, Protocol

from node.contract import ErrorType, PSITaskConfig, TaskParams
from node.dataroot.lines import TableError
from node.dataroot.output import write_output
from node.dataroot.paths import (
    OutputBusy,
    OutputTarget,
    PathEscapeError,
    output_owner,
    record_output_owner,
    release_output,
    reserve_output,
    resolve_in_root,
)
from node.dataroot.tables import check_table
from node.jobtypes.spec import JobContext, JobRefused, JobType, Prepared, read_task_config
from node.jobtypes.spucall import own_runtime_call, sent_to
from node.settings import NodeSettings

# protocol → the legacy bucket PSI's type that runs it (the others run in PSI v2)
BUCKET_PSI_TYPES = {
    "PROTOCOL_ECDH": "ECDH_PSI_2PC",
    "ECDH_PSI_3PC": "ECDH_PSI_3PC",
    "ECDH_PSI_NPC": "ECDH_PSI_NPC",
    "KKRT_PSI_NPC": "KKRT_PSI_NPC",
}
WORK_DIR = ".partyline/work"  # per-job scratch inside the data root (normalized inputs)


def work_dir(settings: NodeSettings, params: TaskParams) -> Path:
    return settings.data_root / WORK_DIR / f"{params.execution_id}.{params.party}"


class PsiPrepared(Prepared):
    """A PSI checked and placed by this party, as its job process gets it."""

    protocol: str
    receiver: str
    keys: dict[str, list[str]]  # party → its key columns
    input_path: str  # the key-only copy the PSI reads
    source_path: str  # the table as given: the output's rows come from it
    output_path: str
    output_parts: list[str]  # the output's path in the data root, part by part
    output_folder: tuple[int, int]  # the output folder's (st_dev, st_ino), fixed at preflight
    output_name: str  # as the request named it
    data_root: str
    sort: bool
    broadcast_result: bool
    duplicates: str
    columns: list[str]
    plain: bool

    def writes_output(self, party: str) -> bool:
        return party == self.receiver or self.broadcast_result


def prepare(params: TaskParams, settings: NodeSettings) -> PsiPrepared:
    """The request checked, the input table checked and copied as keys, the output claimed."""
    cfg = _config(params)
    party = params.party
    name = cfg.input_paths[party]
    input_path, output_path = _paths(settings, cfg, name, cfg.output_paths[party])
    writes_output = party == cfg.receiver or cfg.broadcast_result
    parts = output_path.relative_to(settings.data_root.resolve()).parts
    if writes_output:
        claim_output(params, settings, cfg.output_paths[party], cfg.overwrite, output_path, parts)
    try:
        table, target = _check_and_place(params, settings, cfg, name, input_path)
    except BaseException:  # refused: nothing of the job stays (key copies, the claim)
        shutil.rmtree(work_dir(settings, params), ignore_errors=True)
        if writes_output:
            release_output(settings.data_root, parts, params.execution_id)
        raise
    return PsiPrepared(
        protocol=cfg.protocol,
        receiver=cfg.receiver,
        keys=cfg.keys,
        input_path=str(table.psi_input),
        source_path=str(table.source),
        work_dir=str(work_dir(settings, params)),
        output_path=str(target.data_root.joinpath(*target.parts)),
        output_parts=list(target.parts),
        output_folder=target.folder,
        output_claim=list(parts) if writes_output else None,  # released by the task
        output_name=cfg.output_paths[party],
        data_root=str(settings.data_root),
        sort=cfg.sort,
        broadcast_result=cfg.broadcast_result,
        duplicates=str(cfg.duplicates),
        input_check=table.metrics(),
        columns=table.columns,
        plain=table.plain,
    )


def _config(params: TaskParams) -> PSITaskConfig:
    cfg = read_task_config(params, PSITaskConfig, "PSI")
    if set(cfg.keys) != set(params.sf_init_config.parties):
        raise JobRefused(
            "task_config.keys must name exactly the parties of sf_init_config",
            ErrorType.INVALID_PARAMS,
        )
    if params.spu_config is None:
        raise JobRefused("PSI needs spu_config", ErrorType.INVALID_PARAMS)
    return cfg


def _paths(
    settings: NodeSettings, cfg: PSITaskConfig, name: str, output_name: str
) -> tuple[Path, Path]:
    """The input (an existing file) and the output inside the data root, not one file."""
    try:
        input_path = resolve_in_root(settings.data_root, name)
    except PathEscapeError as exc:
        raise JobRefused(str(exc), ErrorType.PATH_OUTSIDE_DATA_ROOT) from None
    if not input_path.is_file():
        raise JobRefused(
            f"input dataset {name!r} does not exist in the data root", ErrorType.DATASET_NOT_FOUND
        )
    try:  # checked now, created (parent folders) only once the table passed its check
        output_path = resolve_in_root(settings.data_root, output_name)
    except PathEscapeError as exc:
        raise JobRefused(str(exc), ErrorType.PATH_OUTSIDE_DATA_ROOT) from None
    if input_path == output_path:
        raise JobRefused(
            "output path equals input path; refusing to overwrite the input",
            ErrorType.INVALID_PARAMS,
        )
    return input_path, output_path


def claim_output(
    params: TaskParams,
    settings: NodeSettings,
    name: str,
    overwrite: bool,
    output_path: Path,
    parts: tuple[str, ...],
) -> None:
    """The output `name` claimed from here to its rename: an existing output (unless
    `overwrite`, or another attempt of the same job wrote it) and a second writer are refused."""
    if (
        not overwrite
        and output_path.exists()
        and output_owner(settings.data_root, name) != params.task_id
    ):
        raise _exists(name, "already exists in the data root")
    try:
        reserve_output(
            settings.data_root, parts, params.task_id, params.execution_id,
            params.deadline.timestamp(),
        )  # fmt: skip
    except OutputBusy as exc:
        raise _exists(name, str(exc)) from None


def _exists(name: str, why: str) -> JobRefused:
    return JobRefused(
        f"output {name!r} {why}; choose another name, or ask for overwrite: true"
        if why.startswith("already")
        else f"{why}; choose another output name, or wait for that job",
        ErrorType.OUTPUT_EXISTS,
    )


def _check_and_place(
    params: TaskParams,
    settings: NodeSettings,
    cfg: PSITaskConfig,
    name: str,
    input_path: Path,
) -> tuple[Any, OutputTarget]:
    """The table check, then the output's folder made and fixed (OutputTarget)."""
    party = params.party
    try:  # the whole table, streamed: encoding, shape, quoting, empty keys, duplicates
        table = check_table(
            input_path,
            name,
            cfg.keys[party],
            duplicates=cfg.duplicates,
            work_dir=work_dir(settings, params),
        )
    except TableError as exc:
        raise JobRefused(f"table {exc.message}", exc.type) from None
    except OSError as exc:
        raise JobRefused(
            f"cannot read {name!r}: {exc.strerror}", ErrorType.DATASET_NOT_FOUND
        ) from None
    try:
        real = resolve_in_root(settings.data_root, cfg.output_paths[party], for_write=True)
        target = OutputTarget.at_preflight(settings.data_root, real, params.execution_id)
    except PathEscapeError as exc:
        raise JobRefused(str(exc), ErrorType.PATH_OUTSIDE_DATA_ROOT) from None
    return table, target


def run(prepared: PsiPrepared, ctx: JobContext) -> dict[str, Any]:
    params = ctx.params
    party = params.party
    parties = params.sf_init_config.parties
    writes_output = prepared.writes_output(party)
    # the PSI works on each party's key-only copy (k0, k1, … hex; each key once) and writes its
    # key-only answer into the work folder; the output is then made of the party's own rows
    assert prepared.work_dir is not None
    psi_output = Path(prepared.work_dir) / "psi-output.csv"
    psi_keys = [f"k{i}" for i in range(len(prepared.keys[party]))]
    method, kwargs = _spu_call(prepared, psi_keys)
    own_paths = {"input_path": prepared.input_path, "output_path": str(psi_output)}
    own, ref = own_runtime_call(
        ctx, method, {**kwargs, **own_paths}, {**kwargs, "input_path": "", "output_path": ""}
    )
    count = int(own["intersection_count"])
    result: dict[str, Any] = {
        # the sender learns no count unless the result is broadcast (SPU reports -1); SPU's
        # counts include the sentinel line both key-only copies end with
        "intersection_count": max(count - 1, 0) if count >= 0 and writes_output else None,
        "original_count": int(own["original_count"]) - 1,
        "output_path": prepared.output_name if writes_output else None,
        "output_rows": None,
        "duplicates": prepared.duplicates,
        "protocol": prepared.protocol,
        "receiver": prepared.receiver,
        "parties": list(parties),
        "input_check": prepared.input_check,
        # peers this party's PSI report went to over the cross-silo link (RayFed's own record)
        "report_sent_to": sent_to(ref, parties, party),
    }
    if writes_output:
        t = time.perf_counter()
        result["output_rows"] = write_answer(
            prepared, prepared.keys[params.party], params, psi_output
        )
        result["output_s"] = round(time.perf_counter() - t, 3)
    return result


class AnswerTarget(Protocol):
    """Where a party's answer goes and how it is made (a PSI's receiver, an unbalanced PSI's
    client): the fields `write_answer` reads."""

    source_path: str
    output_parts: list[str]
    output_folder: tuple[int, int]
    output_name: str
    data_root: str
    duplicates: str
    plain: bool


def write_answer(
    answer: AnswerTarget, keys: list[str], params: TaskParams, psi_output: Path
) -> int:
    """The output made of this party's own rows whose keys the PSI found in common (the rows
    written), its owner recorded as this job."""
    target = OutputTarget(
        Path(answer.data_root), tuple(answer.output_parts), answer.output_folder,
        params.execution_id,
    )  # fmt: skip
    rows = write_output(
        Path(answer.source_path),
        psi_output,
        keys,
        target,
        every_row=answer.duplicates == "join",
        plain=answer.plain,
    )
    record_output_owner(Path(answer.data_root), answer.output_name, params.task_id)
    return rows


def _spu_call(prepared: PsiPrepared, psi_keys: list[str]) -> tuple[str, dict[str, Any]]:
    """The SPU runtime's method (node.sfjob.spu_runtime.PartylineSPURuntime) and its arguments
    by name, except each party's own input and output paths."""
    if prepared.protocol in BUCKET_PSI_TYPES:
        # PSI v2's ECDH (spu 0.9.3b0) spawns its link contexts in a racy order and then hangs
        # until the receive timeout in about 1 run of 4 (see docs/node.md); the legacy bucket
        # PSI runs the same ECDH core without that race, and is the only one that runs three
        # or more parties. It writes a header-only output for an empty intersection.
        return "psi_csv", {
            "key": psi_keys,
            "receiver": prepared.receiver,
            "protocol": BUCKET_PSI_TYPES[prepared.protocol],
            "precheck_input": False,  # the node checked the table itself: keys are unique
            "sort": prepared.sort,
            "broadcast_result": prepared.broadcast_result,
            "bucket_size": 1 << 20,
            "curve_type": "CURVE_FOURQ",
        }
    return "psi", {
        "keys": psi_keys,
        "receiver": prepared.receiver,
        # keys_unique=true: the node hands each key once. (An empty intersection would abort
        # the receiver — "join_sorted_input.inter.csv failed" — while the sender waits out its
        # timeout; the key-only copies' common sentinel line, node.dataroot.lines.SENTINEL,
        # makes it never empty.)
        "table_keys_duplicated": False,
        "output_csv_na_rep": "NULL",
        "broadcast_result": prepared.broadcast_result,
        "protocol": prepared.protocol,
        "ecdh_curve": "CURVE_FOURQ",
        "advanced_join_type": "ADVANCED_JOIN_TYPE_INNER_JOIN",
        "left_side": "ROLE_RECEIVER",
        "skip_duplicates_check": True,  # checked before any SecretFlow work
        "disable_alignment": not prepared.sort,
        "check_hash_digest": False,
    }


JOB = JobType(
    name="psi", prepared=PsiPrepared, prepare=prepare, run=run, needs_spu=True, releases_peers=True
)

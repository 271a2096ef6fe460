"""The PSI job: spu.psi between exactly two parties, reading/writing inside each data root."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from node.contract import PSITaskConfig, TaskParams
from node.datapaths import PathEscapeError, read_csv_header, resolve_in_root
from node.dispatcher import JobRefused, JobType, register
from node.settings import NodeSettings


def prepare(params: TaskParams, settings: NodeSettings) -> dict[str, Any]:
    try:
        cfg = PSITaskConfig.model_validate(params.task_config)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "task_config"
        raise JobRefused(f"invalid PSI task_config ({where}): {first['msg']}") from None
    party = params.party
    if set(cfg.keys) != set(params.sf_init_config.parties):
        raise JobRefused("task_config.keys must name exactly the parties of sf_init_config")
    if params.spu_config is None:
        raise JobRefused("PSI needs spu_config")
    try:
        input_path = resolve_in_root(settings.data_root, cfg.input_paths[party])
    except PathEscapeError as exc:
        raise JobRefused(str(exc)) from None
    if not input_path.is_file():
        raise JobRefused(
            f"input dataset {cfg.input_paths[party]!r} does not exist in the data root"
        )
    try:
        header = read_csv_header(input_path)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise JobRefused(f"cannot read CSV header of {cfg.input_paths[party]!r}: {exc}") from None
    missing = [k for k in cfg.keys[party] if k not in header]
    if missing:
        raise JobRefused(
            f"key column(s) {', '.join(repr(m) for m in missing)} not found in "
            f"{cfg.input_paths[party]!r} (columns: {', '.join(header)})"
        )
    # last: resolving the output for writing creates its parent directories
    try:
        output_path = resolve_in_root(settings.data_root, cfg.output_paths[party], for_write=True)
    except PathEscapeError as exc:
        raise JobRefused(str(exc)) from None
    if input_path == output_path:
        raise JobRefused("output path equals input path; refusing to overwrite the input")
    return {
        "protocol": cfg.protocol,
        "receiver": cfg.receiver,
        "keys": cfg.keys,
        "input_path": str(input_path),
        "output_path": str(output_path),
        "output_name": cfg.output_paths[party],
        "sort": cfg.sort,
        "broadcast_result": cfg.broadcast_result,
        "table_keys_duplicated": cfg.table_keys_duplicated,
    }


def run(
    prepared: dict[str, Any], params: TaskParams, devices: dict, report: Callable[..., None]
) -> dict[str, Any]:
    party = params.party
    parties = params.sf_init_config.parties
    spu = devices["spu"]
    # Each party's driver supplies only its own real paths; the peer's entries are placeholders
    # (RayFed runs an actor's call only at the actor's own party).
    inputs = {p: prepared["input_path"] if p == party else "" for p in parties}
    outputs = {p: prepared["output_path"] if p == party else "" for p in parties}
    import secretflow.distributed as sfd

    # The same calls as SPU.psi / the psi kernel, except that each party waits only for its
    # own actor's report: a failure of our own SPU actor surfaces at once instead of hiding
    # behind a wait for the peer's report (which we do not need).
    if prepared["protocol"] == "PROTOCOL_ECDH":
        # PSI v2's ECDH (spu 0.9.3b0) spawns its link contexts in a racy order and then hangs
        # until the receive timeout in about 1 run of 4 (see docs/node.md); the legacy bucket
        # PSI runs the same ECDH core without that race.
        refs = {
            p: actor.psi_csv.remote(
                prepared["keys"][p],
                inputs[p],
                outputs[p],
                prepared["receiver"],
                "ECDH_PSI_2PC",
                False,  # precheck_input (keys are declared unique, as for v2)
                prepared["sort"],
                prepared["broadcast_result"],
                1 << 20,  # bucket_size
                "CURVE_FOURQ",
            )
            for p, actor in spu.actors.items()
        }
    else:
        refs = {
            p: actor.psi.remote(
                prepared["keys"][p],
                inputs[p],
                outputs[p],
                prepared["receiver"],
                prepared["table_keys_duplicated"],
                "NULL",  # output_csv_na_rep
                prepared["broadcast_result"],
                prepared["protocol"],
                "CURVE_FOURQ",  # ecdh_curve
                "ADVANCED_JOIN_TYPE_INNER_JOIN",
                "ROLE_RECEIVER",  # left_side
                True,  # skip_duplicates_check
                not prepared["sort"],  # disable_alignment
                False,  # check_hash_digest
            )
            for p, actor in spu.actors.items()
        }
    own = sfd.get(refs[party])
    writes_output = party == prepared["receiver"] or prepared["broadcast_result"]
    count = int(own["intersection_count"])
    return {
        # the sender learns no count unless the result is broadcast (SPU reports -1)
        "intersection_count": count if count >= 0 else None,
        "original_count": int(own["original_count"]),
        "output_path": prepared["output_name"] if writes_output else None,
        "protocol": prepared["protocol"],
        "receiver": prepared["receiver"],
        "parties": list(parties),
    }


register(JobType(name="psi", prepare=prepare, run=run, needs_spu=True))

"""The SPU runtime actor of this node's PSI jobs: SecretFlow's `SPURuntime` for PSI, without
importing SecretFlow or jax in the actor's Ray worker.

SecretFlow's SPU device (`sf.SPU`, created by the job's driver) starts one runtime actor per
party and calls its methods over RayFed. Its own `SPURuntime` lives in a module that imports all
of SecretFlow (and with it jax, pandas, …): a worker holding it starts at ≈460 MB before it has
read a row. A PSI needs none of that — only the brpc link and the PSI library (`spu.libspu`,
`spu.libpsi`) — so the driver's SPU device creates this class instead (`install()`), a worker
of ≈135 MB. The constructor takes SecretFlow's arguments and builds the link exactly as
SecretFlow does (same link options, the same mTLS options on this party's node); `psi` and
`psi_csv` are SecretFlow's calls into the library.

`checked` is how every job calls its runtime, in a warm session or cold: before the PSI the
runtimes swap the job's execution id over the SPU link (`all_gather`, which also settles the
link before a bucket PSI connects its mesh again); if the ids differ the parties are not running the
same job and the PSI is refused on both sides — a wrong pairing fails at once instead of
intersecting one job's table with another's. A party that refused the job before any work swaps
a refusal note instead (`refusal_note`, method `REFUSED`): the others end the job with
`PeerRefused` naming it, and every runtime stays in step for the session's next job.

`spu/__init__.py` imports jax; the job's workers (node.sfjob.rayworker) hold the package without
running it, so `spu.libspu…` loads only the compiled libraries and protobuf modules. In the
driver, where SecretFlow already imported `spu`, the package is used as it is. Ray imports this
module in the worker by name (`node.sfjob.spu_runtime`): it must import nothing heavy at top level.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from node import heap

# SecretFlow's names (secretflow/device/device/spu.py _LINK_DESC_NAMES)
LINK_DESC_NAMES = (
    "connect_retry_times",
    "connect_retry_interval_ms",
    "recv_timeout_ms",
    "http_max_payload_size",
    "http_timeout_ms",
    "throttle_window_size",
    "brpc_channel_protocol",
    "brpc_channel_connection_type",
)
DEFAULT_TIMEOUT_MS = 120 * 1000  # SecretFlow's default for recv_timeout_ms and http_timeout_ms
SESSION_METHODS = ("psi", "psi_csv", "ub_psi", "ping")
UB_MODES = ("MODE_OFFLINE", "MODE_ONLINE")  # offline: the cache; online: a query
UB_ROLES = ("ROLE_SERVER", "ROLE_CLIENT")
# RR22 works on the keys in buckets of this many; SPU's default (2^20) holds a 1M-row table in
# one. bench/floor_psi.py, 2 cores, peak RSS of the receiver / wall: 1M rows 545 MB → 350 MB,
# 10M rows 948 → 455 MB, the same time (4.0–4.4 s, 19.5–21.6 s); 2^16 is worse at 10M (1.2 GB).
# Both parties must use the same size: SPU refuses a PSI between different ones.
RR22_BUCKET_SIZE = 1 << 17


class SessionMismatch(RuntimeError):
    """The peer's runtime is running another job of the session."""


class PeerRefused(RuntimeError):
    """A peer refused its part of this job before any work (its own cause, in its words): the
    PSI did not start anywhere, and the session stays in step."""


REFUSED = "refused"  # `checked`'s method for a party that refused the job: it only answers
REFUSAL_MAX = 600  # characters of a peer's refusal kept (what crosses the link is a peer's)


def refusal_note(execution_id: str, message: str) -> str:
    """What a refusing party sends in place of the attempt id (`checked(note, REFUSED)`): its
    refusal as it reports it ("party bob refused the task: …")."""
    return f"{REFUSED} {execution_id} {message}"[:REFUSAL_MAX]


def _refusals(execution_id: str, attempts: list[str]) -> list[str]:
    """The refusals of this attempt among the attempt ids the parties sent (bounded, one
    line each)."""
    prefix = f"{REFUSED} {execution_id} "
    return [
        " ".join(a[len(prefix) : REFUSAL_MAX].split()) for a in attempts if a.startswith(prefix)
    ]


def _fill_ssl(opts: dict[str, Any], target: Any) -> None:
    for name, value in opts.items():
        if hasattr(target.cert, name):
            setattr(target.cert, name, value)
        if hasattr(target.verify, name):
            setattr(target.verify, name, value)


def link_desc(
    cluster_def: dict[str, Any], rank: int, link_options: dict[str, Any] | None
) -> tuple[Any, str]:
    """The brpc link description of `rank`'s party and that party's name (as SecretFlow)."""
    from spu.libspu import link as spu_link

    desc = spu_link.Desc()
    party = ""
    tls_opts = None
    for i, node in enumerate(cluster_def["nodes"]):
        address = node["address"]
        if i == rank:
            party = node["party"]
            tls_opts = node.get("tls_opts")
            address = node.get("listen_address") or address
        desc.add_party(node["party"], address)
    for name, value in (link_options or {}).items():
        if name not in LINK_DESC_NAMES:
            raise ValueError(
                f"unsupported link option {name!r} (known: {', '.join(LINK_DESC_NAMES)})"
            )
        setattr(desc, name, value)
    for name in ("recv_timeout_ms", "http_timeout_ms"):
        if name not in (link_options or {}):
            setattr(desc, name, DEFAULT_TIMEOUT_MS)
    if tls_opts:
        _fill_ssl(tls_opts.get("server_ssl_opts") or {}, desc.server_ssl_opts)
        _fill_ssl(tls_opts.get("client_ssl_opts") or {}, desc.client_ssl_opts)
        desc.enable_ssl = True
    return desc, party


class PartylineSPURuntime:
    """One party's SPU runtime for PSI (constructed by SecretFlow's `SPU.init`)."""

    def __init__(
        self,
        rank: int,
        cluster_def: dict[str, Any],
        link_desc_options: dict[str, Any] | None = None,
        log_options: Any = None,
        id: str | None = None,  # SecretFlow's argument name
    ) -> None:
        from spu.libspu import link as spu_link
        from spu.libspu import logging as spu_logging

        spu_logging.setup_logging(log_options or spu_logging.LogOptions())
        self.rank = rank
        self.cluster_def = cluster_def
        self.id = id
        desc, self.party = link_desc(cluster_def, rank, link_desc_options)
        self.link = spu_link.create_brpc(desc, rank)

    def __repr__(self) -> str:
        party, device = getattr(self, "party", "?"), getattr(self, "id", "?")
        return f"PartylineSPURuntime(device_id={device}, party={party})"

    def checked(self, execution_id: str, method: str, **kwargs: Any) -> Any:
        """Run `self.<method>(**kwargs)` once every party's runtime was called for the same
        attempt (every job's call, cold or warm)."""
        if method == REFUSED:  # this party refused: the others learn it from the swap
            self.link.all_gather(execution_id)
            return {"party": self.party, "refused": True}
        if method not in SESSION_METHODS:
            raise ValueError(f"method {method!r} is not a call of a job (SESSION_METHODS)")
        attempts = [str(t) for t in self.link.all_gather(execution_id)]
        refused = _refusals(execution_id, attempts)
        if refused:
            raise PeerRefused("; ".join(refused))
        if any(a != execution_id for a in attempts):
            others = sorted({a for a in attempts if a != execution_id})
            raise SessionMismatch(
                f"the parties of this session are not running the same job: {self.party} runs "
                f"{execution_id}, the peer runs {', '.join(others)}"
            )
        return getattr(self, method)(**kwargs)

    def psi(
        self,
        keys: list[str],
        input_path: str,
        output_path: str,
        receiver: str,
        table_keys_duplicated: bool,
        output_csv_na_rep: str,
        broadcast_result: bool = True,
        protocol: str = "PROTOCOL_KKRT",
        ecdh_curve: str = "CURVE_FOURQ",
        advanced_join_type: str = "ADVANCED_JOIN_TYPE_UNSPECIFIED",
        left_side: str = "ROLE_RECEIVER",
        skip_duplicates_check: bool = False,
        disable_alignment: bool = False,
        check_hash_digest: bool = False,
    ) -> dict[str, Any]:
        """PSI v2 (SecretFlow's SPURuntime.psi; RR22 in buckets of RR22_BUCKET_SIZE keys)."""
        from spu import psi as spu_psi
        from spu import psi_pb2, psi_v2_pb2

        role = psi_v2_pb2.ROLE_RECEIVER if receiver == self.party else psi_v2_pb2.ROLE_SENDER
        config = psi_v2_pb2.PsiConfig(
            protocol_config=psi_v2_pb2.ProtocolConfig(
                protocol=psi_v2_pb2.Protocol.Value(protocol),
                role=role,
                broadcast_result=broadcast_result,
            ),
            input_config=psi_v2_pb2.IoConfig(type=psi_v2_pb2.IO_TYPE_FILE_CSV, path=input_path),
            output_config=psi_v2_pb2.IoConfig(type=psi_v2_pb2.IO_TYPE_FILE_CSV, path=output_path),
            input_attr=psi_v2_pb2.InputAttr(keys_unique=not table_keys_duplicated),
            output_attr=psi_v2_pb2.OutputAttr(csv_null_rep=output_csv_na_rep),
            keys=keys,
            advanced_join_type=psi_v2_pb2.PsiConfig.AdvancedJoinType.Value(advanced_join_type),
            left_side=psi_v2_pb2.Role.Value(left_side),
            skip_duplicates_check=skip_duplicates_check,
            disable_alignment=disable_alignment,
            check_hash_digest=check_hash_digest,
            # SPU writes a perfetto trace of every PSI, to /tmp/psi_<random>.trace unless told
            # where: next to the output, in the job's work folder, removed with it
            debug_options=psi_v2_pb2.DebugOptions(
                trace_path=os.path.join(os.path.dirname(output_path), "psi.trace")
            ),
        )
        if protocol == "PROTOCOL_ECDH":
            config.protocol_config.ecdh_config.curve = psi_pb2.CurveType.Value(ecdh_curve)
        if protocol == "PROTOCOL_RR22":
            config.protocol_config.rr22_config.bucket_size = RR22_BUCKET_SIZE
        return self._report(lambda: spu_psi.psi(config, self.link))

    def psi_csv(
        self,
        key: str | list[str],
        input_path: str,
        output_path: str,
        receiver: str,
        protocol: str = "KKRT_PSI_2PC",
        precheck_input: bool = True,
        sort: bool = True,
        broadcast_result: bool = True,
        bucket_size: int = 1 << 20,
        curve_type: str = "CURVE_25519",
    ) -> dict[str, Any]:
        """The legacy bucket PSI (SecretFlow's SPURuntime.psi_csv, without its callbacks and
        the unbalanced/DP variants, which this node does not run)."""
        from spu import psi as spu_psi

        ranks = [i for i, n in enumerate(self.cluster_def["nodes"]) if n["party"] == receiver]
        if not ranks:
            raise ValueError(f"invalid receiver {receiver!r}: not a party of the SPU device")
        config = spu_psi.BucketPsiConfig(
            psi_type=spu_psi.PsiType.Value(protocol),
            broadcast_result=broadcast_result,
            receiver_rank=ranks[0],
            input_params=spu_psi.InputParams(
                path=input_path,
                select_fields=[key] if isinstance(key, str) else key,
                precheck=precheck_input,
            ),
            output_params=spu_psi.OutputParams(path=output_path, need_sort=sort),
            curve_type=curve_type,
            bucket_size=bucket_size,
        )
        return self._report(lambda: spu_psi.bucket_psi(self.link, config))

    def ub_psi(
        self,
        mode: str,
        role: str,
        cache_path: str,
        input_path: str = "",
        keys: list[str] | None = None,
        output_path: str = "",
        client_get_result: bool = True,
    ) -> dict[str, Any]:
        """Unbalanced PSI v2 (SecretFlow's SPURuntime.ub_psi, as node.jobtypes.ub_psi* use it):
        MODE_OFFLINE makes the cache (the server's half from its input, the client's from what
        the server sends), MODE_ONLINE answers the client's input against it. What SPU writes
        is the node user's only (umask 077 for the call; the job seals it afterwards)."""
        import os

        from spu import psi as spu_psi
        from spu import psi_v2_pb2 as v2

        if mode not in UB_MODES or role not in UB_ROLES:
            raise ValueError(f"unbalanced PSI: mode {mode!r} / role {role!r} not run here")
        config = v2.UbPsiConfig(
            mode=v2.UbPsiConfig.Mode.Value(mode),
            role=v2.Role.Value(role),
            cache_path=cache_path,
            keys=list(keys or []),
            server_get_result=False,  # the server learns no intersection
            client_get_result=client_get_result,
        )
        if input_path:
            config.input_config.CopyFrom(v2.IoConfig(type=v2.IO_TYPE_FILE_CSV, path=input_path))
        if output_path:
            config.output_config.CopyFrom(v2.IoConfig(type=v2.IO_TYPE_FILE_CSV, path=output_path))
        umask = os.umask(0o077)
        try:
            return self._report(lambda: spu_psi.ub_psi(config, self.link))
        finally:
            os.umask(umask)

    def ping(self) -> dict[str, Any]:
        """A warm-up's answer (node.jobtypes.warmup): the exchange in `checked` was the work."""
        return {"party": self.party, "parties": len(self.cluster_def["nodes"])}

    def _report(self, run: Callable[[], Any]) -> dict[str, Any]:
        """Run one PSI call; its counts as SecretFlow's runtime reports them."""
        try:
            report = run()
        finally:
            heap.release()  # a warm runtime would keep this PSI's peak
        return {
            "party": self.party,
            "original_count": report.original_count,
            "intersection_count": report.intersection_count,
        }


def install() -> None:
    """Make `sf.SPU` create this runtime (call in the driver before creating the device)."""
    import secretflow.device.device.spu as sf_spu

    sf_spu.SPURuntime = PartylineSPURuntime  # read by SPU.init at call time

"""One party of the PSI *floor*: the PSI library called directly, nothing else.

No Celery, no Ray, no SecretFlow device layer: this process builds a brpc link with
`spu.libspu.link` exactly as SecretFlow's `SPURuntime.__init__` does (same link_desc fields, same
mTLS options, verify depth 1), then calls `spu.psi.psi(config, link)` with the `PsiConfig` that
`SPURuntime.psi` builds for the node's PSI job. Two of these (rank 0 and rank 1) are started by
bench/psi_node.py; each writes its timings and peak RSS as JSON to --report.

    python -m bench.floor_psi --rank 0 --parties alice,bob \\
        --addresses 127.0.0.1:31000,127.0.0.1:31001 --certs DIR \\
        --input alice.csv --output out.csv --key uid --protocol RR22 --receiver alice \\
        --report rank0.json
"""

from __future__ import annotations

import time

T_MAIN = time.perf_counter()  # first thing: interpreter start-up is measured by the parent

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from node.sfjob.spu_runtime import RR22_BUCKET_SIZE  # noqa: E402  (stdlib only: the node's setting)

# What the node's job sends: connect_retry_* from task_params.spu_config.link_desc; SecretFlow's
# _fill_link_desc_attrs adds recv_timeout_ms and http_timeout_ms = 120 s when absent.
LINK_DESC = {
    "connect_retry_times": 60,
    "connect_retry_interval_ms": 1000,
    "recv_timeout_ms": 120 * 1000,
    "http_timeout_ms": 120 * 1000,
}

# Protocol spellings the node accepts (node.contract.normalize_psi_protocol), kept import-free.
PROTOCOLS = {
    "RR22": "PROTOCOL_RR22",
    "ECDH": "PROTOCOL_ECDH",
    "KKRT": "PROTOCOL_KKRT",
    "ECDH_3PC": "ECDH_PSI_3PC",
    "ECDH_NPC": "ECDH_PSI_NPC",
    "KKRT_NPC": "KKRT_PSI_NPC",
}
# as node/jobtypes/psi.py BUCKET_PSI_TYPES: these run through the legacy bucket PSI
BUCKET_TYPES = {
    "PROTOCOL_ECDH": "ECDH_PSI_2PC",
    **{t: t for t in ("ECDH_PSI_3PC", "ECDH_PSI_NPC", "KKRT_PSI_NPC")},
}


def tls_opts(certs: Path, party: str) -> dict[str, dict]:
    """The node's NodeSettings.spu_tls_opts(): same key+cert as server and client, depth 1."""
    side = {
        "certificate_path": str(certs / f"{party}.crt"),
        "private_key_path": str(certs / f"{party}.key"),
        "ca_file_path": str(certs / "ca.crt"),
        "verify_depth": 1,
    }
    return {"server_ssl_opts": dict(side), "client_ssl_opts": dict(side)}


def _fill_ssl(opts: dict, ssl_opts) -> None:
    # secretflow.device.device.spu._fill_link_ssl_opts
    for name, value in opts.items():
        if hasattr(ssl_opts.cert, name):
            setattr(ssl_opts.cert, name, value)
        if hasattr(ssl_opts.verify, name):
            setattr(ssl_opts.verify, name, value)


def create_link(parties: list[str], addresses: list[str], rank: int, certs: Path | None):
    """SPURuntime.__init__: Desc + add_party + _fill_link_desc_attrs + create_brpc.
    certs=None: no TLS (diagnosis only; the node always uses mTLS)."""
    import spu.libspu.link as spu_link

    desc = spu_link.Desc()
    for party, address in zip(parties, addresses, strict=True):
        desc.add_party(party, address)
    for name, value in LINK_DESC.items():
        setattr(desc, name, value)
    if certs is not None:
        opts = tls_opts(certs, parties[rank])
        _fill_ssl(opts["server_ssl_opts"], desc.server_ssl_opts)
        _fill_ssl(opts["client_ssl_opts"], desc.client_ssl_opts)
        desc.enable_ssl = True
    return spu_link.create_brpc(desc, rank)


def psi_config(
    *, party: str, receiver: str, protocol: str, key: str, input_path: str, output_path: str
):
    """SPURuntime.psi's PsiConfig with the arguments the node's PSI job ends up passing.

    node/jobtypes/psi.py → SPU.psi(…) defaults → kernels.spu.psi → SPURuntime.psi:
    output_csv_na_rep "NULL", broadcast_result False, ecdh_curve CURVE_FOURQ,
    advanced_join_type INNER_JOIN (SPU.psi's default), left_side ROLE_RECEIVER,
    skip_duplicates_check True (SPU.psi hard-codes it), disable_alignment False (sort=True),
    check_hash_digest False, keys_unique True (table_keys_duplicated False).
    """
    import spu

    pb = spu.psi_v2_pb2
    config = pb.PsiConfig(
        protocol_config=pb.ProtocolConfig(
            protocol=pb.Protocol.Value(protocol),
            role=pb.ROLE_RECEIVER if receiver == party else pb.ROLE_SENDER,
            broadcast_result=False,
        ),
        input_config=pb.IoConfig(type=pb.IO_TYPE_FILE_CSV, path=input_path),
        output_config=pb.IoConfig(type=pb.IO_TYPE_FILE_CSV, path=output_path),
        input_attr=pb.InputAttr(keys_unique=True),
        output_attr=pb.OutputAttr(csv_null_rep="NULL"),
        keys=[key],
        advanced_join_type=pb.PsiConfig.AdvancedJoinType.Value("ADVANCED_JOIN_TYPE_INNER_JOIN"),
        left_side=pb.Role.Value("ROLE_RECEIVER"),
        skip_duplicates_check=True,
        disable_alignment=False,
        check_hash_digest=False,
    )
    if protocol == "PROTOCOL_ECDH":
        config.protocol_config.ecdh_config.curve = spu.psi_pb2.CurveType.Value("CURVE_FOURQ")
    return config


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.floor_psi",
        description="One party of a bare two-process PSI (brpc link with mTLS + spu.psi.psi).",
    )
    ap.add_argument("--rank", type=int, required=True, help="this party's index in --parties")
    ap.add_argument("--parties", default="alice,bob", help="comma-separated party names")
    ap.add_argument("--addresses", required=True, help="host:port per party, same order")
    ap.add_argument("--certs", type=Path, required=True, help="dir with ca.crt, <party>.crt/.key")
    ap.add_argument("--input", required=True, help="this party's CSV")
    ap.add_argument("--output", required=True, help="this party's output CSV (receiver writes)")
    ap.add_argument("--key", default="uid", help="key column")
    ap.add_argument(
        "--protocol",
        default="RR22",
        help="RR22 | ECDH | KKRT (two parties), ECDH_3PC | ECDH_NPC | KKRT_NPC (three or more)",
    )
    ap.add_argument("--receiver", default="alice")
    ap.add_argument("--report", type=Path, required=True, help="write the JSON report here")
    ap.add_argument(
        "--keys-duplicated",
        action="store_true",
        help="keys_unique false, as the node passes (diagnosis: what that costs the library)",
    )
    ap.add_argument(
        "--no-tls", action="store_true", help="plain brpc link (diagnosis only; ignores --certs)"
    )
    ap.add_argument(
        "--rr22-bucket-size",
        type=int,
        default=RR22_BUCKET_SIZE,
        help=f"keys per RR22 bucket, as the node (default {RR22_BUCKET_SIZE}; 0: SPU's own)",
    )
    args = ap.parse_args(argv)

    parties = args.parties.split(",")
    addresses = args.addresses.split(",")
    party = parties[args.rank]
    protocol = PROTOCOLS.get(args.protocol.upper().removeprefix("PROTOCOL_"), args.protocol)

    t0 = time.perf_counter()
    import spu
    import spu.libspu.link
    import spu.psi

    t1 = time.perf_counter()
    link = create_link(parties, addresses, args.rank, None if args.no_tls else args.certs)
    # as the node's session runtime (`checked`) before each PSI: every party has its link up.
    # Without it, a bucket PSI of 3+ parties that starts the moment its link is made hangs in
    # most runs (its own second ConnectToMesh waits for a peer's test message; spu 0.9.3b0).
    link.all_gather("floor")
    t2 = time.perf_counter()
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    if protocol in BUCKET_TYPES:
        # as node/jobtypes/psi.py: ECDH through the legacy bucket PSI (PSI v2's ECDH hangs ~1 in
        # 4), and every type of three or more parties
        legacy = spu.psi.BucketPsiConfig(
            psi_type=spu.psi.PsiType.Value(BUCKET_TYPES[protocol]),
            broadcast_result=False,
            receiver_rank=parties.index(args.receiver),
            input_params=spu.psi.InputParams(
                path=str(args.input), select_fields=[args.key], precheck=False
            ),
            output_params=spu.psi.OutputParams(path=str(args.output), need_sort=True),
            curve_type="CURVE_FOURQ",
            bucket_size=1 << 20,
        )
        report = spu.psi.bucket_psi(link, legacy)
    else:
        config = psi_config(
            party=party,
            receiver=args.receiver,
            protocol=protocol,
            key=args.key,
            input_path=str(args.input),
            output_path=str(args.output),
        )
        config.input_attr.keys_unique = not args.keys_duplicated
        if protocol == "PROTOCOL_RR22" and args.rr22_bucket_size:
            config.protocol_config.rr22_config.bucket_size = args.rr22_bucket_size
        report = spu.psi.psi(config, link)
    t3 = time.perf_counter()
    out = {
        "party": party,
        "rank": args.rank,
        "protocol": protocol,
        "tls": not args.no_tls,
        "original_count": int(report.original_count),
        "intersection_count": int(report.intersection_count),
        "pre_main_s": None,  # filled by the parent (its wall minus total_s)
        "import_s": round(t1 - t0, 3),
        "link_s": round(t2 - t1, 3),
        "psi_s": round(t3 - t2, 3),
    }
    # written before stop_link, which waits for every peer's FIN: a peer that died after the
    # PSI would hold this process there (seen once with five parties)
    args.report.write_text(json.dumps(out))
    link.stop_link()
    t4 = time.perf_counter()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out |= {
        "stop_link_s": round(t4 - t3, 3),
        "main_s": round(t4 - T_MAIN, 3),
        "maxrss_mb": round(usage.ru_maxrss / 1024, 1),  # Linux: kilobytes
        # user + system, all threads: what bench/psi_cpu.py measures for the stack's processes
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "pid": os.getpid(),
    }
    args.report.write_text(json.dumps(out))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # brpc threads: skip interpreter teardown (the node's executor does the same)


if __name__ == "__main__":
    sys.exit(main())

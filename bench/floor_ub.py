"""One party of the *bare* unbalanced PSI: SPU's `UbPsiConfig` called directly over a brpc
link with mTLS (bench.floor_psi.create_link, as SecretFlow's SPURuntime builds it) — no
Celery, no Ray, no SecretFlow device layer, no table check. Two of these (rank 0 = server,
rank 1 = client) are started by bench/ub_psi.py; `--mode offline` makes the cache from the
server's CSV, `--mode online` answers the client's CSV against it (`--repeat` times, one link).
Each writes its timings and peak RSS as JSON to --report.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

from bench import floor_psi
from coordinator.jobkinds.ub_psi_cache import CACHE_RECV_TIMEOUT_MS


def ub_config(mode: str, rank: int, args: argparse.Namespace, output: str):
    from spu import psi_v2_pb2 as v2

    config = v2.UbPsiConfig(
        mode=v2.UbPsiConfig.Mode.Value(f"MODE_{mode.upper()}"),
        role=v2.ROLE_SERVER if rank == 0 else v2.ROLE_CLIENT,
        cache_path=str(args.cache),
        keys=[args.key],
        server_get_result=False,
        client_get_result=True,
    )
    if args.input and (rank == 0) == (mode == "offline"):
        config.input_config.CopyFrom(v2.IoConfig(type=v2.IO_TYPE_FILE_CSV, path=str(args.input)))
    if rank == 1 and mode == "online":
        config.output_config.CopyFrom(v2.IoConfig(type=v2.IO_TYPE_FILE_CSV, path=output))
    return config


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.floor_ub", description=__doc__)
    ap.add_argument("--rank", type=int, required=True, help="0: the server, 1: the client")
    ap.add_argument("--mode", choices=("offline", "online"), required=True)
    ap.add_argument("--parties", default="alice,bob")
    ap.add_argument("--addresses", required=True, help="host:port per party, same order")
    ap.add_argument("--certs", type=Path, required=True)
    ap.add_argument("--cache", type=Path, required=True, help="this party's cache folder")
    ap.add_argument("--input", type=Path, help="server: its CSV (offline); client: its (online)")
    ap.add_argument("--output", type=Path, help="client, online: the answer")
    ap.add_argument("--key", default="uid")
    ap.add_argument("--repeat", type=int, default=1, help="online queries on the one link")
    ap.add_argument("--report", type=Path, required=True)
    args = ap.parse_args(argv)

    from spu import psi as spu_psi

    if args.mode == "offline":  # as the node's cache job: the client waits for the server's OPRF
        floor_psi.LINK_DESC["recv_timeout_ms"] = CACHE_RECV_TIMEOUT_MS
    link = floor_psi.create_link(
        args.parties.split(","), args.addresses.split(","), args.rank, args.certs
    )
    # as the node's runtimes (`checked`) before every call: UbPsi's Init connects the mesh
    # again, and started the moment the link is up it hung here once in four runs (the server
    # in its mesh test, the client waiting for the cache)
    link.all_gather("floor")
    times, count = [], -1
    for i in range(args.repeat if args.mode == "online" else 1):
        output = f"{args.output}.{i}" if args.output else ""
        t = time.perf_counter()
        report = spu_psi.ub_psi(ub_config(args.mode, args.rank, args, output), link)
        times.append(round(time.perf_counter() - t, 3))
        count = int(report.intersection_count)
    link.stop_link()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    args.report.write_text(
        json.dumps(
            {
                "rank": args.rank,
                "mode": args.mode,
                "call_s": times,
                "intersection_count": count,
                "maxrss_mb": round(usage.ru_maxrss / 1024, 1),
            }
        )
    )
    sys.stdout.flush()
    os._exit(0)  # brpc threads: skip interpreter teardown


if __name__ == "__main__":
    sys.exit(main())

"""`make demo`: a whole federation on this machine, one PSI through the coordinator.

Creates a CA, certificates and the CA's revocation list (every node checks it: NODE_CRL_FILE),
starts every party's node stack natively (redis-server with TLS and passwords, Ray head, Celery
worker; own ports, data root with a sample CSV), starts the coordinator on SQLite, runs one
cross-party PSI through the coordinator's API, prints a summary and keeps everything running
until Ctrl-C (or exits at once with --once). Every process's output goes to a log that is moved
to `<log>.1` at 10 MB (deploy/local/logs.py), so a demo left running does not fill the disk.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

from rich.console import Console

from coordinator.topology import TopologyError
from deploy.local.coordinator_proc import REPO_ROOT, CoordinatorProcess
from deploy.local.federation import LocalFederation
from deploy.local.ports import PortAllocator
from deploy.local.topology import (
    apply_topology,
    coordinator_passwords,
    registry_ports,
    write_topology,
)
from deploy.psi_demo import (
    psi_body,
    run_psi,
    sample_csv,
    sample_ids,
    summary_table,
    wait_warm,
)

console = Console()
CRL_CHECK_S = 3600.0  # how often a running demo sees whether the revocation list is due


def write_sample(path: Path, key: str, ids: list[int], seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(sample_csv(key, ids, seed))


def make_federation(
    base: Path, parties: list[str], *, own_registry: bool = False, log=print
) -> LocalFederation:
    """The demo's parties. The demo federation's registry (examples/topology.yaml) gives the
    ports of the parties it names, as in the compose simulation; with a registry of the user's
    own (--topology) that one gives them instead (apply_topology)."""
    fixed = {} if own_registry else registry_ports()
    return LocalFederation(
        base, parties, log=log, fixed_ports={p: fixed[p] for p in parties if p in fixed}
    )


def prepare(
    base: Path, parties: list[str], topology: Path | None, say=print
) -> tuple[LocalFederation, Path]:
    """The federation's files, before any process starts: the party registry (written unless
    `topology` is given), the coordinator's Redis passwords, the CA with every certificate and
    its revocation list (each node's NODE_CRL_FILE). Returns the federation and its registry;
    TopologyError, ValueError or OSError for a registry that does not fit."""
    fed = make_federation(base / "parties", parties, own_registry=topology is not None, log=say)
    topology_path = topology or base / "topology.yaml"
    if topology is None:
        write_topology(fed, topology_path, federation="demo")
    secrets_env = base / "secrets.env"
    secrets_env.write_text("".join(f"{k}={v}\n" for k, v in coordinator_passwords(fed).items()))
    secrets_env.chmod(0o600)
    fed.base.mkdir(parents=True, exist_ok=True)
    fed.create_certs()
    say(
        f"CA, certificates for {', '.join(parties)} and the coordinator, and the CA's "
        f"revocation list in {fed.certs_dir}"
    )
    topo = apply_topology(fed, topology_path)
    say(f"party registry: {topology_path} ({', '.join(topo.names)})")
    return fed, topology_path


def run(args) -> int:
    parties = [p.strip() for p in args.parties.split(",") if p.strip()]
    if len(parties) < 2:
        console.print("[red]--parties needs at least two names, e.g. alice,bob[/]")
        return 2
    base = Path(args.base).resolve()
    if base.exists():
        shutil.rmtree(base)
    base.mkdir(parents=True)
    t_start = time.monotonic()
    say = lambda m: console.print(f"[dim]{time.monotonic() - t_start:6.1f}s[/] {m}")  # noqa: E731
    try:
        fed, topology_path = prepare(
            base, parties, Path(args.topology) if args.topology else None, say
        )
    except (TopologyError, ValueError, OSError) as exc:
        console.print(f"[red]{exc}[/]")
        return 2

    coordinator = None
    stop = threading.Event()
    try:
        with console.status("writing sample data") as status:
            ids = sample_ids(parties, args.rows)
            for p in parties:
                node = fed.nodes[p]
                node.data_root.mkdir(parents=True, exist_ok=True)
                node.state_dir.mkdir(parents=True, exist_ok=True)
                write_sample(node.data_root / "customers.csv", "uid", ids[p], seed=hash(p) % 1000)
            say(f"sample data: {args.rows:,} rows per party in <party>/data/customers.csv")
            for node in fed.nodes.values():
                status.update(f"waiting for {node.name}'s Redis on port {node.ports['redis']}")
                fed.start_redis(node)
            say("Redis up for every party (TLS, password, AOF)")
            for node in fed.nodes.values():
                status.update(f"waiting for {node.name}'s Ray head on {node.ray_address}")
                fed.start_ray(node)
            say("Ray heads up")
            for node in fed.nodes.values():
                fed.start_worker(node)
                fed.start_probe(node)  # the parties page's "links to peers"
            status.update("waiting for every party's Celery workers to answer")
            fed.wait_workers()
            say("workers answering")
            status.update("starting the coordinator (SQLite)")
            coordinator = CoordinatorProcess(
                base / "coordinator",
                topology_file=topology_path,
                certs_dir=fed.certs_dir,
                port=args.port or PortAllocator().one(),
                # the pair of the demo's PSI: its session starts once the parties are ready
                env={**coordinator_passwords(fed), "COORD_PREWARM": f"{parties[0]}+{parties[1]}"},
            ).start()
            coordinator.wait_ready()
            say(f"coordinator up at {coordinator.url}")

        a, b = parties[0], parties[1]
        with coordinator.client() as http:
            why = wait_warm(http, [a, b], console, say)
            if why:  # the PSI then starts SecretFlow itself: slower, still right
                console.print(f"[yellow]{why}[/]")
            try:
                d, elapsed = run_psi(http, psi_body(a, b, args.protocol), console, say)
            except RuntimeError as exc:
                console.print(f"[red]{exc}[/]")
                return 1
        if d["status"] != "SUCCEEDED":
            console.print(f"[red]PSI {d['status']}: {d['error']}[/]")
            console.print(f"logs: {fed.base}/<party>/worker.log, {coordinator.log_file}")
            return 1
        result = d["result"] or {}
        truth = len(set(ids[a]) & set(ids[b]))
        out_file = fed.nodes[a].data_root / "out" / "demo-intersection.csv"
        table = summary_table(
            "Partyline demo",
            [
                ("PSI", f"{a} × {b} ({args.rows:,} rows each, {args.protocol}, mTLS)"),
                ("intersection", f"{result.get('intersection_count'):,} rows (expected {truth:,})"),
                ("time", f"{elapsed:.1f} s from submit to SUCCEEDED"),
                ("output", f"{out_file} (at {a} only)"),
                ("UI", f"{coordinator.url}/  — log in with the token below"),
                ("API", f"{coordinator.url}/docs  — Authorization: Bearer <token>"),
                ("token", coordinator.token),
                ("registry", str(topology_path)),
                (
                    "logs",
                    f"{fed.base}/<party>/worker.log, redis.log, {coordinator.log_file} "
                    "(each moved to .1 at 10 MB)",
                ),
            ],
        )
        console.print(table)
        if result.get("intersection_count") != truth:
            console.print("[red]the intersection count is wrong[/]")
            return 1
        if args.once:
            return 0
        # the handlers go in before the line that invites Ctrl-C: a SIGINT that arrives right
        # after it must end the wait, not the interpreter (exit code -2, nothing stopped)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        console.print(
            "The federation keeps running. [bold]Ctrl-C[/] stops every process it started."
        )
        keep_running(fed, stop, say)
        return 0
    finally:
        with console.status("stopping every process the demo started"):
            if coordinator is not None:
                coordinator.stop()
            fed.stop()
        console.print("stopped.")


def keep_running(fed: LocalFederation, stop: threading.Event, say) -> None:
    """Until `stop` is set; the CA's revocation list is renewed when due (checked hourly)."""
    renew_at = time.monotonic() + CRL_CHECK_S
    while not stop.wait(1.0):
        if time.monotonic() >= renew_at:
            renew_at += CRL_CHECK_S
            if fed.renew_crl():
                say(f"renewed the CA's revocation list {fed.certs_dir / 'crl.pem'}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m deploy.local demo",
        description="Start a local federation (one node stack per party) and a coordinator, "
        "run one PSI through the coordinator's API and keep everything up until Ctrl-C.",
    )
    p.add_argument(
        "--parties",
        default="alice,bob",
        help="comma-separated (default alice,bob); the PSI runs between the first two",
    )
    p.add_argument("--rows", type=int, default=10_000, help="rows per party (default 10000)")
    p.add_argument("--protocol", default="RR22", help="RR22 (default), ECDH or KKRT")
    p.add_argument("--once", action="store_true", help="stop everything after the PSI")
    p.add_argument(
        "--base",
        default=str(REPO_ROOT / "var" / "demo"),
        help="working directory (wiped first; default var/demo)",
    )
    p.add_argument("--port", type=int, default=8000, help="coordinator port (0 = any free one)")
    p.add_argument(
        "--topology",
        help="use this party registry instead of writing one; its "
        "passwords are read from PARTYLINE_<PARTY>_REDIS_PASSWORD",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

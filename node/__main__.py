"""python -m node — run and inspect one party's node stack. Configuration comes from NODE_*
environment variables (node/settings.py, docs/node.md). Nothing here imports secretflow."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from node.dataroot.cli import add_parser as add_caches_parser
from node.sessions.cli import add_parser as add_sessions_parser

console = Console(stderr=True)
out = Console()


def _settings():
    from pydantic import ValidationError

    from node.settings import NodeSettings

    try:
        return NodeSettings()
    except ValidationError as exc:
        console.print("[red]node settings are invalid[/] (NODE_* environment variables):")
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"])
            console.print(f"  NODE_{field.upper()}: {err['msg']}")
        raise SystemExit(2) from None


# --- ray-head ---------------------------------------------------------------------------------
def cmd_ray_head(args) -> int:
    from node.rayhead import head

    settings = _settings()
    if args.action == "start":
        with console.status(
            f"starting {settings.party}'s Ray head on {settings.ray_address}"
        ) as st:
            pid = head.start(settings, timeout=args.timeout, on_wait=lambda m: st.update(m))
        console.print(
            f"[green]Ray head up[/] party={settings.party} address={settings.ray_address} pid={pid}"
        )
        return 0
    if args.action == "run":
        head.run_foreground(settings)  # does not return
    if args.action == "stop":
        stopped = head.stop(settings)
        console.print("Ray head stopped" if stopped else "no Ray head of this party was running")
        return 0
    info = head.status(settings)
    out.print_json(data=info)
    return 0 if info["up"] else 1


# --- worker -----------------------------------------------------------------------------------
def cmd_worker(args) -> int:
    settings = _settings()
    if args.role == "all":
        return _run_both_workers(settings, args)
    from node.contract import DEFAULT_QUEUE, SECRETFLOW_QUEUE, WEB_QUEUE
    from node.worker.celery_app import ROLE_ENV, app

    os.environ[ROLE_ENV] = args.role
    if args.role == "sf":
        queues, conc, pool = SECRETFLOW_QUEUE, args.slots, "prefork"
    else:
        # short reads (hello, health, datasets): two threads, not two more processes (≈75 MB each)
        queues, conc, pool = f"{WEB_QUEUE},{DEFAULT_QUEUE}", 2, "threads"
    argv = [
        "worker",
        f"--queues={queues}",
        f"--concurrency={conc}",
        f"--pool={pool}",
        f"--hostname={args.role}.{settings.party}@{settings.worker_name}",
        f"--loglevel={args.loglevel}",
        "-O",
        "fair",
        "--without-gossip",
        "--without-mingle",
    ]
    app.worker_main(argv)
    return 0


def _run_both_workers(settings, args) -> int:
    """One command for operators: a SecretFlow worker and a light-task worker, supervised."""
    from node.ops.supervise import node_children, supervise

    children = node_children(settings, loglevel=args.loglevel, slots=args.slots, probe=False)
    return supervise(children, say=lambda m: console.print(f"[red]{m}[/]"))


# --- probe / up -------------------------------------------------------------------------------
def cmd_probe(args) -> int:
    import logging
    import threading

    from node.ops.probe import serve

    settings = _settings()
    port = args.port or settings.probe_port
    if port is None:
        console.print("[red]no probe port: set NODE_PROBE_PORT or pass --port[/]")
        return 2
    settings = settings.model_copy(
        update={"probe_port": port, "probe_listen_host": args.host or settings.probe_listen_host}
    )
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    def ready(address: tuple[str, int]) -> None:
        host = f"[{address[0]}]" if ":" in address[0] else address[0]
        console.print(
            f"[green]probe of {settings.party} listening on {host}:{address[1]} (mTLS)[/]: "
            f"answers clients whose certificate chains to {settings.ca_file}"
        )

    try:
        serve(settings, stop, on_ready=ready)
    except OSError as exc:
        where = f"{settings.probe_listen_host}:{port}"
        console.print(f"[red]the probe cannot listen on {where}: {exc}[/]")
        return 1
    console.print(f"probe of {settings.party} stopped")
    return 0


def cmd_up(args) -> int:
    from node.ops.supervise import node_children, supervise
    from node.rayhead import head

    settings = _settings()
    children = node_children(settings, loglevel=args.loglevel, slots=args.slots)
    own_head = not head.is_up(settings)

    def stop_now(signum, _frame):
        raise SystemExit(0)  # before the supervisor runs: still stop what `up` started

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop_now)
    try:
        if own_head:
            with console.status(f"starting {settings.party}'s Ray head") as st:
                pid = head.start(settings, timeout=args.timeout, on_wait=st.update)
            console.print(f"[green]Ray head up[/] address={settings.ray_address} pid={pid}")
        else:
            console.print(
                f"a Ray head already answers on {settings.ray_address}: using it "
                "(`up` will not stop it)"
            )
        console.print(f"[green]{settings.party} up[/]: {', '.join(children)} (SIGTERM stops all)")
        rc = supervise(children, say=lambda m: console.print(f"[red]{m}[/]"))
    except (RuntimeError, TimeoutError) as exc:
        console.print(f"[red]{exc}[/]")
        rc = 1
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):  # the head's own stop takes a moment
            signal.signal(sig, signal.SIG_IGN)
        if own_head:
            console.print(f"stopping {settings.party}'s Ray head")
            head.stop(settings)
    return rc


# --- send-task --------------------------------------------------------------------------------
def cmd_send_task(args) -> int:
    from node.contract import (
        SECRETFLOW_QUEUE,
        TASK_EXECUTE,
        TASK_HEALTH,
        TASK_HELLO,
        WEB_QUEUE,
        NodeTaskError,
        task_request_id,
    )
    from node.contract.clients import SigningConfig, client_app

    if args.broker:
        broker, backend, ca = args.broker, args.broker, args.redis_ca
        party = "?"
    else:
        settings = _settings()
        broker, backend, ca = settings.broker_url, settings.backend_url, settings.redis_ca_file
        party = settings.party

    key = args.sign_key or os.environ.get("NODE_SIGN_KEY_FILE")
    cert = args.sign_cert or os.environ.get("NODE_SIGN_CERT_FILE")
    if not key or not cert:
        console.print(
            "[red]send-task needs the coordinator's signing key and certificate: workers accept "
            "only signed tasks. Pass --sign-key/--sign-cert or set NODE_SIGN_KEY_FILE and "
            "NODE_SIGN_CERT_FILE.[/]"
        )
        return 2
    trusted = args.trust or str(Path(cert).parent / "*.crt")
    try:
        app = client_app(broker, backend, ca, signing=SigningConfig(Path(key), Path(cert), trusted))
    except (FileNotFoundError, ValueError) as exc:
        console.print(f"[red]{exc}[/]")
        return 2
    if args.kind == "hello":
        res = app.send_task(TASK_HELLO, queue=WEB_QUEUE)
    elif args.kind == "health":
        res = app.send_task(TASK_HEALTH, queue=WEB_QUEUE)
    else:
        if not args.params:
            console.print(
                "[red]send-task psi needs --params FILE (task_params JSON, docs/architecture.md §2)[/]"
            )
            return 2
        params = json.loads(Path(args.params).read_text())
        request_id = task_request_id(params["execution_id"], params["sf_init_config"]["self_party"])
        res = app.send_task(
            TASK_EXECUTE, args=[request_id, params], task_id=request_id, queue=SECRETFLOW_QUEUE
        )
    console.print(
        f"sent {args.kind} to {party}'s queue, task id {res.id}; waiting up to {args.timeout:.0f}s"
    )
    try:
        with console.status("waiting for the result"):
            value = res.get(timeout=args.timeout, propagate=True)
    except NodeTaskError as exc:
        console.print(f"[red]task failed:[/] {exc.message}")
        out.print_json(data=exc.result)
        return 1
    except Exception as exc:
        console.print(f"[red]{type(exc).__name__}:[/] {exc}")
        return 1
    out.print_json(data=value)
    return 0


# --- health -----------------------------------------------------------------------------------
def cmd_health(args) -> int:
    from node.ops.health import run_checks

    report = run_checks(_settings(), check_worker=not args.no_worker, check_links=not args.no_links)
    if args.json:
        out.print_json(data=report.as_dict())
    else:
        table = Table(title=f"health of party {report.party}")
        table.add_column("check")
        table.add_column("")
        table.add_column("detail")
        for c in report.checks:
            mark = (
                "[green]ok[/]"
                if c.ok and not c.warn
                else "[yellow]warn[/]"
                if c.ok
                else "[red]FAIL[/]"
            )
            table.add_row(c.name, mark, c.detail)
        out.print(table)
    return 0 if report.ok else 1


# --- metrics ----------------------------------------------------------------------------------
def cmd_metrics(args) -> int:
    import logging

    from node.ops import metrics

    settings = _settings()
    port = args.port if args.port is not None else settings.metrics_port
    if port is None:
        console.print("[red]no metrics port: set NODE_METRICS_PORT or pass --port[/]")
        return 2
    host = args.host or settings.metrics_listen_host
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        return metrics.run(settings, host, port)
    except OSError as exc:
        console.print(f"[red]the metrics exporter cannot listen on {host}:{port}: {exc}[/]")
        return 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m node",
        description="One party's Partyline node: its Ray head, its Celery worker, its mTLS "
        "probe, and tools to send it tasks and check its health. `up` runs them all. Configure "
        "with NODE_* environment variables (NODE_PARTY, NODE_BROKER_URL, NODE_DATA_ROOT, "
        "NODE_CERT_FILE, NODE_KEY_FILE, NODE_CA_FILE, NODE_ALLOWED_PEERS, NODE_RAY_ADDRESS, "
        "NODE_PROBE_PORT, NODE_PEER_PROBES, …; see docs/node.md).",
    )
    sub = p.add_subparsers(dest="cmd", required=True)

    rh = sub.add_parser(
        "ray-head",
        help="start, stop or show this party's Ray head",
        description="start: in the background, stopped later by `stop` (its own PIDs); run: in "
        "the foreground, for a service manager (the systemd unit of the Ansible role); status: "
        "JSON, exit 1 when the head does not answer.",
    )
    rh.add_argument("action", choices=["start", "run", "stop", "status"])
    rh.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for start")
    rh.set_defaults(fn=cmd_ray_head)

    w = sub.add_parser(
        "worker",
        help="run this party's Celery worker(s)",
        description="Runs a SecretFlow worker (queue secretflow_queue; each job in a supervised "
        "child process) and a light-task worker (web_queue, default). --role picks one.",
    )
    w.add_argument("--role", choices=["all", "sf", "web"], default="all")
    w.add_argument("--slots", type=int, default=1, help="concurrent SecretFlow jobs (default 1)")
    w.add_argument("--loglevel", default="info")
    w.set_defaults(fn=cmd_worker)

    s = sub.add_parser(
        "send-task",
        help="send hello / health / psi through this party's queue and print the result",
    )
    s.add_argument("kind", choices=["hello", "health", "psi"])
    s.add_argument("--params", help="task_params JSON file (psi)")
    s.add_argument("--broker", help="send to this broker URL instead of NODE_BROKER_URL")
    s.add_argument("--redis-ca", help="CA file for a rediss:// --broker")
    s.add_argument("--timeout", type=float, default=600.0)
    s.add_argument("--sign-key", help="signing key (default NODE_SIGN_KEY_FILE)")
    s.add_argument("--sign-cert", help="signing certificate (default NODE_SIGN_CERT_FILE)")
    s.add_argument(
        "--trust",
        help="certificates that sign the workers' replies (default: *.crt beside --sign-cert)",
    )
    s.set_defaults(fn=cmd_send_task)

    up = sub.add_parser(
        "up",
        help="run the whole node: Ray head, both workers, the probe and metrics, supervised",
        description="The one command for a container or a host without systemd: starts this "
        "party's Ray head (unless one already answers on NODE_RAY_ADDRESS), then runs the "
        "SecretFlow worker, the light-task worker, when NODE_PROBE_PORT is set the mTLS probe, "
        "and when NODE_METRICS_PORT is set the metrics exporter. When any of them exits the "
        "others are stopped and `up` exits 1. SIGTERM or Ctrl-C stops them all, then the Ray "
        "head it started, and exits 0.",
    )
    up.add_argument("--slots", type=int, default=1, help="concurrent SecretFlow jobs (default 1)")
    up.add_argument("--loglevel", default="info")
    up.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the head")
    up.set_defaults(fn=cmd_up)

    pr = sub.add_parser(
        "probe",
        help="run this party's standing mTLS probe in the foreground",
        description="Listens on NODE_PROBE_LISTEN_HOST:NODE_PROBE_PORT with this party's "
        "certificate, answers only clients whose certificate chains to NODE_CA_FILE (one line, "
        "then closes), so peers can check their link to this node before any job: "
        "`python -m node health` checks every peer of NODE_PEER_PROBES. SIGTERM stops it.",
    )
    pr.add_argument("--port", type=int, help="listen on this port instead of NODE_PROBE_PORT")
    pr.add_argument("--host", help="bind this address instead of NODE_PROBE_LISTEN_HOST")
    pr.set_defaults(fn=cmd_probe)

    h = sub.add_parser(
        "health",
        help="check Redis, workers, Ray head, certificates, data root and the links to peers",
        description="Checks this node's stack and, for every peer of NODE_PEER_PROBES, an mTLS "
        "connection to that peer's probe (its certificate must name that peer and chain to "
        "NODE_CA_FILE). Exit 0 when every check passes, 1 otherwise.",
    )
    h.add_argument("--json", action="store_true", help="print JSON instead of a table")
    h.add_argument("--no-worker", action="store_true", help="skip the workers' heartbeat check")
    h.add_argument(
        "--no-links",
        action="store_true",
        help="skip the peers' probes (a container healthcheck: only this node's own stack)",
    )
    h.set_defaults(fn=cmd_health)

    m = sub.add_parser(
        "metrics",
        help="serve this party's Prometheus metrics (/metrics) in the foreground",
        description="Listens on NODE_METRICS_LISTEN_HOST:NODE_METRICS_PORT and answers each "
        "scrape from this party's Redis (queues, heartbeats, status stream) and process table "
        "(memory of workers, job processes, Ray head). Keep the port internal. SIGTERM stops it.",
    )
    m.add_argument("--port", type=int, help="listen on this port instead of NODE_METRICS_PORT")
    m.add_argument("--host", help="bind this address instead of NODE_METRICS_LISTEN_HOST")
    m.set_defaults(fn=cmd_metrics)
    add_sessions_parser(sub)
    add_caches_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())

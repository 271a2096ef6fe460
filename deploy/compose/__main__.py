"""python -m deploy.compose — the federation in containers on one host (docs/compose.md)."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from deploy.compose import config, images
from deploy.compose.demo import DEFAULT_DIR, DOCKERD_DIR, WHEELHOUSE, Options, prepare, run
from deploy.compose.docker import ensure_daemon
from deploy.compose.stack import ComposeStack

console = Console()


def _parties(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def _stack(args) -> ComposeStack:
    env_file = Path(args.dir) / ".env"
    if not env_file.exists():
        raise SystemExit(
            f"{args.dir} has no generated config: run `python -m deploy.compose init` first"
        )
    env = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)
    parties = _parties(env.get("PARTYLINE_PARTIES", args.parties))  # the parties it was made for
    return ComposeStack(ensure_daemon(DOCKERD_DIR).docker, Path(args.dir), parties)


def _stop_own_dockerd() -> None:
    """The engine `demo` started (none was running): stop it too."""
    pid_file = DOCKERD_DIR / "dockerd.pid"
    try:
        pid = int(pid_file.read_text())
        if Path(f"/proc/{pid}/comm").read_text().strip() != "dockerd":
            return
    except (OSError, ValueError):
        return
    os.kill(pid, signal.SIGTERM)
    console.print(f"stopped the Docker engine the demo started (pid {pid})")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m deploy.compose",
        description="Run a Partyline federation in containers on this host: alice and bob (and "
        "optionally carol), each on its own network behind its gateway, plus the coordinator "
        "and PostgreSQL. `demo` does everything; the other commands are its steps.",
    )
    p.add_argument(
        "--dir", type=Path, default=DEFAULT_DIR, help=f"generated config (default {DEFAULT_DIR})"
    )
    p.add_argument("--parties", default="alice,bob", help="alice,bob (default) or alice,bob,carol")
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser(
        "demo", help="build, generate, start, wait healthy, run one PSI, print a summary"
    )
    d.add_argument("--rows", type=int, default=2000, help="rows per party (default 2000)")
    d.add_argument("--protocol", default="RR22", help="RR22 (default), ECDH or KKRT")
    d.add_argument("--ui-port", type=int, default=8000, help="coordinator port on 127.0.0.1")
    d.add_argument(
        "--base-image",
        help="base of the images (default: python:3.11-slim-bookworm if present, else a debootstrap root)",
    )
    d.add_argument("--no-build", action="store_true", help="use the images already built")
    w = sub.add_parser(
        "wheelhouse",
        help="every locked wheel (node + coordinator) in one folder, for offline builds",
    )
    w.add_argument("--out", type=Path, default=WHEELHOUSE)
    b = sub.add_parser("build", help="wheelhouse + base image + the three images, with no network")
    b.add_argument("--base-image")
    i = sub.add_parser(
        "init", help="certificates, secrets, redis.conf, gateway routes and topology"
    )
    i.add_argument("--ui-port", type=int, default=8000)
    sub.add_parser("up", help="start (after init and build)")
    sub.add_parser("status", help="every service and its health")
    lg = sub.add_parser("logs", help="the last lines of a service's log")
    lg.add_argument("service", nargs="*")
    sub.add_parser(
        "down",
        help="remove every container, network and volume, the generated secrets, and the "
        "Docker engine `demo` started (images are kept)",
    )
    args = p.parse_args(argv)
    say = console.print
    parties = _parties(args.parties)

    if args.cmd == "demo":
        return run(
            Options(
                parties,
                dir=args.dir,
                base_image=args.base_image,
                rows=args.rows,
                protocol=args.protocol,
                ui_port=args.ui_port,
                build=not args.no_build,
            )
        )
    if args.cmd == "wheelhouse":
        images.build_wheelhouse(args.out, log=say)
        return 0
    if args.cmd == "build":
        prepare(Options(parties, dir=args.dir, base_image=args.base_image), say)
        return 0
    if args.cmd == "init":
        gen = config.generate(args.dir, parties, ui_port=args.ui_port)
        say(
            f"{len(gen.files)} files in {gen.dir}; API token in {gen.dir}/coordinator/secrets/coord_api_token"
        )
        return 0
    stack = _stack(args)
    if args.cmd == "up":
        stack.up()
        stack.wait_healthy(say=say)
        return 0
    if args.cmd == "status":
        table = Table("service", "state")
        for service, state in stack.health().items():
            table.add_row(service, state)
        console.print(table)
        return 0
    if args.cmd == "logs":
        print(stack.logs_tail(args.service or stack.services, lines=100))
        return 0
    if args.cmd == "down":
        stack.down()
        shutil.rmtree(stack.dir, ignore_errors=True)
        say(f"removed every container, network and volume of the simulation, and {stack.dir}")
        say("the images stay for the next start: docker rmi partyline-node:dev … removes them")
        _stop_own_dockerd()
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())

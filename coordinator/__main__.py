"""python -m coordinator — the coordinator's commands (more arrive with the API and UI)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from rich.console import Console

console = Console(stderr=True)
DEFAULT_DATABASE_URL = "sqlite:///var/coordinator.db"  # as CoordinatorSettings.database_url


def _secret_database_url() -> str:
    """COORD_DATABASE_URL from the secrets directory (PARTYLINE_SECRETS_DIR), as the settings
    read it, else the default SQLite file."""
    from node.contract import secrets_dir

    where = secrets_dir()
    if where and (Path(where) / "coord_database_url").is_file():
        return (Path(where) / "coord_database_url").read_text().strip()
    return DEFAULT_DATABASE_URL


def cmd_migrate(args) -> int:
    from coordinator.db import current_revision, migrate

    url = args.database_url or os.environ.get("COORD_DATABASE_URL") or _secret_database_url()
    before = current_revision(url)
    migrate(url)
    after = current_revision(url)
    shown = url.split("@")[-1]  # never print credentials
    if args.json:  # for tools (the Ansible role: changed when before != after)
        print(json.dumps({"database": shown, "before": before, "after": after}))
        return 0
    console.print(
        f"database {shown}: revision {before or 'empty'} → [green]{after}[/]", soft_wrap=True
    )
    return 0


def cmd_serve(args) -> int:
    import logging

    import uvicorn
    from pydantic import ValidationError

    from coordinator.api.main import create_app
    from coordinator.db import migrate
    from coordinator.settings import CoordinatorSettings, topology_env
    from coordinator.topology import TopologyError, load_topology

    try:
        settings = CoordinatorSettings()
    except ValidationError as exc:
        for err in exc.errors():
            where = ".".join(str(x) for x in err["loc"]) or "settings"
            console.print(f"[red]COORD_{where.upper()}: {err['msg']}[/]")
        return 2
    try:
        topology = load_topology(settings.topology_file, env=topology_env())
    except (TopologyError, OSError) as exc:
        console.print(f"[red]{exc}[/]")
        return 2
    migrate(settings.database_url)  # the explicit pre-start step
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from coordinator.runtime import Coordinator

    app = create_app(coordinator=Coordinator(settings, topology), run_migrations=False)
    console.print(
        f"coordinator for {', '.join(topology.names)} on http://{args.host}:{args.port} "
        f"(API docs at /docs, UI at /)"
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


def _default_retention_days() -> float:
    from coordinator.settings import CoordinatorSettings

    return float(CoordinatorSettings.model_fields["retention_days"].default)


def cmd_prune(args) -> int:
    import datetime as dt

    from coordinator.db import make_engine, session_factory
    from coordinator.services.retention import prune

    url = args.database_url or os.environ.get("COORD_DATABASE_URL") or _secret_database_url()
    days = args.older_than_days
    if days is None:
        days = float(os.environ.get("COORD_RETENTION_DAYS", _default_retention_days()))
    if days <= 0:
        console.print("[red]the retention must be more than 0 days[/]")
        return 2
    before = dt.datetime.now(dt.UTC) - dt.timedelta(days=days)
    engine = make_engine(url)
    try:
        done = prune(session_factory(engine), before, dry_run=args.dry_run)
    finally:
        engine.dispose()
    verb = "would delete" if args.dry_run else "deleted"
    line = (
        f"{verb} {done.jobs} jobs that ended before {before:%Y-%m-%d %H:%M} UTC "
        f"({days:g} days ago), {done.tasks} party tasks and {done.events} timeline events"
    )
    if args.json:
        print(json.dumps({"dry_run": args.dry_run, "before": before.isoformat(), **vars(done)}))
    else:
        console.print(line, soft_wrap=True)
    return 0


def cmd_topology(args) -> int:
    from rich.table import Table

    from coordinator.settings import topology_env
    from coordinator.topology import TopologyError, load_topology

    path = args.file or os.environ.get("COORD_TOPOLOGY_FILE", "topology.yaml")
    try:
        topo = load_topology(path, env=topology_env())
    except (TopologyError, OSError) as exc:
        console.print(f"[red]{exc}[/]")
        return 2
    table = Table(title=f"federation {topo.federation} ({path})")
    for col in ("party", "broker", "fed host", "spu host", "fed ports", "spu ports", "slots"):
        table.add_column(col)
    for name in topo.names:
        p = topo.party(name)
        table.add_row(
            name,
            p.broker_url_redacted,
            p.fed_host,
            p.spu_host,
            str(p.fed_ports),
            str(p.spu_ports),
            str(p.slots),
        )
    Console().print(table)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m coordinator",
        description="The Partyline coordinator: launches cross-party jobs and merges their status. "
        "Configure with COORD_* environment variables (COORD_DATABASE_URL, COORD_TOPOLOGY_FILE, "
        "COORD_API_TOKEN, …).",
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("migrate", help="apply database migrations (Alembic) up to the newest")
    m.add_argument(
        "--database-url",
        help="SQLAlchemy URL (default: COORD_DATABASE_URL, then the file coord_database_url in "
        "PARTYLINE_SECRETS_DIR, then sqlite:///var/coordinator.db)",
    )
    m.add_argument(
        "--json", action="store_true", help='print {"database", "before", "after"} on stdout'
    )
    m.set_defaults(fn=cmd_migrate)
    sv = sub.add_parser(
        "serve",
        help="migrate the database, then serve the API + UI and run the status listeners",
    )
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--log-level", default="info")
    sv.set_defaults(fn=cmd_serve)
    pr = sub.add_parser(
        "prune",
        help="delete finished jobs (with their party tasks and timelines) older than the "
        "retention; open jobs are never touched",
    )
    pr.add_argument(
        "--older-than-days",
        type=float,
        help=f"the retention (default: COORD_RETENTION_DAYS, else {_default_retention_days():g})",
    )
    pr.add_argument("--dry-run", action="store_true", help="count what would go, delete nothing")
    pr.add_argument("--database-url", help="as for migrate")
    pr.add_argument("--json", action="store_true", help="print the counts as JSON")
    pr.set_defaults(fn=cmd_prune)
    t = sub.add_parser("topology", help="check the party registry file and show its parties")
    t.add_argument("--file", help="default: COORD_TOPOLOGY_FILE or ./topology.yaml")
    t.set_defaults(fn=cmd_topology)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())

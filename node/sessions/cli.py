"""`python -m node sessions`: list this party's warm sessions, or close some of them."""

from __future__ import annotations

import argparse
import json

from rich.console import Console
from rich.table import Table

from node.sessions.client import HostUnavailable, close_sessions, list_sessions
from node.settings import get_settings


def add_parser(sub) -> None:
    s = sub.add_parser(
        "sessions",
        help="list this party's warm federation sessions, or close them",
        description="Asks this party's session host (run by the SecretFlow worker) for its warm "
        "sessions: id, parties, driver pid, the job running now, jobs run, idle time. "
        "--close ID (repeatable) or --close-all ends sessions: a job of the session that is "
        "running fails, and the coordinator's next job of those parties gets SessionLost once "
        "(retried in a new session). Exit 1 when no session host answers.",
    )
    s.add_argument("--close", action="append", metavar="ID", help="close this session")
    s.add_argument("--close-all", action="store_true", help="close every session")
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")
    s.set_defaults(fn=cmd_sessions)


def cmd_sessions(args: argparse.Namespace) -> int:
    settings = get_settings()
    console = Console()
    try:
        if args.close or args.close_all:
            closed = close_sessions(settings, None if args.close_all else args.close)
            if args.json:
                print(json.dumps({"closed": closed}))
            else:
                console.print(f"closed {len(closed)} session(s): {', '.join(closed) or '—'}")
            return 0
        rows = list_sessions(settings)
    except HostUnavailable as exc:
        console.print(f"[red]party {settings.party}: {exc}[/]")
        return 1
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    table = Table(title=f"warm sessions of party {settings.party}")
    for col in ("id", "parties", "driver pid", "running job", "jobs", "idle s", "closes after s"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["id"],
            ", ".join(r["parties"]),
            str(r["pid"] or "—"),
            r["busy"] or "—",
            str(r["jobs"]),
            f"{r['idle_s']:.0f}" if not r["busy"] else "—",
            f"{r['idle_timeout_s']:.0f}",
        )
    console.print(table if rows else f"party {settings.party}: no warm session")
    return 0

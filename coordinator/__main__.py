"""python -m coordinator — the coordinator's commands (more arrive with the API and UI)."""

from __future__ import annotations

import argparse
import os
import sys

from rich.console import Console

console = Console(stderr=True)
DEFAULT_DATABASE_URL = "sqlite:///var/coordinator.db"  # as CoordinatorSettings.database_url


def cmd_migrate(args) -> int:
    from coordinator.db import current_revision, migrate

    url = args.database_url or os.environ.get("COORD_DATABASE_URL", DEFAULT_DATABASE_URL)
    before = current_revision(url)
    migrate(url)
    after = current_revision(url)
    shown = url.split("@")[-1]  # never print credentials
    console.print(f"database {shown}: revision {before or 'empty'} → [green]{after}[/]")
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
        help="SQLAlchemy URL (default: COORD_DATABASE_URL or sqlite:///var/coordinator.db)",
    )
    m.set_defaults(fn=cmd_migrate)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())

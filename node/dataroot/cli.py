"""`python -m node caches`: this party's unbalanced PSI cache halves, listed or deleted."""

from __future__ import annotations

import argparse
import datetime as dt
import json

from rich.console import Console
from rich.table import Table

from node.contract.ubpsi import CACHE_NAME_RE
from node.dataroot import ubcache
from node.settings import get_settings


def add_parser(sub) -> None:
    c = sub.add_parser(
        "caches",
        help="list this party's unbalanced PSI caches, or delete some",
        description="Reads <data root>/.partyline/ubcache: each half this party holds (as the "
        "server, with its secret key and its keys, or as the client, with the server's OPRF "
        "values), its peer, table, rows, size, the job that made it and its age. A party keeps "
        "at most NODE_MAX_UB_CACHES of them. --delete SERVER/NAME (repeatable) removes this "
        "party's half only: the peer keeps its own until its operator deletes it; a query "
        "started after the delete is refused (UbCacheNotFound), one running against it fails; "
        "a cache job with overwrite: true makes both halves again.",
    )
    c.add_argument("--delete", action="append", metavar="SERVER/NAME", help="delete this half")
    c.add_argument("--json", action="store_true", help="print JSON instead of a table")
    c.set_defaults(fn=cmd_caches)


def _target(arg: str) -> tuple[str, str]:
    server, _, name = arg.partition("/")
    if not CACHE_NAME_RE.fullmatch(name) or not CACHE_NAME_RE.fullmatch(server):
        raise SystemExit(f"--delete {arg!r}: give SERVER/NAME, as the list shows them")
    return server, name


def cmd_caches(args: argparse.Namespace) -> int:
    settings = get_settings()
    console = Console()
    if args.delete:
        targets = [_target(a) for a in args.delete]
        gone = [f"{s}/{n}" for s, n in targets if ubcache.remove(settings.data_root, s, n)]
        missing = [f"{s}/{n}" for s, n in targets if f"{s}/{n}" not in gone]
        if args.json:
            print(json.dumps({"deleted": gone, "not_found": missing}))
        else:
            console.print(f"party {settings.party}: deleted {', '.join(gone) or 'nothing'}")
            if missing:
                console.print(f"[yellow]no such cache here: {', '.join(missing)}[/]")
        return 1 if missing else 0
    halves = ubcache.list_caches(settings.data_root)
    if args.json:
        print(json.dumps([m.model_dump(mode="json") for m in halves], indent=1))
        return 0
    now = dt.datetime.now(dt.UTC)
    table = Table(
        title=f"unbalanced PSI caches of party {settings.party} "
        f"({len(halves)} of at most {settings.max_ub_caches})"
    )
    for col in ("server/name", "role", "peer", "table", "rows", "MB", "made by", "age"):
        table.add_column(col)
    for m in halves:
        peer = m.client if m.role is ubcache.CacheRole.SERVER else m.server
        age = now - m.made_at
        table.add_row(
            f"{m.server}/{m.cache}", str(m.role), peer, m.table or "—", f"{m.rows:,}",
            f"{m.bytes / 1e6:.1f}", m.made_by[:12], f"{age.days} d {age.seconds // 3600} h",
        )  # fmt: skip
    console.print(table)
    return 0

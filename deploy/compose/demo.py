"""`make compose-demo`: the federation in containers, one PSI through the coordinator's API.

Steps, each said as it happens: a Docker engine (Debian's dockerd is started when none answers),
the wheelhouse (`make wheelhouse`), a base image (the given one, the official Python image when
present, else a Debian 12 root from debootstrap), the three images built with no network,
certificates/secrets/config (deploy.compose.config), `up`, wait until every service is healthy,
sample tables written into each party's data volume, one PSI, and the same summary as
`make demo`. Everything stays up; `make compose-down` removes it all.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from rich.console import Console

from deploy.compose import config, images
from deploy.compose.docker import Daemon, ensure_daemon
from deploy.compose.stack import ComposeStack
from deploy.psi_demo import (
    psi_body,
    run_psi,
    sample_csv,
    sample_ids,
    summary_table,
    wait_warm,
)

console = Console()
REPO_ROOT = config.REPO_ROOT
DEFAULT_DIR = REPO_ROOT / "build" / "compose"
WHEELHOUSE = REPO_ROOT / "build" / "wheelhouse"
DOCKERD_DIR = Path("/var/tmp/partyline-dockerd")
DATA = "/var/lib/partyline/data"


@dataclass
class Options:
    parties: list[str]
    dir: Path = DEFAULT_DIR
    wheelhouse: Path = WHEELHOUSE
    base_image: str | None = None
    rows: int = 2000
    protocol: str = "RR22"
    ui_port: int = 8000
    image_tag: str = images.IMAGE_TAG
    project: str = "partyline"
    build: bool = True


def pick_base_images(daemon: Daemon, wanted: str | None, say) -> tuple[str, str]:
    """(base of node and coordinator, base of PostgreSQL): the official images when given or
    present, else Debian 12 roots made with debootstrap (no image registry needed)."""
    official = (images.DEFAULT_BASE_IMAGE, images.DEFAULT_POSTGRES_BASE_IMAGE)
    if wanted and wanted != images.LOCAL_BASE_IMAGE:
        return wanted, images.DEFAULT_POSTGRES_BASE_IMAGE
    if not wanted and all(daemon.docker.image_exists(t) for t in official):
        return official
    if not wanted:
        say(f"{' and '.join(official)} are not here (no registry?): using debootstrap bases")
    return (
        images.build_base_image(daemon.docker, images.LOCAL_BASE_IMAGE, log=say),
        images.build_base_image(daemon.docker, images.LOCAL_POSTGRES_BASE_IMAGE, log=say),
    )


def prepare(opts: Options, say) -> tuple[Daemon, ComposeStack, config.Generated]:
    daemon = ensure_daemon(DOCKERD_DIR)
    say(
        "Docker engine: " + (f"started dockerd ({daemon.docker.host})" if daemon.pid else "running")
    )
    if opts.build:
        wh = images.build_wheelhouse(opts.wheelhouse, log=say)
        base, pg_base = pick_base_images(daemon, opts.base_image, say)
        t = time.monotonic()
        images.build_images(
            daemon.docker,
            wh,
            base_image=base,
            postgres_base_image=pg_base,
            ctx=opts.wheelhouse.parent / "context",
            log=say,
        )
        sizes = images.image_sizes(daemon.docker, {k: v[1] for k, v in images.IMAGES.items()})
        say(
            f"images built in {time.monotonic() - t:.0f} s: "
            + ", ".join(f"{k} {v / 1e6:.0f} MB" for k, v in sizes.items())
        )
    gen = config.generate(
        opts.dir, opts.parties, ui_port=opts.ui_port, image_tag=opts.image_tag, project=opts.project
    )
    say(f"certificates, secrets and config for {', '.join(opts.parties)} in {gen.dir}")
    return daemon, ComposeStack(daemon.docker, gen.dir, opts.parties), gen


def write_samples(stack: ComposeStack, parties: list[str], rows: int) -> dict[str, list[int]]:
    ids = sample_ids(parties, rows)
    for p in parties:
        stack.exec(
            f"{p}-node",
            "sh",
            "-c",
            f"cat > {DATA}/customers.csv",
            input=sample_csv("uid", ids[p], seed=sum(map(ord, p))),
        )
    return ids


def run(opts: Options) -> int:
    t_start = time.monotonic()

    def say(m: str) -> None:
        console.print(f"[dim]{time.monotonic() - t_start:6.1f}s[/] {m}")

    try:
        _, stack, gen = prepare(opts, say)
        say(
            "starting: Redis, gateways and PostgreSQL first, then the nodes, then the "
            "coordinator, each once what it depends on is healthy"
        )
        stack.up()
        say("started; waiting until every service is healthy")
        stack.wait_healthy(say=say)
        say(f"all healthy ({time.monotonic() - t_start:.0f} s since start)")
        ids = write_samples(stack, opts.parties, opts.rows)
        say(
            f"sample data: {opts.rows:,} rows per party in each party's data volume ({DATA}/customers.csv)"
        )
        url = f"http://127.0.0.1:{opts.ui_port}"
        a, b = opts.parties[0], opts.parties[1]
        with httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {gen.api_token}"}, timeout=30
        ) as http:
            if len(opts.parties) == 2:  # COORD_PREWARM=auto warms the registry's only pair
                why = wait_warm(http, [a, b], console, say)
                if why:  # the PSI then starts SecretFlow itself: slower, still right
                    console.print(f"[yellow]{why}[/]")
            d, elapsed = run_psi(http, psi_body(a, b, opts.protocol), console, say)
    except (RuntimeError, TimeoutError, ValueError, OSError) as exc:
        console.print(f"[red]{exc}[/]")
        console.print(
            "logs: docker-compose logs <service> (python -m deploy.compose logs); stop: make compose-down"
        )
        return 1
    if d["status"] != "SUCCEEDED":
        console.print(f"[red]PSI {d['status']}: {d['error']}[/]")
        return 1
    truth = len(set(ids[a]) & set(ids[b]))
    count = (d["result"] or {}).get("intersection_count")
    console.print(
        summary_table(
            "Partyline compose demo",
            [
                (
                    "PSI",
                    f"{a} × {b} ({opts.rows:,} rows each, {opts.protocol}, mTLS through the gateways)",
                ),
                (
                    "intersection",
                    f"{count:,} rows (expected {truth:,})" if count is not None else "?",
                ),
                ("time", f"{elapsed:.1f} s from submit to SUCCEEDED"),
                (
                    "output",
                    f"{DATA}/out/demo-intersection.csv in {a}-node (volume {opts.project}_{a}-data)",
                ),
                ("UI", f"{url}/  — log in with the token below"),
                ("API", f"{url}/docs  — Authorization: Bearer <token>"),
                ("token", gen.api_token),
                ("config", str(gen.dir)),
                ("stop", "make compose-down (removes containers, networks and volumes)"),
            ],
        )
    )
    return 0 if count == truth else 1

"""A party's link gateway in the compose simulation: the party's only container on `wan`.

Each party's Redis, Ray head and workers sit on the party's own internal network and cannot be
reached from any other party's network. The gateway is the one container attached to both that
network and the shared `wan` network, and it relays only what must cross organisations:

- inbound (from `wan`): this party's fed and SPU port ranges and its probe port, to the party's
  node; the Redis port the coordinator uses, to the party's Redis;
- outbound (from the party's network): each peer's fed/SPU ranges and probe port, to that
  peer's gateway.

It relays TCP bytes only: TLS runs end to end between the nodes (and between the coordinator
and Redis), so the gateway never holds a key and cannot read the traffic. It plays the part a
firewall plays on real hosts (docs/compose.md).

Standard library only: it runs from the node image as `python3 gateway.py CONFIG.json`.
Config: {"party": "alice", "ready_file": "/tmp/gateway.ready",
         "routes": [{"name": "alice fed", "ports": [21000, 21049], "to": "alice-node"}, ...],
         "max_connections": 512, "max_per_source": 128, "idle_timeout_s": 3600}
A route forwards every port of its inclusive range to the same port of host `to`, or, for a
one-port route with "to_port", to that port (the party's Redis and probe listen on fixed ports
inside the party's network). A route with "listen" binds only that host's address: the
outbound routes listen on the gateway's address in the party's own network (`alice.peer`), so no
member of `wan` can relay through them; inbound routes listen on every address.

Bounds: at most `max_connections` relayed at once, `max_per_source` of them from one address
(more are closed at once), and a connection with no byte in either direction for
`idle_timeout_s` is closed (a warm session's links idle between jobs: the default is an hour).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("partyline.gateway")
CONNECT_TIMEOUT_S = 5.0
CHUNK = 64 * 1024


@dataclass(frozen=True)
class Limits:
    max_connections: int = 512
    max_per_source: int = 128
    idle_timeout_s: float = 3600.0


@dataclass(frozen=True)
class Route:
    name: str
    first: int
    last: int
    to: str
    to_port: int | None = None
    listen: str = "0.0.0.0"

    def ports(self) -> range:
        return range(self.first, self.last + 1)

    def target(self, port: int) -> int:
        return self.to_port or port


def load_routes(path: Path) -> tuple[str, Path | None, list[Route], Limits]:
    raw = json.loads(Path(path).read_text())
    routes = [
        Route(
            r["name"], int(r["ports"][0]), int(r["ports"][1]), r["to"], r.get("to_port"),
            r.get("listen", "0.0.0.0"),
        )
        for r in raw["routes"]
    ]  # fmt: skip
    seen: dict[int, str] = {}
    for r in routes:
        if not 1 <= r.first <= r.last <= 65535:
            raise ValueError(f"{path}: route {r.name}: bad port range {r.first}-{r.last}")
        if r.to_port is not None and r.first != r.last:
            raise ValueError(f"{path}: route {r.name}: to_port needs a one-port route")
        for p in r.ports():
            if p in seen:
                raise ValueError(f"{path}: port {p} is in both {seen[p]} and {r.name}")
            seen[p] = r.name
    limits = Limits(
        int(raw.get("max_connections", Limits.max_connections)),
        int(raw.get("max_per_source", Limits.max_per_source)),
        float(raw.get("idle_timeout_s", Limits.idle_timeout_s)),
    )
    ready = raw.get("ready_file")
    return raw["party"], Path(ready) if ready else None, routes, limits


class _Activity:
    """When a connection last carried a byte, in either direction (the idle timeout)."""

    def __init__(self, idle_s: float) -> None:
        self.idle_s = idle_s
        self.last = time.monotonic()

    def left(self) -> float:
        return self.last + self.idle_s - time.monotonic()


class _Idle(Exception):
    pass


async def _pipe(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, activity: _Activity
) -> None:
    try:
        while True:
            try:
                data = await asyncio.wait_for(reader.read(CHUNK), max(0.05, activity.left()))
            except TimeoutError:
                if activity.left() <= 0:
                    raise _Idle from None
                continue
            if not data:
                break
            activity.last = time.monotonic()
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            if writer.can_write_eof():
                writer.write_eof()


class Gateway:
    """The relays of one gateway, with its connection bounds."""

    def __init__(self, routes: list[Route], limits: Limits) -> None:
        self.routes = routes
        self.limits = limits
        self.sources: Counter[str] = Counter()

    def _admit(self, source: str) -> bool:
        if sum(self.sources.values()) >= self.limits.max_connections:
            return False
        if self.sources[source] >= self.limits.max_per_source:
            return False
        self.sources[source] += 1
        return True

    def _leave(self, source: str) -> None:
        self.sources[source] -= 1
        if self.sources[source] <= 0:
            del self.sources[source]

    async def relay(self, route: Route, port: int, client_r, client_w) -> None:
        peer = client_w.get_extra_info("peername") or ("?", 0)
        if not self._admit(peer[0]):
            log.warning("%s: %s turned away: too many connections", route.name, peer)
            client_w.close()
            return
        try:
            await self._relay(route, route.target(port), peer, client_r, client_w)
        finally:
            self._leave(peer[0])

    async def _relay(self, route: Route, port: int, peer, client_r, client_w) -> None:
        try:
            up_r, up_w = await asyncio.wait_for(
                asyncio.open_connection(route.to, port), CONNECT_TIMEOUT_S
            )
        except (TimeoutError, OSError) as exc:
            log.info(
                "%s: %s → %s:%s failed: %s", route.name, peer, route.to, port, exc or "timeout"
            )
            client_w.close()
            return
        log.debug("%s: %s → %s:%s", route.name, peer, route.to, port)
        activity = _Activity(self.limits.idle_timeout_s)
        try:
            await asyncio.gather(_pipe(client_r, up_w, activity), _pipe(up_r, client_w, activity))
        except _Idle:
            log.info("%s: %s closed after %.0f s idle", route.name, peer, activity.idle_s)
        finally:
            for w in (up_w, client_w):
                w.close()
                with contextlib.suppress(OSError, ConnectionError):
                    await w.wait_closed()

    async def serve(self, ready_file: Path | None, stop: asyncio.Event) -> None:
        servers = []
        for route in self.routes:
            for port in route.ports():

                def handler(r, w, route=route, port=port):
                    return self.relay(route, port, r, w)

                servers.append(await asyncio.start_server(handler, route.listen, port, backlog=64))
        for r in self.routes:
            log.info("relaying %s: %s ports %s-%s → %s", r.name, r.listen, r.first, r.last, r.to)
        if ready_file:
            ready_file.write_text("ready\n")
        await stop.wait()
        for s in servers:
            s.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "config", type=Path, help="the gateway's JSON routes (written by deploy.compose)"
    )
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s: %(message)s")
    try:
        party, ready_file, routes, limits = load_routes(args.config)
    except (OSError, ValueError, KeyError) as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
    log.info("gateway of %s: %d routes", party, len(routes))

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await Gateway(routes, limits).serve(ready_file, stop)

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())

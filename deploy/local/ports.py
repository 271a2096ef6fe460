"""Free-port picking for parties that share one machine."""

from __future__ import annotations

import random
import socket


def port_free(port: int, host: str = "0.0.0.0") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def ephemeral_range() -> tuple[int, int]:
    """The kernel's range for outgoing connections' local ports (never hand those out)."""
    try:
        low, high = open("/proc/sys/net/ipv4/ip_local_port_range").read().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


class PortAllocator:
    """Hands out ports not handed out before and free right now, from [low, high).

    The default range stays below the kernel's ephemeral range: a port from that range can be
    taken at any moment by some process's outgoing connection, between our check and the bind.
    """

    def __init__(self, low: int = 10000, high: int | None = None, seed: int | None = None) -> None:
        eph_low, _ = ephemeral_range()
        high = high if high is not None else min(eph_low, 32768)
        if high - low < 2000:
            raise RuntimeError(
                f"port range {low}-{high} too small (ephemeral ports start at {eph_low})"
            )
        self.low, self.high = low, high
        self.taken: set[int] = set()
        self.rng = random.Random(seed)

    def one(self) -> int:
        for _ in range(10_000):
            p = self.rng.randrange(self.low, self.high)
            if p not in self.taken and port_free(p):
                self.taken.add(p)
                return p
        raise RuntimeError("no free port found")

    def block(self, size: int) -> range:
        """A contiguous block of `size` free ports."""
        for _ in range(2_000):
            start = self.rng.randrange(self.low, self.high - size)
            ports = range(start, start + size)
            if any(p in self.taken for p in ports):
                continue
            if all(port_free(p) for p in ports[:: max(1, size // 8)]) and port_free(ports[-1]):
                self.taken.update(ports)
                return ports
        raise RuntimeError(f"no free block of {size} ports found")

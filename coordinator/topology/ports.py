"""Per-job ports: `pick_ports` / `PortPool` assign per-job fed and SPU ports from each party's
ranges."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Mapping

from coordinator.topology.fields import PortRange
from coordinator.topology.model import JobPorts, Topology


# --- per-job ports ----------------------------------------------------------------------------
class PortsExhausted(RuntimeError):
    """Every port of a party's range is in use: the job must wait (or the range be widened)."""

    def __init__(self, party: str, kind: str, port_range: PortRange) -> None:
        self.party, self.kind, self.port_range = party, kind, port_range
        super().__init__(
            f"no free {kind} port for party {party}: all {len(port_range)} ports of "
            f"{kind}_ports {port_range} are in use"
        )


def pick_ports(
    topology: Topology,
    parties: Iterable[str],
    in_use: Mapping[str, Collection[int]] | None = None,
    after: Mapping[str, JobPorts] | None = None,
) -> dict[str, JobPorts]:
    """Pick one fed and one SPU port per party for a new job: the lowest port of each range
    that is not in `in_use[party]` — or, with `after[party]`, the first free port above that
    party's previous pick, wrapping around (round robin). Pure and deterministic;
    all-or-nothing (raises PortsExhausted naming the party and range, KeyError for an unknown
    party)."""
    in_use = in_use or {}
    after = after or {}
    out: dict[str, JobPorts] = {}
    for name in parties:
        if name in out:
            raise ValueError(f"party {name} is listed twice")
        spec = topology.party(name)
        used = in_use.get(name, ())
        picked = []
        prev = after.get(name)
        for kind, rng in (("fed", spec.fed_ports), ("spu", spec.spu_ports)):
            order: Iterable[int] = rng
            last = None if prev is None else (prev.fed if kind == "fed" else prev.spu)
            if last is not None:
                order = [*(p for p in rng if p > last), *(p for p in rng if p <= last)]
            port = next((p for p in order if p not in used), None)
            if port is None:
                raise PortsExhausted(name, kind, rng)
            picked.append(port)
        out[name] = JobPorts(*picked)
    return out


def _ports(jp: JobPorts) -> tuple[int, ...]:
    return (jp.fed,) if jp.spu is None else (jp.fed, jp.spu)


class PortPool:
    """In-memory bookkeeping around `pick_ports`: ports held per key (e.g. execution_id).

    `cooldown_s` keeps released ports out of use for a while (a listener that just closed may
    still hold its port). After a coordinator restart, `hold()` the ports of every
    non-terminal execution (from the database) before acquiring new ones.
    """

    def __init__(
        self,
        topology: Topology,
        *,
        cooldown_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        rotate: bool = False,
    ) -> None:
        """`rotate`: hand out ports round robin from a random starting point, so that a port
        comes back only after the whole range — a job's listener that is still closing, or a
        previous coordinator process's last job, is not handed the same port again."""
        self.topology = topology
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._held: dict[str, dict[str, JobPorts]] = {}
        self._cooling: list[tuple[float, str, int]] = []
        self._last: dict[str, JobPorts] | None = None
        if rotate:
            import random

            self._last = {}
            for name in topology.names:
                spec = topology.party(name)
                self._last[name] = JobPorts(
                    random.choice(list(spec.fed_ports)), random.choice(list(spec.spu_ports))
                )

    def in_use(self) -> dict[str, set[int]]:
        now = self._clock()
        self._cooling = [c for c in self._cooling if c[0] > now]
        used: dict[str, set[int]] = {}
        for assignment in self._held.values():
            for party, jp in assignment.items():
                used.setdefault(party, set()).update(_ports(jp))
        for _, party, port in self._cooling:
            used.setdefault(party, set()).add(port)
        return used

    def acquire(self, key: str, parties: Iterable[str]) -> dict[str, JobPorts]:
        if key in self._held:
            raise ValueError(f"ports for {key!r} are already held")
        assignment = pick_ports(self.topology, parties, self.in_use(), self._last)
        self._held[key] = assignment
        if self._last is not None:
            self._last.update(assignment)
        return dict(assignment)

    def hold(self, key: str, assignment: Mapping[str, JobPorts]) -> None:
        """Mark an existing assignment as in use (restoring state after a restart)."""
        if key in self._held:
            raise ValueError(f"ports for {key!r} are already held")
        for party, jp in assignment.items():
            spec = self.topology.party(party)
            spec.fed_address(jp.fed)  # raises if outside the party's ranges
            if jp.spu is not None:
                spec.spu_address(jp.spu)
        self._held[key] = dict(assignment)

    def release(self, key: str) -> None:
        """Free a key's ports (idempotent); with a cooldown they come back later."""
        assignment = self._held.pop(key, None)
        if assignment and self.cooldown_s > 0:
            until = self._clock() + self.cooldown_s
            for party, jp in assignment.items():
                self._cooling += [(until, party, port) for port in _ports(jp)]

    @property
    def held(self) -> dict[str, dict[str, JobPorts]]:
        return {k: dict(v) for k, v in self._held.items()}

"""The SPU runtime of a warm session: SecretFlow's `SPURuntime` plus a checked call.

A session's SPU runtime (and its brpc link, mTLS) serves many jobs. Before each job's PSI the
two runtimes swap the job's execution id over that link (`all_gather`); if the ids differ, the
parties are not running the same job and the PSI is refused on both sides — a wrong pairing
fails at once instead of intersecting one job's table with another's. Ray imports this module
in the actor's worker by name (`node.sessions.runtime`), so it must stay importable there.
"""

from __future__ import annotations

from typing import Any

from secretflow.device.device.spu import SPURuntime


class SessionMismatch(RuntimeError):
    """The peer's runtime is running another job of the session."""


class PartylineSPURuntime(SPURuntime):
    def checked(self, token: str, method: str, *args: Any) -> Any:
        """Run `self.<method>(*args)` once every party's runtime called with the same token."""
        tokens = [str(t) for t in self.link.all_gather(token)]
        if any(t != token for t in tokens):
            others = sorted({t for t in tokens if t != token})
            raise SessionMismatch(
                f"the parties of this session are not running the same job: {self.party} runs "
                f"{token}, the peer runs {', '.join(others)}"
            )
        if method not in ("psi", "psi_csv"):
            raise ValueError(f"method {method!r} may not be called through a session")
        return getattr(self, method)(*args)


def install() -> None:
    """Make `sf.SPU` create this runtime (call in the driver before creating the device)."""
    import secretflow.device.device.spu as sf_spu

    sf_spu.SPURuntime = PartylineSPURuntime  # read by SPU.init at call time

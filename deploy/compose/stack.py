"""One compose project of the simulation: up, wait until healthy, exec, down.

Works with `docker compose` (v2) and Debian's `docker-compose` 1.29 (compose_command).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from deploy.compose.config import compose_files
from deploy.compose.docker import Docker, compose_command, run_command


@dataclass
class ComposeStack:
    docker: Docker
    dir: Path  # the generated PARTYLINE_COMPOSE_DIR (its .env names the project)
    parties: list[str]

    @property
    def env_file(self) -> Path:
        return self.dir / ".env"

    @property
    def project(self) -> str:
        for line in self.env_file.read_text().splitlines():
            if line.startswith("COMPOSE_PROJECT_NAME="):
                return line.split("=", 1)[1]
        return "partyline"

    def command(self, *args: str) -> list[str]:
        files = [a for f in compose_files(self.parties) for a in ("-f", str(f))]
        return [
            *compose_command(self.docker),
            "--env-file",
            str(self.env_file),
            "--project-directory",
            str(self.dir),
            *files,
            *args,
        ]

    def compose(
        self, *args: str, check: bool = True, timeout: float = 900
    ) -> subprocess.CompletedProcess:
        what = f"compose {' '.join(args[:2])}"
        return run_command(self.command(*args), self.docker.env, what, check, timeout)

    @cached_property
    def services(self) -> list[str]:
        """Read once: wait_healthy polls every 2 s and the files do not change meanwhile."""
        return self.compose("config", "--services").stdout.split()

    def container(self, service: str) -> str:
        cid = self.compose("ps", "-q", service).stdout.strip()
        if not cid:
            raise RuntimeError(f"service {service} has no container")
        return cid

    def _states(self) -> dict[str, dict | None]:
        """service → its container's docker State (None: no container)."""
        out: dict[str, dict | None] = {}
        for service in self.services:
            cid = self.compose("ps", "-q", service, check=False).stdout.strip()
            out[service] = self.docker.inspect(cid)[0]["State"] if cid else None
        return out

    def health(self, states: dict[str, dict | None] | None = None) -> dict[str, str]:
        """service → running / healthy / unhealthy / starting / exited (code)."""
        out: dict[str, str] = {}
        for service, state in (states or self._states()).items():
            if state is None:
                out[service] = "missing"
            elif state["Status"] != "running":
                out[service] = f"{state['Status']} (exit {state.get('ExitCode')})"
            else:
                out[service] = state.get("Health", {}).get("Status", "running")
        return out

    def wait_healthy(self, timeout: float = 600, say: Callable[[str], None] = print) -> float:
        t0 = time.monotonic()
        last = None
        while True:
            h = self.health()
            waiting = sorted(s for s, st in h.items() if st not in ("healthy",))
            if not waiting:
                return time.monotonic() - t0
            dead = [
                f"{s}: {h[s]}" for s in waiting if h[s].startswith(("exited", "dead", "missing"))
            ]
            if dead and time.monotonic() - t0 > 20:
                raise RuntimeError(f"not running: {'; '.join(dead)}\n{self.logs_tail(waiting)}")
            line = "waiting for " + ", ".join(f"{s} ({h[s]})" for s in waiting)
            if line != last:
                say(line)
                last = line
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(
                    f"not healthy within {timeout:.0f} s: {line}\n{self.logs_tail(waiting)}"
                )
            time.sleep(2)

    def logs_tail(self, services: list[str], lines: int = 30) -> str:
        done = self.compose("logs", "--no-color", "--tail", str(lines), *services, check=False)
        return (done.stdout + done.stderr)[-6000:]

    def exec(
        self, service: str, *cmd: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess:
        """`cmd` in the running container of `service`, as the image's user."""
        return self.docker.run(
            ["exec", "-i", self.container(service), *cmd], check=check, timeout=300, input=input
        )

    def up(self) -> None:
        done = self.compose("up", "-d", "--no-build", check=False)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise RuntimeError(f"compose up -d failed: {' '.join(tail)}\n{self.why_unhealthy()}")

    def why_unhealthy(self) -> str:
        """Every service that is not healthy: its state, its health check's last output and the
        end of its log."""
        states = self._states()
        h = self.health(states)
        bad = sorted(s for s, st in h.items() if st != "healthy")
        lines = []
        for service in bad:
            lines.append(f"{service}: {h[service]}")
            checks = (states[service] or {}).get("Health", {}).get("Log", [])
            if checks:
                lines.append(f"  last check: {checks[-1].get('Output', '').strip()[-800:]}")
        return "\n".join(lines) + "\n" + self.logs_tail(bad)

    def down(self) -> None:
        self.compose("down", "-v", "--remove-orphans", "--timeout", "20", check=False)

"""Run the coordinator (`python -m coordinator serve`) as its own process, next to a
LocalFederation: for `make demo`, the e2e tests and the benchmarks."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from deploy.local.logs import CappedLog, spawn

REPO_ROOT = Path(__file__).resolve().parents[2]


class CoordinatorProcess:
    def __init__(
        self,
        base: Path,
        *,
        topology_file: Path,
        certs_dir: Path,
        port: int,
        database_url: str | None = None,
        env: dict[str, str] | None = None,
        token: str | None = None,
    ) -> None:
        self.base = Path(base)
        self.port = port
        self.token = token or secrets.token_urlsafe(24)
        self.database_url = database_url or f"sqlite:///{self.base / 'coordinator.db'}"
        self.env = {
            "COORD_API_TOKEN": self.token,
            "COORD_DATABASE_URL": self.database_url,
            "COORD_TOPOLOGY_FILE": str(topology_file),
            "COORD_SIGNING_KEY_FILE": str(certs_dir / "coordinator.key"),
            "COORD_SIGNING_CERT_FILE": str(certs_dir / "coordinator.crt"),
            "COORD_TRUSTED_NODE_CERTS": str(certs_dir / "*.crt"),
            **(env or {}),
        }
        self.proc: subprocess.Popen | None = None
        self._log: CappedLog | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.base / "coordinator.log"

    def start(self) -> CoordinatorProcess:
        self.base.mkdir(parents=True, exist_ok=True)
        self.proc, self._log = spawn(  # coordinator.log, capped like the nodes' logs
            [sys.executable, "-m", "coordinator", "serve", "--port", str(self.port)],
            self.log_file,
            env=dict(os.environ, **self.env),
            cwd=REPO_ROOT,
        )
        return self

    def wait_ready(self, timeout: float = 60.0) -> dict:
        """Until /healthz answers and every party's status listener is connected."""
        end = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < end:
            if self.proc is not None and self.proc.poll() is not None:
                if self._log is not None:
                    self._log.wait()  # its last lines
                tail = self.log_file.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"the coordinator exited (code {self.proc.returncode}):\n{tail}")
            try:
                body = httpx.get(f"{self.url}/healthz", timeout=2).json()
                if all(body.get("listeners", {}).values()) and body.get("listeners"):
                    return body
                last = f"listeners {body.get('listeners')}"
            except (httpx.HTTPError, ValueError) as exc:
                last = str(exc)
            time.sleep(0.3)
        raise TimeoutError(f"the coordinator was not ready within {timeout:.0f} s ({last})")

    def client(self, timeout: float = 30.0) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=timeout
        )

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.kill(signal.SIGTERM)
        self.kill(signal.SIGKILL)
        self.proc = None
        if self._log is not None:
            self._log.wait()
            self._log = None

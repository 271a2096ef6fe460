"""The Docker engine and the compose command, as the compose simulation and its tests use them.

`Docker(host)` runs the docker CLI against one daemon. `ensure_daemon(dir)` uses the daemon that
answers (DOCKER_HOST or /var/run/docker.sock) or starts Debian's `dockerd` with its own data and
socket under `dir`, and returns a handle that stops only a daemon it started.
`compose_command()` is `docker compose` (v2) when the plugin exists, else `docker-compose` (1.29).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Docker:
    host: str | None = None  # unix:///path/docker.sock; None = the CLI's default

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.host:
            env["DOCKER_HOST"] = self.host
        return env

    def run(
        self, args: list[str], *, check: bool = True, timeout: float = 600, stdin=None, input=None
    ) -> subprocess.CompletedProcess:
        what = f"docker {' '.join(args[:3])} …"
        return run_command(["docker", *args], self.env, what, check, timeout, stdin, input)

    def answers(self) -> bool:
        try:
            return (
                self.run(
                    ["version", "--format", "{{.Server.Version}}"], check=False, timeout=20
                ).returncode
                == 0
            )
        except subprocess.TimeoutExpired:
            return False

    def image_exists(self, tag: str) -> bool:
        return self.run(["image", "inspect", tag], check=False).returncode == 0

    def image_size(self, tag: str) -> int:
        return int(self.run(["image", "inspect", "--format", "{{.Size}}", tag]).stdout.strip())

    def inspect(self, what: str) -> list[dict]:
        return json.loads(self.run(["inspect", what]).stdout)


def run_command(
    cmd: list[str],
    env: dict[str, str],
    what: str,
    check: bool,
    timeout: float,
    stdin=None,
    input: str | None = None,
) -> subprocess.CompletedProcess:
    """Run a docker/compose command; with `check`, a failure raises naming `what` and the end
    of its output."""
    done = subprocess.run(
        cmd, env=env, capture_output=True, text=True, timeout=timeout, stdin=stdin, input=input
    )
    if check and done.returncode != 0:
        tail = (done.stderr or done.stdout)[-3000:]
        raise RuntimeError(f"{what} failed ({done.returncode}):\n{tail}")
    return done


def compose_command(docker: Docker) -> list[str]:
    if docker.run(["compose", "version"], check=False).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise RuntimeError("neither `docker compose` nor `docker-compose` is installed")


@dataclass
class Daemon:
    docker: Docker
    pid: int | None = None  # set when we started it
    base: Path | None = None
    log_file: Path | None = None
    _proc: subprocess.Popen | None = field(default=None, repr=False)

    def stop(self) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGTERM)
            try:
                self._proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait(timeout=30)
        self._proc = None


def ensure_daemon(base: Path, *, timeout: float = 60) -> Daemon:
    """A daemon that answers: the configured one, or our own dockerd under `base`."""
    for host in (
        os.environ.get("DOCKER_HOST"),
        "unix:///var/run/docker.sock",
        f"unix://{base}/docker.sock",
    ):
        if host and (
            host != "unix:///var/run/docker.sock" or Path("/var/run/docker.sock").exists()
        ):
            d = Docker(host)
            if (host.startswith("unix://") and not Path(host[7:]).exists()) or not d.answers():
                continue
            return Daemon(d)
    dockerd = shutil.which("dockerd")
    if not dockerd:
        raise RuntimeError(
            "no Docker engine answers and dockerd is not installed (apt-get install docker.io)"
        )
    base.mkdir(parents=True, exist_ok=True)
    log_file = base / "dockerd.log"
    sock = base / "docker.sock"
    with open(log_file, "ab") as logf:
        proc = subprocess.Popen(
            [
                dockerd,
                "--data-root",
                str(base / "root"),
                "--exec-root",
                str(base / "exec"),
                "-H",
                f"unix://{sock}",
                "-p",
                str(base / "dockerd.pid"),
            ],
            stdout=logf,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    daemon = Daemon(
        Docker(f"unix://{sock}"), pid=proc.pid, base=base, log_file=log_file, _proc=proc
    )
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"dockerd exited ({proc.returncode}); see {log_file}")
        if sock.exists() and daemon.docker.answers():
            return daemon
        time.sleep(0.5)
    daemon.stop()
    raise TimeoutError(f"dockerd did not answer within {timeout:.0f} s; see {log_file}")

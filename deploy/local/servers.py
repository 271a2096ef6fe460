"""Throw-away servers for tests and benchmarks: a password-protected redis-server and a
PostgreSQL cluster (Debian's package) on a temp dir and a free port. Callers stop them."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path

import redis


class RedisServer:
    def __init__(self, base: Path, port: int) -> None:
        self.port = port
        self.password = secrets.token_urlsafe(16)
        base.mkdir(parents=True, exist_ok=True)
        conf = base / "redis.conf"
        conf.write_text(
            f'bind 127.0.0.1\nport {port}\ndir {base}\nsave ""\nappendonly no\n'
            f"user default off\nuser node on >{self.password} ~* &* +@all\n"
        )
        self.proc = subprocess.Popen(
            [shutil.which("redis-server") or "redis-server", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        end = time.monotonic() + 20
        while True:
            try:
                self.client().ping()
                break
            except redis.RedisError:
                if time.monotonic() > end or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"redis-server on {port} did not start") from None
                time.sleep(0.1)

    @property
    def url(self) -> str:
        return f"redis://node:{self.password}@127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        from node.contract.clients import redis_client

        return redis_client(self.url)

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            self.proc.wait(timeout=10)


def _pg_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not found:
        raise RuntimeError("PostgreSQL server binaries not found (apt-get install postgresql)")
    return found[-1].parent


class PostgresServer:
    """A throw-away PostgreSQL cluster on a temp dir and a free port (Debian's package)."""

    def __init__(self, base: Path, port: int) -> None:
        self.port = port
        self.base = base
        self.password = secrets.token_urlsafe(12)
        self.data = base / "pgdata"
        base.mkdir(parents=True, exist_ok=True)
        self._as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if os.geteuid() == 0:
            shutil.chown(base, "postgres", "postgres")
        pwfile = base / "pw"
        pwfile.write_text(self.password)
        if os.geteuid() == 0:
            shutil.chown(pwfile, "postgres", "postgres")
        bindir = _pg_bin()
        self._pg_ctl = str(bindir / "pg_ctl")
        subprocess.run(
            [
                *self._as_user,
                str(bindir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "partyline",
                "--auth=scram-sha-256",
                f"--pwfile={pwfile}",
                "-E",
                "UTF8",
            ],
            check=True,
            capture_output=True,
        )
        subprocess.run(
            [
                *self._as_user,
                self._pg_ctl,
                "-D",
                str(self.data),
                "-l",
                str(base / "pg.log"),
                "-w",
                "-o",
                f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off",
                "start",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://partyline:{self.password}@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        subprocess.run(
            [*self._as_user, self._pg_ctl, "-D", str(self.data), "-m", "immediate", "stop"],
            capture_output=True,
            timeout=60,
        )

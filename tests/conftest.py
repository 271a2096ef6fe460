"""Shared fixtures: real redis-server processes, stopped even when a test fails."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import redis

from deploy.local.ports import PortAllocator

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def ports() -> PortAllocator:
    return PortAllocator()


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
        return redis.Redis.from_url(self.url)

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            self.proc.wait(timeout=10)


@pytest.fixture()
def redis_server(tmp_path, ports):
    server = RedisServer(tmp_path / "redis", ports.one())
    try:
        yield server
    finally:
        server.stop()

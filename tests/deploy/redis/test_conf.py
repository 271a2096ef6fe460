"""deploy/redis: the one Redis configuration of every deployment, rendered and run for real."""

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

from deploy.redis import RedisTls, render_redis_conf

NODE_PW = secrets.token_urlsafe(18)
COORD_PW = secrets.token_urlsafe(18)


@contextlib.contextmanager
def _running(tmp_path, port: int, **render):
    """A redis-server started from the rendered template (plain TCP on loopback), killed after."""
    (tmp_path / "data").mkdir()
    conf = tmp_path / "redis.conf"
    conf.write_text(
        render_redis_conf(
            port=port,
            data_dir=tmp_path / "data",
            node_password=NODE_PW,
            coordinator_password=COORD_PW,
            tls=None,
            **render,
        )
    )
    proc = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        end = time.monotonic() + 20
        while True:
            try:
                redis.Redis(port=port, username="node", password=NODE_PW).ping()
                break
            except redis.ConnectionError:
                assert proc.poll() is None, "redis-server refused the rendered configuration"
                assert time.monotonic() < end, "redis-server did not start"
                time.sleep(0.1)
        yield port
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@pytest.fixture
def party_redis(tmp_path, ports):
    with _running(tmp_path, ports.one()) as port:
        yield port


def test_the_rendered_server_keeps_every_task_and_lets_each_user_do_its_part(party_redis):
    node = redis.Redis(port=party_redis, username="node", password=NODE_PW)
    assert node.config_get("appendonly") == {"appendonly": "yes"}
    assert node.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
    node.set("node_executed:exe-1.alice", "1")
    with pytest.raises(redis.AuthenticationError):  # the default user is off
        redis.Redis(port=party_redis, password=NODE_PW).ping()
    coord = redis.Redis(port=party_redis, username="coordinator", password=COORD_PW)
    coord.lpush("secretflow_queue", "task")
    coord.xadd("task_status_stream", {"event": "{}"})
    assert node.config_get("maxmemory") == {"maxmemory": str(1024**3)}  # 1gb, the default
    for attempt in (
        lambda: coord.get("node_executed:exe-1.alice"),
        lambda: coord.eval("return 1", 0),
        lambda: coord.keys("*"),
        lambda: coord.info(),  # describes the node's whole keyspace and clients
    ):
        with pytest.raises(redis.exceptions.NoPermissionError):
            attempt()


def test_tls_is_the_only_listener_when_certificates_are_given(tmp_path):
    tls = RedisTls(tmp_path / "alice.crt", tmp_path / "alice.key", tmp_path / "ca.crt")
    conf = render_redis_conf(
        port=6380, data_dir=tmp_path, node_password=NODE_PW, coordinator_password=COORD_PW, tls=tls
    )
    lines = conf.splitlines()
    assert "port 0" in lines and "tls-port 6380" in lines
    assert f"tls-ca-cert-file {tmp_path / 'ca.crt'}" in lines
    assert "{" not in conf  # nothing left unrendered


@pytest.mark.parametrize(
    ("node_pw", "coord_pw", "problem"),
    [
        ("short", COORD_PW, "node password: 16-128 characters"),
        (NODE_PW, "two words " + COORD_PW, "coordinator password: 16-128 characters"),
        (NODE_PW + "#x", COORD_PW, "node password"),
        (NODE_PW, NODE_PW, "different passwords"),
    ],
)
def test_a_password_that_would_break_the_acl_line_is_refused(tmp_path, node_pw, coord_pw, problem):
    with pytest.raises(ValueError, match=problem):
        render_redis_conf(
            port=6379,
            data_dir=tmp_path,
            node_password=node_pw,
            coordinator_password=coord_pw,
            tls=None,
        )


def test_the_template_is_the_only_redis_configuration_of_the_deployments():
    """make demo renders the template; no other deployment code writes its own ACL lines."""
    root = Path(__file__).resolve().parents[3] / "deploy"
    writers = [
        p.relative_to(root.parent)
        for p in root.rglob("*.py")
        if "user coordinator on" in p.read_text() or "maxmemory-policy" in p.read_text()
    ]
    assert writers == []


def test_a_full_redis_refuses_writes_with_a_clear_error_and_evicts_nothing(tmp_path, ports):
    with _running(tmp_path, ports.one(), maxmemory="2mb") as port:
        node = redis.Redis(port=port, username="node", password=NODE_PW)
        node.set("first", "kept")
        written = 0
        with pytest.raises(redis.exceptions.OutOfMemoryError, match="maxmemory"):
            while written < 10_000:
                node.xadd("task_status_stream", {"event": "x" * 1024})
                written += 1
        assert node.get("first") == b"kept"  # nothing was evicted to make room
        assert 0 < node.xlen("task_status_stream") == written


@pytest.mark.parametrize("size", ["0mb", "12", "1tb", "-1gb", "1gb\nuser x on"])
def test_a_maxmemory_that_is_not_a_size_is_refused(tmp_path, size):
    with pytest.raises(ValueError, match="maxmemory"):
        render_redis_conf(
            port=6380,
            data_dir=tmp_path,
            node_password=NODE_PW,
            coordinator_password=COORD_PW,
            tls=None,
            maxmemory=size,
        )

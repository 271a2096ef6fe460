"""A local (native, no Docker) federation: per party a redis-server with a password, a Ray head
and a Celery worker, each with its own ports, certificates, data root and state directory.

Used by the test fixtures, the benchmarks and `make demo`. Every process is started in its own
session and stopped by its own PIDs; its output goes to a size-capped log in the party's folder
(deploy/local/logs.py: `redis.log`, `worker.log`; Ray's own logs rotate at the same size). The CA
directory holds the certificates and the CA's revocation list, which every node checks
(`NODE_CRL_FILE`), as on hosts the Ansible role installs.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from certs.authority import Authority, init_federation, party_cert_name, party_key_name
from certs.revocation import CRL_FILE, ensure_crl
from deploy.local.logs import CappedLog, spawn
from deploy.local.ports import PortAllocator
from deploy.redis import RedisTls, render_redis_conf
from node.logfiles import LOG_MAX_BYTES

REPO_ROOT = Path(__file__).resolve().parents[2]
# Ray's own logs (in its temp dir) rotate at the node's size with one older copy, not Ray's
# default of 512 MB and five
RAY_LOG_ROTATION = {
    "RAY_ROTATION_MAX_BYTES": str(LOG_MAX_BYTES),
    "RAY_ROTATION_BACKUP_COUNT": "1",
}


@dataclass(frozen=True)
class FixedPorts:
    redis: int
    fed: range
    spu: range


@dataclass
class PartyNode:
    name: str
    base: Path
    peers: list[str]
    ports: dict[str, int]
    worker_ports: range
    fed_ports: range
    spu_ports: range
    password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    coordinator_password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    certs_dir: Path | None = None
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    logs: dict[str, CappedLog] = field(default_factory=dict)  # what writes each proc's log
    redis_tls: bool = True
    worker_started_at: float = 0.0  # time.time() of the last start_worker
    _next_job_port: int = 0
    peer_probes: list[tuple[str, int]] = field(default_factory=list)  # (peer, its probe port)

    @property
    def data_root(self) -> Path:
        return self.base / "data"

    @property
    def state_dir(self) -> Path:
        return self.base / "state"

    @property
    def broker_url(self) -> str:
        scheme = "rediss" if self.redis_tls else "redis"
        return f"{scheme}://node:{self.password}@127.0.0.1:{self.ports['redis']}/0"

    @property
    def redis_ca_file(self) -> Path | None:
        return self.certs_dir / "ca.crt" if self.redis_tls and self.certs_dir else None

    @property
    def crl_file(self) -> Path:
        assert self.certs_dir is not None
        return self.certs_dir / CRL_FILE

    @property
    def ray_address(self) -> str:
        return f"127.0.0.1:{self.ports['ray']}"

    def env(self, **overrides: str) -> dict[str, str]:
        assert self.certs_dir is not None
        env = {
            "NODE_PARTY": self.name,
            "NODE_BROKER_URL": self.broker_url,
            "NODE_DATA_ROOT": str(self.data_root),
            "NODE_STATE_DIR": str(self.state_dir),
            "NODE_CERT_FILE": str(self.certs_dir / party_cert_name(self.name)),
            "NODE_KEY_FILE": str(self.certs_dir / party_key_name(self.name)),
            "NODE_CA_FILE": str(self.certs_dir / "ca.crt"),
            "NODE_CRL_FILE": str(self.crl_file),
            "NODE_ALLOWED_PEERS": ",".join(self.peers),
            "NODE_TRUSTED_SIGNERS": str(self.certs_dir / "coordinator.crt"),
            "NODE_FED_LISTEN_HOST": "127.0.0.1",
            "NODE_SPU_LISTEN_HOST": "127.0.0.1",
            "NODE_RAY_ADDRESS": self.ray_address,
            "NODE_RAY_NODE_IP": "127.0.0.1",
            "NODE_RAY_TEMP_DIR": f"/tmp/ray-{self.name}-{self.ports['ray']}",
            "NODE_RAY_NODE_MANAGER_PORT": str(self.ports["node_manager"]),
            "NODE_RAY_OBJECT_MANAGER_PORT": str(self.ports["object_manager"]),
            "NODE_RAY_RUNTIME_ENV_AGENT_PORT": str(self.ports["runtime_env_agent"]),
            "NODE_RAY_MIN_WORKER_PORT": str(self.worker_ports.start),
            "NODE_RAY_MAX_WORKER_PORT": str(self.worker_ports.stop - 1),
            "NODE_WORKER_NAME": f"{self.name}-local",
            # the mTLS probe (python -m node probe) and where the peers' answer: health's links
            "NODE_PROBE_PORT": str(self.ports["probe"]),
            "NODE_PROBE_LISTEN_HOST": "127.0.0.1",
            "NODE_PEER_PROBES": ",".join(f"{p}=127.0.0.1:{port}" for p, port in self.peer_probes),
        }
        if self.redis_ca_file:
            env["NODE_REDIS_CA_FILE"] = str(self.redis_ca_file)
        env.update(overrides)
        return env

    def settings(self, **overrides: str):
        from node.settings import NodeSettings

        env = self.env(**overrides)
        return NodeSettings(**{k.removeprefix("NODE_").lower(): v for k, v in env.items()})

    def redis(self) -> redis.Redis:
        from node.contract.clients import redis_client

        return redis_client(self.broker_url, self.redis_ca_file)

    @property
    def signing(self):
        """The coordinator's signing identity (only it may send tasks to a node)."""
        from node.contract.clients import SigningConfig

        assert self.certs_dir is not None
        return SigningConfig(
            key_file=self.certs_dir / "coordinator.key",
            cert_file=self.certs_dir / "coordinator.crt",
            trusted=str(self.certs_dir / "*.crt"),
        )

    def celery_client(self, *, signed: bool = True):
        from node.contract.clients import client_app

        return client_app(
            self.broker_url,
            self.broker_url,
            self.redis_ca_file,
            signing=self.signing if signed else None,
        )

    def job_ports(self) -> tuple[int, int]:
        """A fresh (fed, spu) port pair for the next job (SPU ports are not reusable):
        round-robin through this party's ranges, skipping ports that are busy right now."""
        from deploy.local.ports import port_free

        for _ in range(len(self.fed_ports)):
            i = self._next_job_port
            self._next_job_port = (i + 1) % len(self.fed_ports)
            if port_free(self.fed_ports[i]) and port_free(self.spu_ports[i]):
                return self.fed_ports[i], self.spu_ports[i]
        raise RuntimeError(f"{self.name}: every job port is busy")


def _redis_conf(node: PartyNode) -> str:
    tls = None
    if node.redis_tls:
        assert node.certs_dir is not None
        tls = RedisTls(
            cert_file=node.certs_dir / party_cert_name(node.name),
            key_file=node.certs_dir / party_key_name(node.name),
            ca_file=node.certs_dir / "ca.crt",
        )
    return render_redis_conf(
        port=node.ports["redis"],
        data_dir=node.base / "redis",
        node_password=node.password,
        coordinator_password=node.coordinator_password,
        tls=tls,
    )


def _stop(node: PartyNode, name: str, timeout: float = 20.0) -> None:
    """Stop `node`'s process `name` and wait until its last output is in its log."""
    proc = node.procs.pop(name, None)
    if proc is not None:
        _kill_session(proc, timeout)
    log = node.logs.pop(name, None)
    if log is not None:
        log.wait()


def _kill_session(proc: subprocess.Popen, timeout: float = 20.0) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=timeout)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        proc.wait(timeout=5)


class LocalFederation:
    def __init__(
        self,
        base: Path,
        parties: list[str],
        *,
        seed: int | None = None,
        redis_tls: bool = True,
        node_env: dict[str, str] | None = None,
        log=print,
        fixed_ports: dict[str, FixedPorts] | None = None,
    ) -> None:
        """`fixed_ports`: the Redis port and fed/SPU ranges of some parties, as a registry
        declares them (`make demo` takes examples/topology.yaml's); the other ports are
        allocated and never collide with these."""
        self.base = Path(base)
        self.parties = parties
        self.alloc = PortAllocator(seed=seed)
        fixed = fixed_ports or {}
        for f in fixed.values():
            self.alloc.taken.update([f.redis, *f.fed, *f.spu])
        self.node_env = node_env or {}
        self.log = log
        self.certs_dir = self.base / "certs"
        self.nodes: dict[str, PartyNode] = {}
        for name in parties:
            ports = {
                k: self.alloc.one()
                for k in (
                    "redis",
                    "probe",
                    "ray",
                    "node_manager",
                    "object_manager",
                    "runtime_env_agent",
                )
            }
            f = fixed.get(name)
            if f is not None:
                ports["redis"] = f.redis
            self.nodes[name] = PartyNode(
                name=name,
                base=self.base / name,
                peers=[p for p in parties if p != name],
                ports=ports,
                worker_ports=self.alloc.block(64),
                fed_ports=f.fed if f else self.alloc.block(32),
                spu_ports=f.spu if f else self.alloc.block(32),
                certs_dir=self.certs_dir,
                redis_tls=redis_tls,
            )
        for node in self.nodes.values():
            node.peer_probes = [(p, self.nodes[p].ports["probe"]) for p in node.peers]

    # --- lifecycle ------------------------------------------------------------------------
    def create_certs(self) -> None:
        # the coordinator signs tasks with its own identity from the same CA; the CA's
        # revocation list is made with them (every node's NODE_CRL_FILE)
        authority = init_federation(self.certs_dir, [*self.parties, "coordinator"])
        ensure_crl(self.certs_dir, authority)

    def renew_crl(self) -> bool:
        """Write the CA's revocation list again when it is due (`ensure_crl`: 30 days before its
        90 run out), as converging does on hosts: a federation left running outlives it, and
        a node fails closed on a list out of date. True when written."""
        return ensure_crl(self.certs_dir, Authority.load(self.certs_dir))[1]

    def start_redis(self, node: PartyNode) -> None:
        (node.base / "redis").mkdir(parents=True, exist_ok=True)
        conf = node.base / "redis.conf"
        conf.write_text(_redis_conf(node))
        conf.chmod(0o600)
        node.procs["redis"], node.logs["redis"] = spawn(
            [shutil.which("redis-server") or "redis-server", str(conf)], node.base / "redis.log"
        )
        self._wait(
            lambda: self._redis_ok(node), 30, f"{node.name}'s Redis on port {node.ports['redis']}"
        )

    @staticmethod
    def _redis_ok(node: PartyNode) -> bool:
        try:
            return bool(node.redis().ping())
        except redis.RedisError:
            return False

    def start_ray(self, node: PartyNode) -> None:
        env = dict(os.environ, **node.env(**self.node_env), **RAY_LOG_ROTATION)
        done = subprocess.run(
            [sys.executable, "-m", "node", "ray-head", "start"],
            env=env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=240,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{node.name}'s Ray head did not start:\n{done.stderr[-3000:]}")

    def start_probe(self, node: PartyNode) -> None:
        """The party's mTLS probe: its peers' health checks handshake with it (the parties
        page's "links to peers")."""
        env = dict(os.environ, **node.env(**self.node_env))
        node.procs["probe"], node.logs["probe"] = spawn(
            [sys.executable, "-m", "node", "probe"], node.base / "probe.log", env=env, cwd=REPO_ROOT
        )

    def start_worker(self, node: PartyNode, **extra_env: str) -> None:
        env = dict(os.environ, **node.env(**{**self.node_env, **extra_env}))
        node.procs["worker"], node.logs["worker"] = spawn(
            [sys.executable, "-m", "node", "worker", "--loglevel=info"],
            node.base / "worker.log",
            env=env,
            cwd=REPO_ROOT,
        )
        node.worker_started_at = time.time()

    def wait_workers(self, timeout: float = 120) -> None:
        from node.contract import TASK_HELLO, WEB_QUEUE

        for node in self.nodes.values():
            app = node.celery_client()
            end = time.monotonic() + timeout
            while True:
                if node.procs["worker"].poll() is not None:
                    raise RuntimeError(
                        f"{node.name}'s worker exited; see {node.base / 'worker.log'}"
                    )
                try:
                    app.send_task(TASK_HELLO, queue=WEB_QUEUE).get(timeout=5)
                    break
                except Exception:
                    if time.monotonic() > end:
                        raise TimeoutError(
                            f"{node.name}'s worker did not answer within {timeout}s"
                        ) from None
            self._wait_sf_worker(node, end)

    def _wait_sf_worker(self, node: PartyNode, end: float) -> None:
        """The SecretFlow worker is up once it writes a heartbeat newer than its start.

        (Not `control.ping`: replies are signed with the party's key, which a client only
        verifies when that certificate is in its trusted store.)
        """
        import datetime as dt

        from node.contract import HEARTBEAT_KEY, WorkerHeartbeat

        since = dt.datetime.fromtimestamp(node.worker_started_at - 1, dt.UTC)
        client = node.redis()
        while time.monotonic() < end:
            if node.procs["worker"].poll() is not None:
                raise RuntimeError(f"{node.name}'s worker exited; see {node.base / 'worker.log'}")
            try:
                raw = client.get(HEARTBEAT_KEY.format(role="sf"))
            except Exception:
                raw = None
            if raw and WorkerHeartbeat.from_json(raw).at >= since:
                return
            time.sleep(0.5)
        raise TimeoutError(f"{node.name}'s SecretFlow worker wrote no heartbeat since it started")

    def start(self) -> LocalFederation:
        self.base.mkdir(parents=True, exist_ok=True)
        self.create_certs()
        for node in self.nodes.values():
            node.data_root.mkdir(parents=True, exist_ok=True)
            node.state_dir.mkdir(parents=True, exist_ok=True)
            self.log(f"starting {node.name}: Redis on {node.ports['redis']}")
            self.start_redis(node)
        for node in self.nodes.values():
            self.log(f"starting {node.name}: Ray head on {node.ray_address}")
            self.start_ray(node)
        for node in self.nodes.values():
            self.log(f"starting {node.name}: Celery worker and mTLS probe")
            self.start_worker(node)
            self.start_probe(node)
        self.log("waiting for the workers to answer")
        self.wait_workers()
        return self

    def stop_worker(self, node: PartyNode) -> None:
        _stop(node, "worker", timeout=30)

    def stop(self) -> None:
        from node.rayhead import head

        for node in self.nodes.values():
            self.stop_worker(node)
            _stop(node, "probe")
        for node in self.nodes.values():
            with contextlib.suppress(Exception):
                settings = node.settings()
                head.stop(settings)
                shutil.rmtree(head.temp_dir(settings), ignore_errors=True)  # in /tmp
        for node in self.nodes.values():
            _stop(node, "redis")

    def __enter__(self) -> LocalFederation:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()

    @staticmethod
    def _wait(pred, timeout: float, what: str) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if pred():
                return
            time.sleep(0.2)
        raise TimeoutError(f"timed out waiting for {what}")

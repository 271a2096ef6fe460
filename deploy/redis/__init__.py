"""Redis configuration shared by every deployment (local demo, compose, Ansible): the
coordinator's ACL (`coordinator.acl`) and the server configuration (`redis.conf.j2`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ACL_FILE = Path(__file__).with_name("coordinator.acl")
CONF_TEMPLATE = Path(__file__).with_name("redis.conf.j2")
# a party's Redis holds queues, results (7 days), the status stream (≤ 100,000 entries) and
# heartbeats: 1 GB is ample; full means a clear OOM error on write, never an eviction
DEFAULT_MAXMEMORY = "1gb"
_MEMORY_RE = re.compile(r"[1-9][0-9]{0,5}(mb|gb)")
# a password goes into an ACL line (`>password`): no spaces, no characters Redis's config
# parser would split or quote, and long enough not to be guessed
_PASSWORD_RE = re.compile(r"[A-Za-z0-9_.~+=/-]{16,128}")


def coordinator_acl_rules(path: Path = ACL_FILE) -> str:
    """The coordinator user's ACL rules (without user name and password), on one line."""
    rules: list[str] = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            rules.extend(line.split())
    return " ".join(rules)


@dataclass(frozen=True)
class RedisTls:
    cert_file: Path
    key_file: Path
    ca_file: Path


def render_redis_conf(
    *,
    port: int,
    data_dir: Path | str,
    node_password: str,
    coordinator_password: str,
    tls: RedisTls | None,
    bind: str = "127.0.0.1",
    maxmemory: str = DEFAULT_MAXMEMORY,
) -> str:
    """One party's redis.conf from the shared template; refuses a value that would make a
    broken or unsafe file (a password Redis would split, a port out of range)."""
    import jinja2

    for what, password in (
        ("node password", node_password),
        ("coordinator password", coordinator_password),
    ):
        if not _PASSWORD_RE.fullmatch(password):
            raise ValueError(
                f"Redis {what}: 16-128 characters of letters, digits and _.~+=/- "
                "(it is written into an ACL line)"
            )
    if node_password == coordinator_password:
        raise ValueError("Redis: the node and the coordinator users need different passwords")
    if not _MEMORY_RE.fullmatch(maxmemory):
        raise ValueError(f"Redis maxmemory {maxmemory!r}: a size such as 512mb or 2gb")
    if not 0 < port < 65536:
        raise ValueError(f"Redis port {port} is out of range")
    env = jinja2.Environment(
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True, autoescape=False
    )
    template = env.from_string(CONF_TEMPLATE.read_text())
    return template.render(
        redis_bind=bind,
        redis_port=port,
        redis_tls=tls is not None,
        redis_tls_cert_file=tls.cert_file if tls else "",
        redis_tls_key_file=tls.key_file if tls else "",
        redis_tls_ca_file=tls.ca_file if tls else "",
        redis_dir=data_dir,
        redis_node_password=node_password,
        redis_coordinator_password=coordinator_password,
        redis_coordinator_acl=coordinator_acl_rules(),
        redis_maxmemory=maxmemory,
    )

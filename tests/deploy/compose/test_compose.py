"""The compose simulation, really run: images built offline, `up`, a PSI through the
coordinator's API, the isolation between parties seen from inside the containers, `down -v`."""

from __future__ import annotations

import csv
import io
import json
import time

import httpx
import pytest
from rich.console import Console

from deploy.compose.demo import DATA, write_samples
from deploy.psi_demo import psi_body, run_psi

pytestmark = pytest.mark.compose

CONNECT = """
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
try:
    with socket.create_connection((host, port), timeout=5) as s:
        s.settimeout(5)
        try:
            data = s.recv(64)
        except OSError:
            data = b""
        print("answered", data.decode(errors="replace"))
except OSError as exc:
    print("no answer", type(exc).__name__)
"""

# binds the first free port of a range, prints it, and answers one connection from the
# background (stdout closed, so `docker exec` returns once the port is printed)
LISTEN_ONCE = """
import os, socket, sys
first, last = int(sys.argv[1]), int(sys.argv[2])
for port in range(last, first - 1, -1):
    s = socket.socket()
    try:
        s.bind(("0.0.0.0", port))
    except OSError:
        s.close()
        continue
    s.listen()
    break
print(port, flush=True)
if os.fork() == 0:
    fd = os.open(os.devnull, os.O_RDWR)
    for std in (0, 1, 2):
        os.dup2(fd, std)
    s.settimeout(60)
    c, _ = s.accept()
    c.sendall(b"fed-of-alice")
    c.close()
os._exit(0)
"""


def reach(stack, service: str, host: str, port: int) -> str:
    return stack.exec(service, "python", "-c", CONNECT, host, str(port)).stdout.strip()


def party(stack, name: str):
    return next(p for p in stack.generated.parties if p.name == name)


def test_a_psi_through_the_coordinator_gives_the_plain_python_intersection(stack):
    ids = write_samples(stack, ["alice", "bob"], 1500)
    token = stack.generated.api_token
    with httpx.Client(
        base_url=stack.ui_url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as http:
        job, _elapsed = run_psi(http, psi_body("alice", "bob", "RR22"), Console(), lambda m: None)
    assert job["status"] == "SUCCEEDED", job.get("error")
    out = stack.exec("alice-node", "cat", f"{DATA}/out/demo-intersection.csv").stdout
    got = sorted(row["uid"] for row in csv.DictReader(io.StringIO(out)))
    want = sorted(f"u{i:09d}" for i in set(ids["alice"]) & set(ids["bob"]))
    assert got == want and len(want) == 750
    assert job["result"]["intersection_count"] == len(want)
    at_bob = stack.exec("bob-node", "sh", "-c", f"ls -A {DATA}/out 2>/dev/null || true").stdout
    assert at_bob.strip() == ""  # only the receiver learns the rows


def test_from_bobs_node_alices_redis_and_ray_do_not_answer_but_her_link_ports_do(stack):
    alice = party(stack, "alice")
    # alice's own containers: not even a name on bob's network
    assert reach(stack, "bob-node", "alice-redis", 6379).startswith("no answer")
    assert reach(stack, "bob-node", "alice-node", 6379).startswith("no answer")  # Ray GCS
    # through bob's gateway only the link ports lead to alice: not her Redis or Ray ports
    for port in (alice.broker_port, 6379):  # Redis, Ray GCS
        assert reach(stack, "bob-node", alice.link_host, port).startswith("no answer"), port
    # a fed port (open only during a job: this stands in for one) and the probe do answer. The
    # warm session of the PSI test may hold some fed ports: the listener takes a free one
    fed = int(
        stack.exec("alice-node", "python", "-c", LISTEN_ONCE, *map(str, alice.fed_ports)).stdout
    )
    assert reach(stack, "bob-node", alice.link_host, fed) == "answered fed-of-alice"
    assert reach(stack, "bob-node", alice.link_host, alice.probe_wan_port).startswith("answered")


def test_each_node_checks_its_link_to_the_other_and_the_certificate_it_names(stack):
    for me, peer in (("alice", "bob"), ("bob", "alice")):
        report = json.loads(
            stack.exec(f"{me}-node", "python", "-m", "node", "health", "--json").stdout
        )
        (link,) = report["links"]
        assert (link["peer"], link["outcome"]) == (peer, "ok"), link
    # alice's entry for bob points at alice's own probe: the check names who answered
    alice = party(stack, "alice")
    done = stack.exec(
        "alice-node",
        "env",
        f"NODE_PEER_PROBES=bob={alice.link_host}:{alice.probe_wan_port}",
        "python",
        "-m",
        "node",
        "health",
        "--json",
        check=False,
    )
    assert done.returncode == 1
    (link,) = json.loads(done.stdout)["links"]
    assert link["outcome"] == "wrong_party" and "alice" in link["message"], link


def test_from_the_coordinator_each_partys_redis_answers_only_its_acl_user(stack):
    script = """
import sys, redis
host, port, password = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def client(**kw):
    return redis.Redis(host=host, port=port, ssl=True, ssl_ca_certs="/etc/partyline/certs/ca.crt",
                       ssl_cert_reqs="required", socket_timeout=5, **kw)
out = []
try:
    client().ping(); out.append("anonymous ok")
except redis.RedisError as exc:
    out.append("anonymous refused")
c = client(username="coordinator", password=password)
out.append("coordinator " + str(c.ping()))
for cmd in (("CONFIG", "GET", "*"), ("KEYS", "*"), ("FLUSHALL",)):
    try:
        c.execute_command(*cmd); out.append(cmd[0] + " allowed")
    except redis.exceptions.NoPermissionError:
        out.append(cmd[0] + " refused")
print(";".join(out))
"""
    secrets = stack.generated.dir / "coordinator" / "secrets"
    for p in stack.generated.parties:
        password = (secrets / f"PARTYLINE_{p.name.upper()}_REDIS_PASSWORD").read_text().strip()
        out = stack.exec(
            "coordinator", "python", "-c", script, p.gateway, str(p.broker_port), password
        )
        assert out.stdout.strip() == (
            "anonymous refused;coordinator True;CONFIG refused;KEYS refused;FLUSHALL refused"
        ), p.name


def test_metrics_answer_inside_the_containers_only(stack):
    fetch = "import urllib.request as u; print(u.urlopen('http://127.0.0.1:9464/metrics', timeout=5).read().decode())"
    assert "partyline_coordinator_jobs" in stack.exec("coordinator", "python", "-c", fetch).stdout
    deadline = time.monotonic() + 30
    while "partyline_node_up 1.0" not in (
        text := stack.exec("alice-node", "python", "-c", fetch, check=False).stdout
    ):
        assert time.monotonic() < deadline, text[-500:]
        time.sleep(1)
    with pytest.raises(httpx.HTTPError):
        httpx.get(stack.ui_url.rsplit(":", 1)[0] + ":9464/metrics", timeout=3)

"""site.yml on three fresh hosts (alice, bob, the coordinator), then what an operator checks: a PSI
through the provisioned coordinator, a second converge and check mode that change nothing, the
firewall seen from the other hosts, and one party's certificate rotated without touching the
other. The tests run in file order on one converged federation (conftest.federation)."""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

import httpx
import pytest
import yaml
from cryptography import x509
from rich.console import Console

from deploy.psi_demo import psi_body, run_psi, sample_csv, sample_ids
from tests.deploy.ansible.conftest import EXAMPLE_REGISTRY, HOSTS, Federation

pytestmark = [pytest.mark.ansible, pytest.mark.timeout(2400)]

DATA = "/srv/partyline/data"
UNITS = [
    "partyline-redis",
    "partyline-ray-head",
    "partyline-sf-worker",
    "partyline-web-worker",
    "partyline-probe",
]
CONNECT = """
import json, socket, sys
out = {}
for port in sys.argv[2:]:
    try:
        socket.create_connection((sys.argv[1], int(port)), timeout=5).close()
        out[port] = "answered"
    except OSError as exc:
        out[port] = "no answer " + type(exc).__name__
print(json.dumps(out))
"""


def port_pool(topology: Path, party: str, key: str) -> range:
    """A party's port pool ("first-last") as the topology file gives it."""
    first, last = yaml.safe_load(topology.read_text())["parties"][party][key].split("-")
    return range(int(first), int(last) + 1)


def psi(fed: Federation, rows: int, output: str) -> tuple[dict, list[str], list[str]]:
    """Sample tables at alice and bob, one RR22 PSI through the API: (job, rows at alice, want)."""
    ids = sample_ids(["alice", "bob"], rows)
    for party in ("alice", "bob"):
        fed.sandbox.exec(
            party,
            "runuser", "-u", "partyline", "--", "sh", "-c", f"cat > {DATA}/customers.csv",
            input=sample_csv("uid", ids[party], seed=rows),
        )  # fmt: skip
    with httpx.Client(
        base_url=fed.coordinator_url,
        headers={"Authorization": f"Bearer {fed.api_token}"},
        timeout=30,
    ) as http:
        job, _ = run_psi(http, psi_body("alice", "bob", "RR22", output=output), Console(), print)
    assert job["status"] == "SUCCEEDED", job.get("error")
    text = fed.sandbox.exec("alice", "cat", f"{DATA}/{output}").stdout
    got = sorted(row["uid"] for row in csv.DictReader(io.StringIO(text)))
    want = sorted(f"u{i:09d}" for i in set(ids["alice"]) & set(ids["bob"]))
    return job, got, want


def reach(fed: Federation, source: str, target: str, *ports: int) -> dict[int, bool]:
    """port → whether a TCP connection from `source` to `target`'s address is accepted."""
    address = fed.sandbox.addresses[target]
    out = fed.sandbox.exec(source, "python3", "-c", CONNECT, address, *map(str, ports)).stdout
    return {int(p): v == "answered" for p, v in json.loads(out).items()}


def listening(fed: Federation, host: str) -> set[int]:
    """Every TCP port `host` listens on beyond loopback."""
    out = fed.sandbox.exec(host, "ss", "-Hltn").stdout
    ports = set()
    for line in out.splitlines():
        local = line.split()[3]
        address, _, port = local.rpartition(":")
        if not address.startswith(("127.", "[::1]")):
            ports.add(int(port))
    return ports


def started(fed: Federation, host: str) -> dict[str, str]:
    """unit → when its main process started (monotonic µs): changes only on a (re)start."""
    out = fed.sandbox.exec(
        host, "systemctl", "show", "-p", "Id", "-p", "ExecMainStartTimestampMonotonic", *UNITS
    ).stdout
    blocks = [
        dict(line.split("=", 1) for line in b.splitlines()) for b in out.strip().split("\n\n")
    ]
    return {b["Id"]: b["ExecMainStartTimestampMonotonic"] for b in blocks}


def test_a_psi_between_the_provisioned_parties_gives_the_plain_python_intersection(federation):
    job, got, want = psi(federation, 1000, "out/first.csv")
    assert got == want and len(want) == 500
    assert job["result"]["intersection_count"] == 500
    at_bob = federation.sandbox.exec("bob", "sh", "-c", f"ls -A {DATA}/out 2>/dev/null || true")
    assert at_bob.stdout.strip() == ""  # only the receiver learns the rows
    print(f"first converge: {federation.first.seconds:.0f} s, {federation.first.recap}")


def test_a_second_converge_changes_nothing(federation):
    run = federation.playbook("site.yml")
    assert run.returncode == 0, run.failure()
    assert set(run.recap) == set(HOSTS)
    changed = {host: r["changed"] for host, r in run.recap.items()}
    assert changed == dict.fromkeys(HOSTS, 0), run.output[-6000:]
    print(f"second converge: {run.seconds:.0f} s, {run.recap}")


def test_check_mode_on_a_converged_federation_reports_no_change(federation):
    run = federation.playbook("site.yml", "--check", "--diff")
    assert run.returncode == 0, run.failure()
    assert {h: r["changed"] for h, r in run.recap.items()} == dict.fromkeys(HOSTS, 0)
    assert "--- before" not in run.output  # --diff printed no difference


def test_the_firewall_lets_only_the_links_through(federation):
    fed = federation
    # a fed port of alice's range: something listens there only while a job runs, so open one
    fed.sandbox.exec(
        "alice", "sh", "-c",
        "nohup python3 -c 'import socket,time; s=socket.socket(); "
        "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((\"0.0.0.0\", 21000)); "
        "s.listen(); time.sleep(120)' >/dev/null 2>&1 &",
    )  # fmt: skip
    fed.sandbox.exec(
        "alice", "sh", "-c",
        "for i in $(seq 50); do ss -ltn | grep -q ':21000 ' && exit 0; sleep 0.2; done; exit 1",
    )  # fmt: skip
    ports = listening(fed, "alice")
    # Ray listens on every interface (GCS 6379, the raylet's and its workers' ports): only the
    # firewall keeps them on alice's host. No Ray client server (10001), no dashboard agent
    # with its HTTP job API (52365): node/rayhead/hook.py
    assert {6379, 6380, 7400, 21000} <= ports and not {10001, 52365} & ports, ports
    # ssh (the operators'), the probe, and whatever listens in alice's fed/SPU port pools: 21000
    # opened above, and the ports a warm session of the PSI before holds open between jobs
    pools = [port_pool(EXAMPLE_REGISTRY, "alice", k) for k in ("fed_ports", "spu_ports")]
    links = {22, 7400} | {p for p in ports if any(p in pool for pool in pools)}
    assert 21000 in links
    from_bob = reach(fed, "bob", "alice", *sorted(ports))
    assert {p for p, ok in from_bob.items() if ok} == links, from_bob
    # the coordinator reaches alice's Redis (and ssh), nothing of the links or of Ray
    from_coordinator = reach(fed, "coordinator", "alice", *sorted(ports))
    assert {p for p, ok in from_coordinator.items() if ok} == {22, 6380}, from_coordinator
    # on alice herself every one of them answers: the firewall, not an absent process, said no
    # (the fixed ports only: an idle Ray worker's port may close meanwhile)
    assert all(reach(fed, "alice", "alice", 6379, 6380, 7400, 21000).values())
    rules = fed.sandbox.exec("alice", "nft", "list", "table", "inet", "partyline").stdout
    assert "policy drop" in rules


def test_rotating_bobs_certificate_leaves_alice_running_and_the_next_psi_succeeds(federation):
    fed = federation
    alice_before, bob_before = started(fed, "alice"), started(fed, "bob")
    cert_before = fed.sandbox.exec("bob", "cat", "/etc/partyline/tls/bob.crt").stdout
    key_before = fed.sandbox.exec("bob", "sha256sum", "/etc/partyline/tls/bob.key").stdout
    run = fed.playbook("playbooks/rotate_certificate.yml", "-e", "partyline_rotate=bob")
    assert run.returncode == 0, run.failure()
    assert run.recap["alice"]["changed"] == 1  # the CA's new revocation list, nothing else
    old_serial = x509.load_pem_x509_certificate(cert_before.encode()).serial_number
    alice_crl = fed.sandbox.exec("alice", "cat", "/etc/partyline/tls/crl.pem").stdout
    assert old_serial in {r.serial_number for r in x509.load_pem_x509_crl(alice_crl.encode())}
    assert fed.sandbox.exec("bob", "cat", "/etc/partyline/tls/bob.crt").stdout != cert_before
    assert fed.sandbox.exec("bob", "sha256sum", "/etc/partyline/tls/bob.key").stdout != key_before
    assert started(fed, "alice") == alice_before  # not one of alice's services restarted
    bob_after = started(fed, "bob")
    assert bob_after["partyline-ray-head.service"] == bob_before["partyline-ray-head.service"]
    for unit in ("partyline-redis", "partyline-sf-worker", "partyline-probe"):
        assert bob_after[f"{unit}.service"] != bob_before[f"{unit}.service"], unit
    _job, got, want = psi(fed, 600, "out/after-rotation.csv")
    assert got == want and len(want) == 300


def test_the_ray_head_runs_only_while_the_firewall_table_is_loaded(federation):
    """Ray listens on every interface: when alice's firewall unit stops (its table deleted),
    her Ray head stops with it; started again, the firewall comes first."""
    fed = federation

    def active(unit: str) -> str:
        return fed.sandbox.exec("alice", "systemctl", "is-active", unit, check=False).stdout.strip()

    try:
        fed.sandbox.exec("alice", "systemctl", "stop", "partyline-firewall.service")
        end = time.monotonic() + 60
        while active("partyline-ray-head.service") not in ("inactive", "failed"):
            assert time.monotonic() < end, "alice's Ray head runs on without her firewall"
            time.sleep(0.5)
        assert "partyline" not in fed.sandbox.exec("alice", "nft", "list", "tables").stdout
    finally:
        fed.sandbox.exec("alice", "systemctl", "start", "partyline-ray-head.service")
    assert active("partyline-firewall.service") == "active"  # pulled in first (BindsTo)
    assert active("partyline-ray-head.service") == "active"


def test_the_coordinators_prune_runs_on_its_timer(federation):
    """The role installs a daily prune of finished jobs: its timer is active, and the service
    it starts runs `python -m coordinator prune` against the real database."""
    fed = federation
    timer = fed.sandbox.exec(
        "coordinator", "systemctl", "is-active", "partyline-coordinator-prune.timer", check=False
    )
    assert timer.stdout.strip() == "active"
    fed.sandbox.exec("coordinator", "systemctl", "start", "partyline-coordinator-prune.service")
    log = fed.sandbox.exec(
        "coordinator", "journalctl", "-u", "partyline-coordinator-prune.service", "--no-pager"
    ).stdout
    assert "deleted 0 jobs that ended before" in log and "(90 days ago)" in log, log

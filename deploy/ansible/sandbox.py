"""Fresh Debian 12 "hosts" for trying and testing the playbooks on one machine: containers
running systemd as PID 1 with their own sshd, on a network of their own with no way out.

- `build_host_image(docker)`: a debootstrap root (no image registry) with systemd, sshd and
  Python, and the Debian packages the roles install (redis-server, nftables, PostgreSQL …)
  waiting in apt's cache: the roles install them for real, offline, as on an air-gapped host
  with a local mirror.
- `Sandbox`: the containers (no `--privileged`: NET_ADMIN only, for the firewall), an ssh key
  for them, and an inventory written by `deploy.ansible.inventory` from the topology file.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from deploy.ansible import inventory
from deploy.compose.docker import Docker
from deploy.compose.images import Log, debootstrap, import_root, run

HERE = Path(__file__).resolve().parent
HOST_IMAGE = "partyline-host:bookworm"
RECAP_RE = re.compile(
    r"^(?P<host>\S+)\s+: ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+"
    r"unreachable=(?P<unreachable>\d+)\s+failed=(?P<failed>\d+)",
    re.MULTILINE,
)
HOST_PACKAGES = (  # installed in the image: what any host has before Ansible comes
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "python3",
    "sudo",
    "ca-certificates",
    "iproute2",
)
ROLE_PACKAGES = (  # in apt's cache only: the roles install them
    "redis-server",
    "nftables",
    "postgresql",
    "python3-venv",
    "libgomp1",
    "python3-apt",  # Ansible's apt module installs it when missing
)
SYSTEMD_FLAGS = [  # systemd as PID 1 without --privileged (../shared/DESIGN.md §8, kept outside the repo)
    "--tmpfs",
    "/run",
    "--tmpfs",
    "/run/lock",
    "-v",
    "/sys/fs/cgroup:/sys/fs/cgroup:ro",
    "--stop-signal",
    "SIGRTMIN+3",
]


def build_host_image(docker: Docker, tag: str = HOST_IMAGE, *, log: Log = print) -> str:
    if docker.image_exists(tag):
        return tag
    log(f"host image: debootstrap bookworm with systemd and sshd → {tag}")
    with tempfile.TemporaryDirectory(prefix="partyline-hostroot-") as tmp:
        root = debootstrap(Path(tmp) / "root", HOST_PACKAGES)
        shutil.copyfile("/etc/resolv.conf", root / "etc/resolv.conf")
        try:
            run(
                [
                    "chroot",
                    str(root),
                    "apt-get",
                    "install",
                    "--download-only",
                    "--no-install-recommends",
                    "-y",
                    "-qq",
                    *ROLE_PACKAGES,
                ]
            )
        finally:
            (root / "etc/resolv.conf").unlink(missing_ok=True)
        # apt installs without recommends on these hosts, as the roles expect; sshd takes keys
        (root / "etc/apt/apt.conf.d/90partyline").write_text('APT::Install-Recommends "false";\n')
        (root / "root/.ssh").mkdir(mode=0o700, exist_ok=True)
        for f in (root / "etc/ssh").glob("ssh_host_*"):
            f.unlink()  # each container makes its own host keys at first boot (below)
        unit = root / "etc/systemd/system/ssh-keygen-first-boot.service"
        unit.write_text(
            "[Unit]\nDescription=Make sshd's host keys\nBefore=ssh.service\n"
            "ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key\n\n"
            "[Service]\nType=oneshot\nExecStart=/usr/bin/ssh-keygen -A\n\n"
            "[Install]\nWantedBy=multi-user.target\n"
        )
        wants = root / "etc/systemd/system/multi-user.target.wants"
        wants.mkdir(parents=True, exist_ok=True)
        (wants / unit.name).symlink_to(f"/etc/systemd/system/{unit.name}")
        import_root(docker, root, tag, 'CMD ["/sbin/init"]')
    return tag


@dataclass
class Sandbox:
    """Containers `<prefix>-<name>` on network `<prefix>-net`; `dir` holds the ssh key and the
    inventory. `stop()` removes every container and the network."""

    docker: Docker
    dir: Path
    names: list[str]
    image: str = HOST_IMAGE
    prefix: str = field(default_factory=lambda: f"pl-ansible-{uuid.uuid4().hex[:6]}")
    addresses: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> Path:
        return self.dir / "id_ed25519"

    def container(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    def start(self, *, say: Log = print) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        if not self.key.exists():
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key)])
        # internal: the hosts reach each other and this machine, never beyond (no registry, no
        # mirror: the roles install from what the hosts carry)
        self.docker.run(["network", "create", "--internal", f"{self.prefix}-net"])
        for name in self.names:
            say(f"starting host {name}")
            self.docker.run(
                [
                    "run",
                    "-d",
                    "--name",
                    self.container(name),
                    "--hostname",
                    name,
                    "--network",
                    f"{self.prefix}-net",
                    "--cap-add",
                    "NET_ADMIN",
                    "--shm-size",
                    "1g",
                    "--label",
                    f"partyline.sandbox={self.prefix}",
                    *SYSTEMD_FLAGS,
                    self.image,
                ]
            )
        pub = (self.dir / "id_ed25519.pub").read_text()
        for name in self.names:
            self.exec(name, "sh", "-c", "umask 077 && cat > /root/.ssh/authorized_keys", input=pub)
            info = self.docker.inspect(self.container(name))[0]
            nets = info["NetworkSettings"]["Networks"]
            self.addresses[name] = nets[f"{self.prefix}-net"]["IPAddress"]
        self.wait_running()

    def wait_running(self, timeout: float = 120) -> None:
        end = time.monotonic() + timeout
        pending = list(self.names)
        while pending and time.monotonic() < end:
            pending = [
                n
                for n in pending
                if self.exec(n, "systemctl", "is-active", "ssh.service", check=False).stdout.strip()
                != "active"
            ]
            if pending:
                time.sleep(1)
        if pending:
            raise RuntimeError(f"sshd did not start on {', '.join(pending)} within {timeout:.0f} s")

    def exec(
        self,
        name: str,
        *cmd: str,
        check: bool = True,
        input: str | None = None,
        timeout: float = 120,
    ):
        args = (
            ["exec", "-i", self.container(name), *cmd]
            if input is not None
            else ["exec", self.container(name), *cmd]
        )
        return self.docker.run(args, check=check, input=input, timeout=timeout)

    def write_inventory(
        self,
        topology: Path,
        parties: list[str],
        coordinator: str = "coordinator",
        extra_vars: dict | None = None,
    ) -> Path:
        ssh = {
            "ansible_user": "root",
            "ansible_ssh_private_key_file": str(self.key),
            "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
        }
        return inventory.write(
            self.dir / "inventory",
            topology,
            [inventory.Host(p, self.addresses[p]) for p in parties],
            inventory.Host(coordinator, self.addresses[coordinator]),
            host_vars={n: ssh for n in self.names},
            extra_vars=extra_vars,
        )

    def stop(self) -> None:
        for name in self.names:
            self.docker.run(["rm", "-f", "-v", self.container(name)], check=False, timeout=120)
        self.docker.run(["network", "rm", f"{self.prefix}-net"], check=False)

    def leftovers(self) -> list[str]:
        out = self.docker.run(
            ["ps", "-aq", "--filter", f"label=partyline.sandbox={self.prefix}"], check=False
        ).stdout.split()
        nets = self.docker.run(
            ["network", "ls", "-q", "--filter", f"name={self.prefix}-net"], check=False
        ).stdout.split()
        return [f"container {c}" for c in out] + [f"network {n}" for n in nets]


@dataclass
class PlaybookRun:
    returncode: int
    output: str
    seconds: float

    @property
    def recap(self) -> dict[str, dict[str, int]]:
        """host → {ok, changed, unreachable, failed} from the PLAY RECAP."""
        return {
            m["host"]: {k: int(m[k]) for k in ("ok", "changed", "unreachable", "failed")}
            for m in RECAP_RE.finditer(self.output)
        }

    def failure(self) -> str:
        """The failed tasks' part of the output (for an assertion message)."""
        lines = self.output.splitlines()
        idx = [i for i, line in enumerate(lines) if line.startswith(("fatal:", "[ERROR]"))]
        if not idx:
            return "\n".join(lines[-40:])
        return "\n".join(lines[max(0, idx[0] - 5) : idx[0] + 40])


def run_playbook(
    inventory_file: Path, playbook: str, *args: str, home: Path, timeout: float = 1800
) -> PlaybookRun:
    """`ansible-playbook -i INVENTORY PLAYBOOK ARGS` from deploy/ansible, with this Python's
    ansible, its own ANSIBLE_HOME (ssh control sockets, temp files) under `home`."""
    ansible = Path(sys.executable).with_name("ansible-playbook")
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=str(HERE / "ansible.cfg"),
        ANSIBLE_HOME=str(home),
        ANSIBLE_LOCAL_TEMP=str(home / "tmp"),
        ANSIBLE_SSH_CONTROL_PATH_DIR=str(home / "cp"),
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_NOCOLOR="1",
    )
    env["PATH"] = f"{ansible.parent}:{env.get('PATH', '')}"
    t0 = time.monotonic()
    done = subprocess.run(
        [str(ansible), "-i", str(inventory_file), playbook, *args],
        cwd=HERE,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return PlaybookRun(done.returncode, done.stdout + done.stderr, time.monotonic() - t0)

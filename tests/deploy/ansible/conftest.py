"""The playbooks for real: three fresh Debian 12 hosts (systemd as PID 1, their own sshd, an
internal network) converged with site.yml once per module, removed after."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from deploy.ansible.sandbox import PlaybookRun, Sandbox, build_host_image, run_playbook
from deploy.local.topology import EXAMPLE_REGISTRY

PARTIES = ["alice", "bob"]
HOSTS = ["coordinator", *PARTIES]


@dataclass
class Federation:
    sandbox: Sandbox
    inventory: Path
    home: Path
    first: PlaybookRun

    @property
    def inventory_dir(self) -> Path:
        return self.inventory.parent

    def playbook(self, name: str, *args: str) -> PlaybookRun:
        return run_playbook(self.inventory, name, *args, home=self.home)

    @property
    def api_token(self) -> str:
        return (self.inventory_dir / "secrets" / "coordinator-api-token").read_text().strip()

    @property
    def coordinator_url(self) -> str:
        return f"http://{self.sandbox.addresses['coordinator']}:8000"


@pytest.fixture(scope="module")
def federation(docker, wheelhouse) -> Federation:
    image = build_host_image(docker)
    work = Path(tempfile.mkdtemp(prefix="partyline-ansible-"))
    sandbox = Sandbox(docker, work / "hosts", HOSTS, image=image)
    try:
        sandbox.start(say=lambda m: None)
        inventory = sandbox.write_inventory(
            EXAMPLE_REGISTRY,
            PARTIES,
            extra_vars={
                # the hosts have no way out: the Debian packages come from their apt cache
                "partyline_apt_update_cache": False,
                "partyline_coordinator_listen_address": "0.0.0.0",
                # both parties are converged together: a link that fails is a failure
                "partyline_node_health_require_links": True,
                "partyline_wheelhouse": str(wheelhouse),
            },
        )
        first = run_playbook(inventory, "site.yml", home=work / "ansible")
        assert first.returncode == 0, f"site.yml failed:\n{first.failure()}"
        yield Federation(sandbox, inventory, work / "ansible", first)
    finally:
        sandbox.stop()
        left = sandbox.leftovers()
        shutil.rmtree(work, ignore_errors=True)
        if left:
            pytest.fail(f"the sandbox left {', '.join(left)}")

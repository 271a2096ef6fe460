"""`python -m node caches`: what an operator sees and deletes (a real subprocess, its own
NODE_* environment)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from node.dataroot import ubcache

from ..jobtypes.test_table import make_settings
from .test_ubcache import _manifest, _staging

ROOT = Path(__file__).resolve().parents[3]


def _node(settings, *args: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "NODE_PARTY": settings.party,
        "NODE_BROKER_URL": settings.broker_url,
        "NODE_DATA_ROOT": str(settings.data_root),
        "NODE_STATE_DIR": str(settings.state_dir),
        "NODE_CERT_FILE": str(settings.cert_file),
        "NODE_KEY_FILE": str(settings.key_file),
        "NODE_CA_FILE": str(settings.ca_file),
        "NODE_TRUSTED_SIGNERS": settings.trusted_signers,
        "NODE_ALLOWED_PEERS": "bob",
        "NODE_MAX_UB_CACHES": "5",
        "COLUMNS": "200",
    }
    cmd = [sys.executable, "-m", "node", "caches", *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def test_the_operator_lists_and_deletes_this_partys_halves(tmp_path):
    settings = make_settings(tmp_path, "alice")
    ubcache.commit(_staging(settings.data_root), settings.data_root, _manifest())
    shown = _node(settings)
    assert shown.returncode == 0, shown.stderr
    assert "caches of party alice (1 of at most 5)" in shown.stdout
    assert "alice/acc" in shown.stdout and "t/a.csv" in shown.stdout
    listed = json.loads(_node(settings, "--json").stdout)
    assert [(c["server"], c["cache"], c["client"]) for c in listed] == [("alice", "acc", "bob")]

    gone = _node(settings, "--delete", "alice/acc", "--delete", "alice/nope", "--json")
    assert gone.returncode == 1  # one of them was not there
    assert json.loads(gone.stdout) == {"deleted": ["alice/acc"], "not_found": ["alice/nope"]}
    assert ubcache.list_caches(settings.data_root) == []
    bad = _node(settings, "--delete", "../../etc")
    assert bad.returncode != 0 and "give SERVER/NAME" in bad.stderr

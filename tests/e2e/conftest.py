"""A real federation of five parties on this machine: per party its own redis-server, Ray head,
Celery worker, certificates, data root — torn down even when a test fails."""

from __future__ import annotations

import gc
import shutil
from pathlib import Path

import pytest

from deploy.local.federation import LocalFederation

START_TIMEOUT_S = "45"
HELLO_JOB = "tests.e2e.hello_job"


ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture(scope="package")
def federation():
    """Kept under test-artifacts/e2e-federation (git-ignored) so job logs survive a failed run."""
    base = ARTIFACTS / "e2e-federation"
    shutil.rmtree(base, ignore_errors=True)
    fed = LocalFederation(
        base,
        # carol, dave and erin: in PSIs of three to five parties only (test_multiparty.py);
        # the two-party tests show that a party of the registry outside a job gets nothing
        ["alice", "bob", "carol", "dave", "erin"],
        # tests/e2e/hello_job.py: a job type declared under tests/ only (test_job_types.py)
        node_env={"NODE_START_TIMEOUT_S": START_TIMEOUT_S, "NODE_JOB_MODULES": HELLO_JOB},
        log=lambda m: print(f"[federation] {m}"),
    )
    try:
        fed.start()
        yield fed
    finally:
        # Celery AsyncResults the tests left behind unsubscribe from their party's Redis when
        # collected: collect them while Redis still runs (after, their __del__ raises into
        # pytest's unraisable-exception hook at exit)
        gc.collect()
        fed.stop()


def pytest_collection_modifyitems(items):
    for item in items:
        if "/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)

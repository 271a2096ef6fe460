"""A real two-party federation on this machine: per party its own redis-server, Ray head,
Celery worker, certificates, data root — torn down even when a test fails."""

from __future__ import annotations

import pytest

from deploy.local.federation import LocalFederation

START_TIMEOUT_S = "45"


@pytest.fixture(scope="package")
def federation(tmp_path_factory):
    fed = LocalFederation(
        tmp_path_factory.mktemp("fed"),
        ["alice", "bob"],
        node_env={"NODE_START_TIMEOUT_S": START_TIMEOUT_S},
        log=lambda m: print(f"[federation] {m}"),
    )
    try:
        fed.start()
        yield fed
    finally:
        fed.stop()


def pytest_collection_modifyitems(items):
    for item in items:
        if "/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)

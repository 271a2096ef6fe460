"""What the container tests of tests/deploy share (compose and Ansible): one Docker engine and one
wheelhouse per test run. Package scope: an engine the tests started is stopped once the last
test of tests/deploy is done, not at the end of the whole run."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from deploy.compose import images
from deploy.compose.docker import Docker, ensure_daemon

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="package")
def docker() -> Docker:
    base = Path(tempfile.mkdtemp(prefix="partyline-dockerd-"))
    daemon = ensure_daemon(base)
    try:
        yield daemon.docker
    finally:
        daemon.stop()  # only an engine this run started; its images and layers go with `base`
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="package")
def wheelhouse() -> Path:
    """Every locked wheel of the node and coordinator extras and the project's own (offline
    image builds and the Ansible role's air-gapped install)."""
    return images.build_wheelhouse(REPO_ROOT / "build" / "wheelhouse")

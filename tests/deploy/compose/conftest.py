"""The compose simulation for real: the Docker engine and the wheelhouse of tests/deploy (shared
with the Ansible tests), one set of base images and images per test run, one running federation
per module; everything it made is removed after."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from pathlib import Path

import pytest

from deploy.compose import config, images
from deploy.compose.docker import Docker
from deploy.compose.stack import ComposeStack

REPO_ROOT = config.REPO_ROOT


@pytest.fixture(scope="package")
def compose_images(docker, wheelhouse) -> dict[str, str]:
    """Base images from debootstrap (no registry) and the three images, built with no network."""
    base = images.build_base_image(docker, images.LOCAL_BASE_IMAGE)
    pg_base = images.build_base_image(docker, images.LOCAL_POSTGRES_BASE_IMAGE)
    ctx = Path(tempfile.mkdtemp(prefix="partyline-context-"))
    try:
        return images.build_images(
            docker, wheelhouse, base_image=base, postgres_base_image=pg_base, ctx=ctx / "c"
        )
    finally:
        shutil.rmtree(ctx, ignore_errors=True)


def leftovers(docker: Docker, project: str) -> list[str]:
    label = f"label=com.docker.compose.project={project}"
    found = []
    for kind in (["ps", "-a"], ["network", "ls"], ["volume", "ls"]):
        out = docker.run([*kind, "-q", "--filter", label]).stdout.split()
        found += [f"{kind[0]} {x}" for x in out]
    return found


@pytest.fixture(scope="module")
def stack(docker, compose_images, ports, tmp_path_factory):
    project = f"partyline-test-{uuid.uuid4().hex[:6]}"
    ui_port = ports.one()
    gen = config.generate(
        tmp_path_factory.mktemp("compose") / "c", ["alice", "bob"], ui_port=ui_port, project=project
    )
    s = ComposeStack(docker, gen.dir, ["alice", "bob"])
    s.generated = gen  # type: ignore[attr-defined]
    s.ui_url = f"http://127.0.0.1:{ui_port}"  # type: ignore[attr-defined]
    try:
        s.up()
        s.wait_healthy(timeout=600, say=lambda m: None)
        yield s
    finally:
        s.down()
        left = leftovers(docker, project)
        if left:
            pytest.fail(f"compose down -v left {', '.join(left)}")

"""`make lint` holds in every CI run: ruff (lint and format) and the type checker."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.mark.parametrize(
    "command",
    [["ruff", "check", "."], ["ruff", "format", "--check", "."], ["mypy"]],
    ids=["ruff-check", "ruff-format", "mypy"],
)
def test_the_tree_is_lint_clean(command):
    tool = BIN / command[0]
    assert tool.exists(), f"{tool} is missing: run `make sync`"
    out = subprocess.run(
        [str(tool), *command[1:]], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, f"{' '.join(command)} found problems:\n{out.stdout}{out.stderr}"

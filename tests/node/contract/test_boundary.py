"""The node/coordinator boundary (docs/architecture.md): the coordinator imports only the
node's published contract, and the contract's models stay light."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
HEAVY = ("secretflow", "celery", "ray", "redis", "spu", "fed")


def _python() -> str:
    venv_python = REPO_ROOT / ".venv" / "bin" / "python"
    return str(venv_python) if venv_python.exists() else sys.executable


def _loaded_after(imports: str, prefixes: tuple[str, ...]) -> list[str]:
    code = (
        "import sys, json\n"
        f"{imports}\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {prefixes!r})))\n"
    )
    out = subprocess.run(
        [_python(), "-c", code],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _is_contract(module: str) -> bool:
    return module == "node.contract" or module.startswith("node.contract.")


def _node_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import of a `node` module in one source file."""
    found = []
    for stmt in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(stmt, ast.Import):
            names = [alias.name for alias in stmt.names]
        elif isinstance(stmt, ast.ImportFrom) and stmt.level == 0 and stmt.module:
            names = [stmt.module]
            if stmt.module == "node":  # `from node import x` imports node.x
                names = [f"node.{alias.name}" for alias in stmt.names]
        else:
            continue
        found += [(stmt.lineno, n) for n in names if n == "node" or n.startswith("node.")]
    return found


def test_the_coordinator_source_imports_nothing_of_node_but_its_contract():
    sources = sorted((REPO_ROOT / "coordinator").rglob("*.py"))
    assert len(sources) > 20  # the walk really found the package
    outside = [
        f"{path.relative_to(REPO_ROOT)}:{line}: {module}"
        for path in sources
        for line, module in _node_imports(path)
        if not _is_contract(module)
    ]
    assert outside == []


def test_the_import_walk_sees_every_spelling_of_an_import(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import node.settings\n"
        "from node import rayhead\n"
        "from node.contract import TaskParams\n"
        "def f():\n    from node.contract.clients import client_app\n"
    )
    found = [m for _, m in _node_imports(sample)]
    assert found == ["node.settings", "node.rayhead", "node.contract", "node.contract.clients"]
    assert [m for m in found if not _is_contract(m)] == ["node.settings", "node.rayhead"]


def test_a_running_coordinator_has_loaded_only_the_contract_of_node():
    loaded = _loaded_after(
        "import coordinator.__main__, coordinator.api.main, coordinator.runtime", ("node",)
    )
    assert "node.contract.clients" in loaded  # the coordinator does send to the parties
    assert [m for m in loaded if m != "node" and not _is_contract(m)] == []


def test_import_contract_models_loads_no_heavy_modules():
    assert _loaded_after("import node.contract", HEAVY) == []

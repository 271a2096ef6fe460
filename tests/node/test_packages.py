"""node/ is grouped by what runs where (docs/architecture.md §6): each package's `__init__`
docstring says what it may import ("May import: node.x, node.y.z …"), and the source keeps to it
— every import, at the top or inside a function — with no circle between packages."""

from __future__ import annotations

import ast
import re
from pathlib import Path

NODE = Path(__file__).resolve().parents[2] / "node"
PACKAGES = sorted(p.parent.name for p in NODE.glob("*/__init__.py"))
TOKEN = re.compile(r"\bnode(?:\.[a-z_]+)+")


def allowed(package: str) -> set[str]:
    """The modules named in the package's "May import:" sentence."""
    doc = ast.get_docstring(ast.parse((NODE / package / "__init__.py").read_text())) or ""
    found = re.search(r"May import:(.*?)(?:\.\s+[A-Z]|\.\s*$)", doc, re.S)
    assert found, f"node/{package}/__init__.py says nothing of what it may import"
    return set(TOKEN.findall(found.group(1)))


def imports(path: Path) -> list[tuple[int, tuple[str, ...]]]:
    """(line, spellings) of each import of a node module: `from a.b import c` may name the
    module a.b or a.b.c, so both spellings are given."""
    out = []
    for stmt in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(stmt, ast.Import):
            out += [(stmt.lineno, (a.name,)) for a in stmt.names]
        elif isinstance(stmt, ast.ImportFrom) and stmt.level == 0 and stmt.module:
            out += [(stmt.lineno, (stmt.module, f"{stmt.module}.{a.name}")) for a in stmt.names]
    return [(n, names) for n, names in out if names[0].split(".")[0] == "node"]


def covered(spellings: tuple[str, ...], permitted: set[str]) -> bool:
    return any(s == t or s.startswith(f"{t}.") for s in spellings for t in permitted)


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def edges() -> dict[str, dict[str, list[str]]]:
    """package → imported package → where (file:line), over every import in node/."""
    graph: dict[str, dict[str, list[str]]] = {p: {} for p in PACKAGES}
    for package in PACKAGES:
        for path in sorted((NODE / package).rglob("*.py")):
            for line, spellings in imports(path):
                target = package_of(spellings[-1])
                if target in PACKAGES and target != package:
                    graph[package].setdefault(target, []).append(f"{path.name}:{line}")
    return graph


def test_every_package_says_what_it_may_import_and_keeps_to_it():
    assert {"worker", "jobtypes", "dataroot", "launch", "sfjob", "sessions", "ops"} <= set(PACKAGES)
    breaches = []
    for package in PACKAGES:
        permitted = allowed(package) | {f"node.{package}"}
        for path in sorted((NODE / package).rglob("*.py")):
            for line, spellings in imports(path):
                if not covered(spellings, permitted):
                    breaches.append(f"node/{package}/{path.name}:{line}: {spellings[0]}")
    assert breaches == []


def test_no_circle_between_the_packages_of_node():
    graph = edges()
    assert graph["worker"], "the walk found the worker's imports"

    def reachable(start: str) -> set[str]:
        seen: set[str] = set()
        todo = list(graph[start])
        while todo:
            p = todo.pop()
            if p not in seen:
                seen.add(p)
                todo += graph.get(p, {})
        return seen

    circles = {p: graph[p] for p in PACKAGES if p in reachable(p)}
    assert circles == {}


def test_the_check_sees_a_breach():
    """The rule-reader is not vacuous: launch may not import the worker or the sessions."""
    permitted = allowed("launch")
    assert "node.rayhead.head" in permitted and "node.contract" in permitted
    assert not covered(("node.worker.tasks",), permitted)
    assert not covered(("node.sessions", "node.sessions.client"), permitted)
    assert covered(("node.rayhead", "node.rayhead.head"), permitted)

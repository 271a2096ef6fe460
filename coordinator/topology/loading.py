"""Loading a topology file: YAML with line numbers, ``${VAR}`` from the environment.

`load_topology(path)` validates the whole file and raises `TopologyError` whose message names
the file, the line and the field (``topology.yaml:7: parties.alice.fed_ports: ...``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from coordinator.topology.model import PartyDefaults, PartySpec, Topology


# --- errors -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class TopologyIssue:
    """One problem in a topology file: where (file, 1-based line, field path) and what."""

    file: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class TopologyError(ValueError):
    """The topology file is unreadable or invalid; `issues` lists every problem found."""

    def __init__(self, issues: list[TopologyIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


# --- loading ----------------------------------------------------------------------------------
def _key_matches(key: yaml.Node, seg: Any) -> bool:
    if not isinstance(key, yaml.ScalarNode):
        return False
    if key.tag.endswith(":bool") and isinstance(seg, int):  # `on:`/`no:` are booleans in YAML 1.1
        return (key.value.lower() in ("yes", "true", "on")) == bool(seg)
    return key.value == str(seg)


def _walk(node: yaml.Node, loc: tuple[Any, ...]) -> tuple[int, int, str]:
    """(1-based line of the deepest node `loc` reaches, how many segments of `loc` it reached,
    the dotted path as spelled in the file).

    A mapping entry's line is its key's line; a trailing "[key]" (pydantic's marker for an
    invalid dict key) counts as reached."""
    line = node.start_mark.line + 1
    names = [str(seg) for seg in loc if seg != "[key]"]
    for depth, seg in enumerate(loc):
        if seg == "[key]":
            return line, len(loc), ".".join(names)
        if isinstance(node, yaml.MappingNode):
            hit = None
            for k, v in node.value:  # the last duplicate wins, as in the constructed data
                if _key_matches(k, seg):
                    hit = (k, v)
            if hit is None:
                return line, depth, ".".join(names)
            line, node = hit[0].start_mark.line + 1, hit[1]
            names[depth] = hit[0].value
        elif isinstance(node, yaml.SequenceNode) and isinstance(seg, int) and seg < len(node.value):
            node = node.value[seg]
            line = node.start_mark.line + 1
        else:
            return line, depth, ".".join(names)
    return line, len(loc), ".".join(names)


def _duplicates(node: yaml.Node, path: str, out: list[tuple[int, str, str]]) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for k, v in node.value:
            key = k.value if isinstance(k, yaml.ScalarNode) else None
            sub = f"{path}.{key}" if path else str(key)
            if key is not None and key != "<<":
                line = k.start_mark.line + 1
                if key in seen:
                    out.append((line, sub, f"duplicate key (first defined on line {seen[key]})"))
                else:
                    seen[key] = line
            _duplicates(v, sub, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _duplicates(item, f"{path}[{i}]", out)


def _message(err: Mapping[str, Any], loc: tuple[Any, ...]) -> str:
    kind, msg = err["type"], err["msg"]
    if kind == "extra_forbidden":
        models: dict[int, type[BaseModel]] = {1: Topology, 2: PartyDefaults}
        model = models.get(len(loc), PartySpec)
        allowed = sorted(model.model_fields)
        return f"unknown field (allowed: {', '.join(allowed)})"
    if kind == "missing":
        return "required field is missing"
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return f"expected a mapping, got {type(err.get('input')).__name__}"
    if kind == "literal_error" and loc == ("version",):
        return "unsupported version; this coordinator reads version 1"
    return msg.removeprefix("Value error, ")


def parse_topology(
    text: str,
    *,
    source: str = "<topology>",
    base_dir: Path | str | None = None,
    env: Mapping[str, str] | None = None,
) -> Topology:
    """Validate topology YAML text. Relative CA paths are relative to `base_dir` (default: cwd);
    ${VAR} is read from `env` (default: os.environ)."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        context = exc.context or ""
        cmark = exc.context_mark
        if context and cmark is not None and mark is not None and cmark.line != mark.line:
            context += f" (line {cmark.line + 1})"
        problem = " ".join(p for p in (context, exc.problem) if p) or "invalid YAML"
        line = mark.line + 1 if mark is not None else None
        raise TopologyError(
            [TopologyIssue(source, line, "", f"YAML syntax error: {problem}")]
        ) from None
    except yaml.YAMLError as exc:
        raise TopologyError([TopologyIssue(source, None, "", f"YAML error: {exc}")]) from None
    finally:
        loader.dispose()
    if root is None:
        raise TopologyError([TopologyIssue(source, None, "", "the file is empty")])

    dups: list[tuple[int, str, str]] = []
    _duplicates(root, "", dups)
    if dups:
        raise TopologyError([TopologyIssue(source, ln, p, m) for ln, p, m in dups])

    validation_context = {
        "env": env,
        "base_dir": Path(base_dir).absolute() if base_dir is not None else None,
    }
    try:
        topology = Topology.model_validate(data, context=validation_context)
    except ValidationError as exc:
        issues: dict[tuple[str, str], TopologyIssue] = {}
        for err in exc.errors(include_input=True, include_url=False):
            loc = tuple(err["loc"])
            line, reached, path = _walk(root, loc)
            # A field the party does not set itself came from `defaults:`; point there.
            if loc[:1] == ("parties",) and reached == 2 and len(loc) >= 3 and loc[2] != "[key]":
                dloc = ("defaults", *loc[2:])
                dline, dreached, dpath = _walk(root, dloc)
                if dreached == len(dloc):
                    loc, line, path = dloc, dline, dpath
            msg = _message(err, loc)
            issues.setdefault((path, msg), TopologyIssue(source, line, path, msg))
        ordered = sorted(issues.values(), key=lambda i: (i.line or 0, i.path))
        raise TopologyError(ordered) from None
    return topology


def load_topology(path: Path | str, *, env: Mapping[str, str] | None = None) -> Topology:
    """Read and validate a topology file; raises TopologyError (file:line: field: problem)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise TopologyError(
            [TopologyIssue(str(path), None, "", f"cannot read: {reason}")]
        ) from None
    topology = parse_topology(text, source=str(path), base_dir=path.absolute().parent, env=env)
    topology._source = path
    return topology

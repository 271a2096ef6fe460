"""name → job kind: the kinds this coordinator launches — its own, and those of the modules its
settings name (COORD_JOB_KINDS), each declaring one `KIND`."""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from types import MappingProxyType

from coordinator.jobkinds import psi, ub_psi, ub_psi_cache, warmup
from coordinator.jobkinds.spec import JobKind

BUILT_IN: tuple[JobKind, ...] = (psi.KIND, ub_psi_cache.KIND, ub_psi.KIND, warmup.KIND)


def kind_table(kinds: Iterable[JobKind]) -> Mapping[str, JobKind]:
    """A read-only name → kind table; two kinds of one name are a programming error."""
    table: dict[str, JobKind] = {}
    for kind in kinds:
        if kind.name in table:
            raise ValueError(f"job kind {kind.name!r} declared twice")
        table[kind.name] = kind
    return MappingProxyType(table)


def job_kinds(modules: Iterable[str] = ()) -> Mapping[str, JobKind]:
    """The built-in kinds and those of `modules` (a module without a `KIND` is refused at
    start, naming it)."""
    declared = []
    for name in modules:
        kind = getattr(importlib.import_module(name), "KIND", None)
        if not isinstance(kind, JobKind):
            raise ValueError(f"job kind module {name!r} declares no KIND (a JobKind)")
        declared.append(kind)
    return kind_table([*BUILT_IN, *declared])

"""A package registered without running its `__init__` (node.sfjob.sflite, node.sfjob.rayworker).

`import a.b` runs `a/__init__.py` first; SecretFlow's and spu's import far more than the
modules this node uses (all of SecretFlow, jax). With the package registered bare, `import a.b`
loads `a/b` and what it imports itself.
"""

from __future__ import annotations

import importlib.util
import sys
import types


def bare(name: str) -> tuple[types.ModuleType, bool]:
    """`name` registered without running its __init__ (or as imported already); True if new."""
    if name in sys.modules:
        return sys.modules[name], False
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"{name} is not installed")
    package = types.ModuleType(name)
    package.__path__ = list(spec.submodule_search_locations)
    package.__spec__ = spec
    package.__file__ = spec.origin
    sys.modules[name] = package
    return package, True

"""SecretFlow's device layer — `sf.init`, `sf.PYU`, `sf.SPU`, … — without the rest of SecretFlow.

`import secretflow` runs `secretflow/__init__.py`, which imports every part of SecretFlow:
Kuscia components (with s3fs, aiobotocore, sqlglot), statistics (scipy), ML, preprocessing.
A PSI job's driver uses the device layer alone. `load()` registers the `secretflow` package
without running its `__init__`, imports `secretflow.device` (the same modules SecretFlow's own
`__init__` takes these names from) and puts the device layer's names on the package, so
`import secretflow as sf; sf.init(…)` afterwards works as before. The same for `secretflow_fl`,
where `sf.init`'s Ray production mode lives: its `__init__` imports all of SecretFlow again.
Measured in a bare interpreter, both loaded: ≈280 MB instead of ≈450 MB, and half the time.

Call it first thing in a process that runs jobs (node.sfjob.executor, node.sessions.driver): once the
real `secretflow/__init__` ran, it changes nothing.
"""

from __future__ import annotations

import importlib
import types

from node.sfjob import packages

# what secretflow/__init__.py imports from .device (secretflow 1.x)
DEVICE_NAMES = (
    "HEU", "PYU", "SPU", "TEEU", "Device", "DeviceObject", "HEUObject", "PYUObject",
    "SPUObject", "init", "proxy", "reveal", "shutdown", "to", "wait",
)  # fmt: skip


def load() -> types.ModuleType:
    """The `secretflow` package with its device layer and the Ray production mode strategy
    (imported once per process)."""
    package, _ = packages.bare("secretflow")
    device = importlib.import_module("secretflow.device")
    for name in DEVICE_NAMES:
        if not hasattr(package, name):
            setattr(package, name, getattr(device, name))
    # sf.init's RAY_PRODUCTION mode lives in secretflow_fl, whose __init__ imports all of it
    # too (components, ML, tuning) and sets one thing the strategy reads at import time
    _, bare = packages.bare("secretflow_fl")
    if bare:
        from typing import Union

        import fed
        import ray
        from secretflow.distributed import const
        from secretflow.distributed import fed as sf_fed

        # exactly what secretflow_fl/__init__.py sets
        const.FED_OBJECT_TYPES = Union[ray.ObjectRef, sf_fed.FedObject, fed.FedObject]  # noqa: UP007
    importlib.import_module("secretflow_fl.distributed.op_strategy")
    return package

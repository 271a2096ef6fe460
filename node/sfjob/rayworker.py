"""What every Ray worker of a job of this node runs first (Ray's `worker_process_setup_hook`,
set by `node.sfjob.cluster.init_cluster` in the job's runtime environment).

The job's workers hold RayFed's two link proxies and the SPU runtime (`node.sfjob.spu_runtime`);
none of them computes with jax:

- RayFed imports jax only for `jax.tree_util` and uses its own copy when jax cannot be imported:
  a proxy's worker that imports jax holds ≈185 MB instead of ≈80 MB;
- `spu/__init__.py` imports jax (for SPU's compiler), while the PSI runtime needs only the
  package's compiled libraries and protobuf modules (`spu.libspu`, `spu.libpsi`, `spu.psi`,
  `spu.*_pb2`): ≈135 MB instead of ≈460 MB with SecretFlow's runtime.

`setup` makes jax unimportable in the job's workers and registers the `spu` package without
running its `__init__` (before Ray unpickles an actor's arguments, which name `spu.libspu`
classes). The driver, which SecretFlow needs jax in, is not a worker and keeps both.
"""

from __future__ import annotations

import sys

from node.sfjob import packages

HOOK = "node.sfjob.rayworker.setup"


def runtime_env() -> dict[str, str]:
    """The runtime environment the job's driver passes to ray.init."""
    return {"worker_process_setup_hook": HOOK}


def setup() -> None:
    if "jax" not in sys.modules:  # a worker that already holds it keeps it
        sys.modules["jax"] = None  # type: ignore[assignment]  # `import jax` → ImportError
    packages.bare("spu")  # `import spu.libspu…` without spu/__init__ (jax)

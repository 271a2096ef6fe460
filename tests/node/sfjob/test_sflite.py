"""SecretFlow's device layer without the rest of SecretFlow (node.sfjob.sflite), in a fresh process."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = r"""
import json, sys
from node.sfjob import sflite
sflite.load()
import secretflow as sf
from secretflow.distributed import const
from secretflow.distributed.op_context import SFOpContext
from secretflow.distributed.const import DISTRIBUTION_MODE
strategy = SFOpContext(DISTRIBUTION_MODE.RAY_PRODUCTION)._strategy
print(json.dumps({
    "api": [n for n in ("init", "shutdown", "PYU", "SPU", "reveal", "wait") if hasattr(sf, n)],
    "heavy": [m for m in ("secretflow.component", "secretflow.ml", "secretflow_fl.ml",
                          "secretflow_fl.component", "s3fs", "scipy") if m in sys.modules],
    "strategy": type(strategy).__name__,
    "fed_types": str(const.FED_OBJECT_TYPES),
}))
"""


def test_the_device_layer_and_ray_production_mode_load_without_the_rest():
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=180, check=True
    )
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["api"] == ["init", "shutdown", "PYU", "SPU", "reveal", "wait"]
    assert got["heavy"] == []
    assert got["strategy"] == "RayProdStrategy"
    # what secretflow_fl/__init__.py would have set: RayFed's objects count as fed objects
    assert "fed.fed_object.FedObject" in got["fed_types"]
    assert "secretflow.distributed.fed.object.FedObject" in got["fed_types"]

"""The job's Ray workers: no jax, spu's libraries without spu/__init__ (node.sfjob.rayworker)."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = r"""
import json, sys
from node.sfjob import rayworker
rayworker.setup()
import fed.proxy.barriers, fed.utils            # what RayFed's proxy actors import
import spu.libspu.link, spu.libspu.logging, spu.psi, spu.psi_v2_pb2
from node.sfjob import spu_runtime
desc, party = spu_runtime.link_desc(
    {"nodes": [{"party": "alice", "address": "127.0.0.1:1"},
               {"party": "bob", "address": "127.0.0.1:2", "listen_address": "0.0.0.0:2",
                "tls_opts": {"server_ssl_opts": {"certificate_path": "s.crt",
                                                 "private_key_path": "s.key",
                                                 "ca_file_path": "ca.crt", "verify_depth": 1},
                             "client_ssl_opts": {"certificate_path": "c.crt",
                                                 "private_key_path": "c.key",
                                                 "ca_file_path": "ca.crt", "verify_depth": 1}}}]},
    1, {"connect_retry_times": 7})
print(json.dumps({
    "jax": sys.modules.get("jax") is not None,
    "secretflow": "secretflow" in sys.modules,
    "tree_util": fed.utils.tree_flatten.__module__,
    "party": party,
    "ssl": desc.enable_ssl,
    "server_cert": desc.server_ssl_opts.cert.certificate_path,
    "client_ca": desc.client_ssl_opts.verify.ca_file_path,
    "retry": desc.connect_retry_times,
    "recv_timeout_ms": desc.recv_timeout_ms,
    "log_options": type(spu.libspu.logging.LogOptions()).__module__,
}))
"""


def probe() -> dict:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_job_worker_loads_the_link_and_psi_library_without_jax_or_secretflow():
    got = probe()
    assert got["jax"] is False and got["secretflow"] is False
    assert got["tree_util"] == "fed.tree_util"  # RayFed's own, not jax's
    assert got["log_options"].startswith("spu.libspu")


def test_the_link_is_built_as_secretflow_builds_it():
    got = probe()
    assert got["party"] == "bob"
    assert got["ssl"] is True
    assert got["server_cert"] == "s.crt" and got["client_ca"] == "ca.crt"
    assert got["retry"] == 7
    assert got["recv_timeout_ms"] == 120_000  # SecretFlow's default when not given


def test_an_unknown_link_option_is_refused():
    import pytest

    from node.sfjob import spu_runtime

    with pytest.raises(ValueError, match="unsupported link option 'bogus'"):
        spu_runtime.link_desc({"nodes": [{"party": "a", "address": "x:1"}]}, 0, {"bogus": 1})

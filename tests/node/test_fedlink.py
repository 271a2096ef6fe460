"""The cross-silo receiver's allow-list (pure: pickled payloads, nothing executed)."""

from __future__ import annotations

import os
import pickle

import cloudpickle
import pytest

from node.fedlink import ALLOWED_GLOBALS, comm_options, payload_problem


class _Exec:
    def __reduce__(self):
        return (exec, ("open('/tmp/partyline-pwned', 'w')",))


class _System:
    def __reduce__(self):
        return (os.system, ("true",))


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        (_Exec(), "forbidden global builtins.exec"),
        (_System(), "forbidden global posix.system"),
        (lambda: 1, "forbidden global"),  # cloudpickle'd code
    ],
    ids=["exec", "os.system", "function"],
)
def test_a_payload_naming_anything_outside_the_allow_list_is_refused(payload, needle):
    assert needle in (payload_problem(cloudpickle.dumps(payload)) or "")


@pytest.mark.parametrize(
    "payload",
    [b"data", {"a": [1, 2.5, (3, "x")], "b": None}, {1, 2}, RuntimeError("boom")],
    ids=["rayfed-ping", "plain-data", "set", "error"],
)
def test_what_the_link_really_carries_is_accepted(payload):
    assert payload_problem(pickle.dumps(payload)) is None


def test_rayfed_gets_the_same_allow_list_and_the_job_parties():
    opts = comm_options(["bob", "alice"])
    assert opts["serializing_allowed_list"] == ALLOWED_GLOBALS
    assert opts["partyline_peers"] == ["alice", "bob"]
    assert "exec" not in ALLOWED_GLOBALS["builtins"] and "eval" not in ALLOWED_GLOBALS["builtins"]

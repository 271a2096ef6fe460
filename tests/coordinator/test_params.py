"""PSI request validation (each error names the field) and per-party params from one template."""

from __future__ import annotations

import datetime as dt

import pytest
from pydantic import ValidationError

from coordinator.jobkinds import psi
from coordinator.params import PartyEndpoints, job_template, per_party
from coordinator.schemas import PSIJobCreate
from node.contract import TaskParams


def request(**over) -> dict:
    body = {
        "parties": {
            "alice": {"keys": ["uid"], "input": "customers.csv", "output": "out/j.csv"},
            "bob": {"keys": ["id"], "input": "accounts.csv", "output": "out/j.csv"},
        },
        "receiver": "alice",
        "protocol": "ECDH_PSI_2PC",
    }
    body.update(over)
    return body


def error_of(body: dict) -> tuple[str, str]:
    with pytest.raises(ValidationError) as info:
        PSIJobCreate.model_validate(body)
    err = info.value.errors()[0]
    return ".".join(str(p) for p in err["loc"]), err["msg"]


def test_good_request_normalizes_protocol():
    req = PSIJobCreate.model_validate(request())
    assert req.protocol == "PROTOCOL_ECDH"


@pytest.mark.parametrize(
    ("mutate", "field", "needle"),
    [
        (lambda b: b["parties"].pop("bob"), "parties", "between 2 and 8 parties, got 1"),
        (lambda b: b.update(receiver="carol"), "", "receiver 'carol'"),
        (lambda b: b.update(protocol="MAGIC"), "protocol", "unknown PSI protocol 'MAGIC'"),
        (lambda b: b["parties"]["bob"].update(keys=[]), "parties.bob.keys", "at least 1"),
        (lambda b: b["parties"]["bob"].pop("input"), "parties.bob.input", "Field required"),
        (
            lambda b: b["parties"]["bob"].update(output="/etc/x.csv"),
            "parties.bob.output",
            "absolute",
        ),
        (
            lambda b: b["parties"]["alice"].update(input="../bob/a.csv"),
            "parties.alice.input",
            "'..'",
        ),
        (
            lambda b: b["parties"].update({"Bad Name": b["parties"]["bob"]}),
            "parties",
            "invalid party name",
        ),
        (lambda b: b.update(deadline="2026-11-22T10:00:00"), "deadline", "time zone"),
        (lambda b: b.update(extra=1), "extra", "Extra inputs"),
    ],
)
def test_bad_requests_name_the_field(mutate, field, needle):
    body = request()
    mutate(body)
    loc, msg = error_of(body)
    assert loc == field, (loc, msg)
    assert needle in msg, msg


def test_unknown_party_is_named():
    req = PSIJobCreate.model_validate(request())
    with pytest.raises(ValueError, match="unknown party 'bob'"):
        req.check_known({"alice", "carol"})


def test_per_party_params_differ_only_in_self_party_and_validate():
    req = PSIJobCreate.model_validate(request())
    endpoints = {
        "alice": PartyEndpoints("alice.example", 21000, "alice.example", 21100),
        "bob": PartyEndpoints("10.0.0.2", 22000, "10.0.0.2", 22100),
    }
    deadline = dt.datetime(2026, 11, 22, 10, tzinfo=dt.UTC)
    template = job_template(
        kind=psi.KIND,
        job_id="job-1",
        execution_id="exe-1",
        request=req,
        endpoints=endpoints,
        deadline=deadline,
    )
    params = per_party(template)
    assert set(params) == {"alice", "bob"}
    for party, p in params.items():
        model = TaskParams.model_validate(p)  # the node's contract accepts it
        assert model.party == party
        assert p["deadline"] == "2026-11-22T10:00:00Z"
    a, b = params["alice"], params["bob"]
    b_as_a = {**b, "sf_init_config": {**b["sf_init_config"], "self_party": "alice"}}
    assert a == b_as_a
    assert a["sf_init_config"]["cluster"]["bob"]["address"] == "10.0.0.2:22000"
    assert a["task_config"]["keys"] == {"alice": ["uid"], "bob": ["id"]}
    # nothing node-internal or secret
    text = str(a)
    for word in ("listen", "tls", "cert", "key_file", "password", "ray"):
        assert word not in text.lower()

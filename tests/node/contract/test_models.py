"""node.contract: TaskParams / PSITaskConfig validation, StatusEvent round trip (docs/architecture.md §2)."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from pydantic import ValidationError

from node import contract
from node.contract import (
    PSI_PROTOCOLS,
    EventData,
    PSITaskConfig,
    StatusEvent,
    TaskParams,
    TaskStatus,
    normalize_psi_protocol,
    task_request_id,
)


def good_params() -> dict:
    """A valid task_params dict, shaped like the example in docs/architecture.md §2."""
    return {
        "task_id": "job-7f3a",
        "subtask_id": "psi",
        "execution_id": "exe-91c2",
        "deadline": "2026-11-22T10:00:00Z",
        "sf_init_config": {
            "mode": "production",
            "parties": ["alice", "bob"],
            "self_party": "alice",
            "cluster": {
                "alice": {"address": "alice.example:21000"},
                "bob": {"address": "bob.example:21000"},
            },
            "cross_silo_comm_backend": "grpc",
        },
        "spu_config": {
            "cluster_def": {
                "nodes": [
                    {"party": "alice", "address": "alice.example:21100"},
                    {"party": "bob", "address": "bob.example:21100"},
                ],
                "runtime_config": {"protocol": "SEMI2K", "field": "FM128"},
            },
            "link_desc": {"connect_retry_times": 60, "connect_retry_interval_ms": 1000},
        },
        "task_config": good_psi_config(),
    }


def good_psi_config() -> dict:
    return {
        "task_type": "psi",
        "keys": {"alice": ["uid"], "bob": ["uid"]},
        "input_paths": {"alice": "customers.csv", "bob": "accounts.csv"},
        "output_paths": {"alice": "out/job-7f3a.csv", "bob": "out/job-7f3a.csv"},
        "receiver": "alice",
        "protocol": "RR22",
        "sort": True,
        "broadcast_result": False,
    }


def rejected(model, data: dict) -> str:
    """Validate `data`, expect a ValidationError, return its text."""
    with pytest.raises(ValidationError) as exc_info:
        model.model_validate(data)
    return str(exc_info.value)


# --- TaskParams: the good case ----------------------------------------------------------------
def test_good_task_params_validate():
    params = TaskParams.model_validate(good_params())
    assert params.party == "alice"
    assert params.task_type == "psi"
    assert params.sf_init_config.parties == ["alice", "bob"]
    assert params.sf_init_config.cluster["bob"].address == "bob.example:21000"
    assert params.deadline == dt.datetime(2026, 11, 22, 10, 0, tzinfo=dt.UTC)
    assert params.deadline.utcoffset() == dt.timedelta(0)
    assert [n.party for n in params.spu_config.cluster_def.nodes] == ["alice", "bob"]


def test_good_task_params_json_round_trip():
    params = TaskParams.model_validate(good_params())
    again = TaskParams.model_validate_json(params.model_dump_json())
    assert again == params


def test_optional_parts_may_be_omitted():
    data = good_params()
    del data["spu_config"]
    params = TaskParams.model_validate(data)
    assert params.spu_config is None


def test_a_task_without_a_deadline_is_refused():
    """A task never waits or runs forever, and the node's replay record can expire."""
    data = good_params()
    del data["deadline"]
    with pytest.raises(ValidationError, match="deadline"):
        TaskParams.model_validate(data)


def test_self_party_bob_also_validates():
    data = good_params()
    data["sf_init_config"]["self_party"] = "bob"
    assert TaskParams.model_validate(data).party == "bob"


# --- TaskParams: rejections -------------------------------------------------------------------
def test_self_party_not_in_parties():
    data = good_params()
    data["sf_init_config"]["self_party"] = "carol"
    msg = rejected(TaskParams, data)
    assert "self_party" in msg
    assert "'carol'" in msg
    assert "not in parties" in msg


def test_cluster_missing_a_party():
    data = good_params()
    del data["sf_init_config"]["cluster"]["bob"]
    msg = rejected(TaskParams, data)
    assert "cluster must name exactly the parties" in msg


def test_cluster_with_an_extra_party():
    data = good_params()
    data["sf_init_config"]["cluster"]["carol"] = {"address": "carol.example:21000"}
    msg = rejected(TaskParams, data)
    assert "cluster must name exactly the parties" in msg


def test_duplicate_party():
    data = good_params()
    data["sf_init_config"]["parties"] = ["alice", "alice"]
    data["sf_init_config"]["cluster"] = {"alice": {"address": "alice.example:21000"}}
    msg = rejected(TaskParams, data)
    assert "duplicate party" in msg


def test_invalid_party_name():
    data = good_params()
    data["sf_init_config"]["parties"] = ["alice", "Bob!"]
    data["sf_init_config"]["cluster"] = {
        "alice": {"address": "alice.example:21000"},
        "Bob!": {"address": "bob.example:21000"},
    }
    msg = rejected(TaskParams, data)
    assert "invalid party name 'Bob!'" in msg


@pytest.mark.parametrize(
    "address",
    ["bob.example", "bob.example:", ":21000", "bob.example:0", "bob.example:70000", "bob:abc"],
)
def test_bad_cluster_address(address):
    data = good_params()
    data["sf_init_config"]["cluster"]["bob"]["address"] = address
    msg = rejected(TaskParams, data)
    assert "address must be HOST:PORT" in msg
    assert repr(address) in msg
    assert "cluster.bob.address" in msg


@pytest.mark.parametrize("address", ["bob.example:1", "bob.example:65535", "10.0.0.5:21100"])
def test_edge_addresses_accepted(address):
    data = good_params()
    data["sf_init_config"]["cluster"]["bob"]["address"] = address
    data["spu_config"]["cluster_def"]["nodes"][1]["address"] = address
    TaskParams.model_validate(data)


def test_bad_spu_node_address():
    data = good_params()
    data["spu_config"]["cluster_def"]["nodes"][0]["address"] = "alice.example:70000"
    msg = rejected(TaskParams, data)
    assert "address must be HOST:PORT" in msg
    assert "'alice.example:70000'" in msg


@pytest.mark.parametrize("field", ["task_id", "subtask_id", "execution_id"])
@pytest.mark.parametrize("value", ["job 7f3a", "job/7f3a", "../etc", "", "-leading-dash"])
def test_bad_ids(field, value):
    data = good_params()
    data[field] = value
    msg = rejected(TaskParams, data)
    assert field in msg
    assert "must match" in msg


@pytest.mark.parametrize("field", ["task_id", "execution_id"])
def test_id_with_trailing_newline_rejected(field):
    data = good_params()
    data[field] = data[field] + "\n"
    rejected(TaskParams, data)


def test_party_with_trailing_newline_rejected():
    data = good_params()
    data["sf_init_config"]["parties"] = ["alice", "bob\n"]
    data["sf_init_config"]["cluster"] = {
        "alice": {"address": "alice.example:21000"},
        "bob\n": {"address": "bob.example:21000"},
    }
    data["spu_config"] = None
    rejected(TaskParams, data)


def test_naive_deadline_rejected():
    data = good_params()
    data["deadline"] = "2026-11-22T10:00:00"
    msg = rejected(TaskParams, data)
    assert "deadline must carry a time zone" in msg


def test_naive_datetime_object_deadline_rejected():
    data = good_params()
    data["deadline"] = dt.datetime(2026, 11, 22, 10, 0)
    msg = rejected(TaskParams, data)
    assert "deadline must carry a time zone" in msg


def test_offset_deadline_accepted():
    data = good_params()
    data["deadline"] = "2026-11-22T12:00:00+02:00"
    params = TaskParams.model_validate(data)
    assert params.deadline == dt.datetime(2026, 11, 22, 10, 0, tzinfo=dt.UTC)


def test_missing_task_type():
    data = good_params()
    del data["task_config"]["task_type"]
    msg = rejected(TaskParams, data)
    assert "task_config.task_type is required" in msg


@pytest.mark.parametrize("value", ["", 7, None])
def test_empty_or_non_string_task_type(value):
    data = good_params()
    data["task_config"]["task_type"] = value
    msg = rejected(TaskParams, data)
    assert "task_config.task_type is required" in msg


def test_spu_nodes_not_matching_parties():
    data = good_params()
    data["spu_config"]["cluster_def"]["nodes"][1]["party"] = "carol"
    msg = rejected(TaskParams, data)
    assert "spu_config.cluster_def.nodes must name exactly the parties" in msg


def test_spu_nodes_duplicated_party():
    data = good_params()
    data["spu_config"]["cluster_def"]["nodes"][1]["party"] = "alice"
    msg = rejected(TaskParams, data)
    assert "spu_config.cluster_def.nodes must name exactly the parties" in msg


def test_spu_needs_two_nodes():
    data = good_params()
    data["spu_config"]["cluster_def"]["nodes"] = data["spu_config"]["cluster_def"]["nodes"][:1]
    msg = rejected(TaskParams, data)
    assert "nodes" in msg


def test_extra_unknown_top_level_field():
    data = good_params()
    data["ray_address"] = "10.0.0.1:6379"
    msg = rejected(TaskParams, data)
    assert "ray_address" in msg
    assert "Extra inputs are not permitted" in msg


def test_extra_field_inside_sf_init_config():
    data = good_params()
    data["sf_init_config"]["tls_config"] = {"cert": "/etc/secret.pem"}
    msg = rejected(TaskParams, data)
    assert "tls_config" in msg
    assert "Extra inputs are not permitted" in msg


def test_non_production_mode_rejected():
    data = good_params()
    data["sf_init_config"]["mode"] = "simulation"
    msg = rejected(TaskParams, data)
    assert "mode" in msg


# --- PSITaskConfig ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("RR22", "PROTOCOL_RR22"),
        ("RR22_FAST", "PROTOCOL_RR22"),
        ("RR22_FAST_PSI_2PC", "PROTOCOL_RR22"),
        ("PROTOCOL_RR22", "PROTOCOL_RR22"),
        ("rr22", "PROTOCOL_RR22"),
        ("protocol_rr22", "PROTOCOL_RR22"),
        ("ECDH", "PROTOCOL_ECDH"),
        ("ECDH_PSI_2PC", "PROTOCOL_ECDH"),
        ("ecdh", "PROTOCOL_ECDH"),
        ("PROTOCOL_ECDH", "PROTOCOL_ECDH"),
        ("KKRT", "PROTOCOL_KKRT"),
        ("KKRT_PSI_2PC", "PROTOCOL_KKRT"),
        ("kkrt_psi_2pc", "PROTOCOL_KKRT"),
        ("PROTOCOL_KKRT", "PROTOCOL_KKRT"),
        (" rr22 ", "PROTOCOL_RR22"),
    ],
)
def test_protocol_aliases_normalize(given, expected):
    cfg = dict(good_psi_config(), protocol=given)
    assert PSITaskConfig.model_validate(cfg).protocol == expected
    assert normalize_psi_protocol(given) == expected
    assert expected in PSI_PROTOCOLS


def test_default_protocol_is_rr22():
    cfg = good_psi_config()
    del cfg["protocol"]
    assert PSITaskConfig.model_validate(cfg).protocol == "PROTOCOL_RR22"


def test_unknown_protocol_rejected_naming_it():
    cfg = dict(good_psi_config(), protocol="BC22_MAGIC")
    msg = rejected(PSITaskConfig, cfg)
    assert "unknown PSI protocol 'BC22_MAGIC'" in msg
    assert "PROTOCOL_RR22" in msg  # lists what is accepted
    with pytest.raises(ValueError, match="BC22_MAGIC"):
        normalize_psi_protocol("BC22_MAGIC")


def test_receiver_not_among_parties():
    cfg = dict(good_psi_config(), receiver="carol")
    msg = rejected(PSITaskConfig, cfg)
    assert "receiver 'carol' is not one of the parties" in msg


def test_input_paths_naming_different_parties():
    cfg = good_psi_config()
    cfg["input_paths"] = {"alice": "customers.csv", "carol": "accounts.csv"}
    msg = rejected(PSITaskConfig, cfg)
    assert "task_config.input_paths must name the same parties as task_config.keys" in msg


def test_output_paths_naming_different_parties():
    cfg = good_psi_config()
    cfg["output_paths"] = {"alice": "out.csv"}
    msg = rejected(PSITaskConfig, cfg)
    assert "task_config.output_paths must name the same parties as task_config.keys" in msg


@pytest.mark.parametrize("cols", [[], [""]])
def test_empty_key_list(cols):
    cfg = good_psi_config()
    cfg["keys"]["bob"] = cols
    msg = rejected(PSITaskConfig, cfg)
    assert "task_config.keys['bob'] must be a non-empty list of column names" in msg


def _parties(cfg: dict, *names: str) -> dict:
    for name in ("keys", "input_paths", "output_paths"):
        for party in names:
            cfg[name][party] = cfg[name]["bob"]
    return cfg


def test_a_protocol_runs_only_with_the_party_counts_it_supports():
    three = _parties(good_psi_config(), "carol")
    msg = rejected(PSITaskConfig, three)  # RR22
    assert "protocol RR22 runs with 2 parties, got 3; for 3 parties use ECDH_3PC" in msg
    assert PSITaskConfig.model_validate({**three, "protocol": "ECDH_3PC"}).protocol == (
        "ECDH_PSI_3PC"
    )
    four = _parties(good_psi_config(), "carol", "dave")
    msg = rejected(PSITaskConfig, {**four, "protocol": "ECDH_PSI_3PC"})
    assert "ECDH_3PC runs with 3 parties, got 4; for 4 parties use ECDH_NPC, KKRT_NPC" in msg
    assert PSITaskConfig.model_validate({**four, "protocol": "KKRT_NPC"})
    two = good_psi_config()
    msg = rejected(PSITaskConfig, {**two, "protocol": "ECDH_NPC"})
    assert "ECDH_NPC runs with 3 to 8 parties, got 2; for 2 parties use RR22, ECDH, KKRT" in msg
    many = _parties(good_psi_config(), *(f"p{i}" for i in range(8)))
    msg = rejected(PSITaskConfig, {**many, "protocol": "ECDH_NPC"})
    assert "a PSI runs between 2 and 8 parties, got 10" in msg


def test_psi_task_type_must_be_psi():
    cfg = dict(good_psi_config(), task_type="train")
    msg = rejected(PSITaskConfig, cfg)
    assert "task_type" in msg


def test_psi_config_defaults():
    cfg = good_psi_config()
    for name in ("sort", "broadcast_result"):
        del cfg[name]
    parsed = PSITaskConfig.model_validate(cfg)
    assert parsed.sort is True
    assert parsed.broadcast_result is False
    assert parsed.duplicates == "distinct"


# --- StatusEvent ------------------------------------------------------------------------------
def make_event(**kw) -> StatusEvent:
    base = {
        "seq": 3,
        "task_request_id": task_request_id("exe-91c2", "alice"),
        "task_id": "job-7f3a",
        "subtask_id": "psi",
        "execution_id": "exe-91c2",
        "party": "alice",
        "status": TaskStatus.PROGRESS,
        "data": EventData(stage="algorithm_running", progress=0.5),
        "worker_container": "alice-worker-1",
    }
    base.update(kw)
    return StatusEvent(**base)


def test_status_event_stream_fields_round_trip():
    ev = make_event()
    fields = ev.to_stream_fields()
    assert set(fields) == {"event"}
    assert isinstance(fields["event"], str)
    again = StatusEvent.from_stream_fields(fields)
    assert again == ev
    assert again.timestamp.tzinfo is not None


def test_status_event_round_trip_with_bytes_like_redis():
    ev = make_event(
        status=TaskStatus.FAILURE,
        data=EventData(
            stage="task_finished",
            error=contract.ErrorInfo(type="KeyColumnMissing", message="bad key column 'uid'"),
        ),
    )
    raw = {k.encode(): v.encode() for k, v in ev.to_stream_fields().items()}
    again = StatusEvent.from_stream_fields(raw)
    assert again == ev
    assert again.data.error.message == "bad key column 'uid'"


def test_status_event_json_has_all_design_fields():
    ev = make_event()
    doc = json.loads(ev.to_stream_fields()["event"])
    assert set(doc) == {
        "event_id",
        "seq",
        "task_request_id",
        "task_id",
        "subtask_id",
        "execution_id",
        "party",
        "status",
        "timestamp",
        "data",
        "worker_container",
        "task_name",
    }
    # docs/architecture.md §2 data fields, plus performance_metrics (filled on SUCCESS)
    assert set(doc["data"]) == {"stage", "progress", "result", "error", "performance_metrics"}
    assert doc["status"] == "PROGRESS"
    assert doc["task_name"] == contract.TASK_EXECUTE
    ts = dt.datetime.fromisoformat(doc["timestamp"].replace("Z", "+00:00"))
    assert ts.utcoffset() == dt.timedelta(0)


def test_status_event_ids_are_unique():
    assert make_event().event_id != make_event().event_id


def test_unknown_status_rejected():
    doc = json.loads(make_event().to_stream_fields()["event"])
    doc["status"] = "EXPLODED"
    with pytest.raises(ValidationError):
        StatusEvent.from_stream_fields({"event": json.dumps(doc)})


# --- ids --------------------------------------------------------------------------------------
def test_task_request_id_format():
    assert task_request_id("exe-91c2", "alice") == "exe-91c2.alice"
    assert task_request_id("exe-91c2", "bob") == "exe-91c2.bob"


def test_new_execution_id_is_a_valid_id():
    a, b = contract.new_execution_id(), contract.new_execution_id()
    assert a != b
    assert a.startswith("exe-")
    assert contract.ID_RE.match(a)
    data = good_params()
    data["execution_id"] = a
    TaskParams.model_validate(data)
    assert contract.ID_RE.match(task_request_id(a, "alice"))


def test_every_task_has_a_queue():
    for name in (
        contract.TASK_EXECUTE,
        contract.TASK_HELLO,
        contract.TASK_HEALTH,
        contract.TASK_LIST_DATASETS,
    ):
        assert contract.TASK_QUEUES[name] in contract.QUEUES
    assert contract.TASK_QUEUES[contract.TASK_EXECUTE] == contract.SECRETFLOW_QUEUE


# --- typed errors -------------------------------------------------------------------------------
def test_error_info_is_one_readable_line_with_the_trace_in_details():
    err = contract.ErrorInfo(
        type="PeerConnectTimeout",
        message="\x1b[31mparty alice:\x1b[0m bob did not join\n  within 45 s",
        details="\x1b[33mTraceback\x1b[0m …\n  frame",
    )
    assert err.type is contract.ErrorType.PEER_CONNECT_TIMEOUT
    assert err.message == "party alice: bob did not join within 45 s"
    assert err.details == "Traceback …\n  frame"
    assert err.retryable


def test_an_unknown_error_type_from_an_older_node_is_kept_as_an_internal_error():
    err = contract.ErrorInfo(type="SomethingNew", message="x" * 1000)
    assert err.type is contract.ErrorType.INTERNAL and not err.retryable
    assert len(err.message) == contract.MESSAGE_MAX and err.message.endswith("…")


def test_retryable_set_holds_only_transient_causes():
    E = contract.ErrorType
    assert {E.PEER_CONNECT_TIMEOUT, E.START_TIMEOUT, E.WORKER_LOST} <= contract.RETRYABLE
    refusals = {E.DUPLICATE_KEYS, E.MALFORMED_CSV, E.EMPTY_TABLE, E.TLS_HANDSHAKE, E.CANCELLED}
    assert not refusals & contract.RETRYABLE

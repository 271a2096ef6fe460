"""node/jobtypes/table.py, node/jobtypes/psi.py `prepare`, and node/settings.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from node.contract import ErrorType, TaskParams
from node.jobtypes import psi
from node.jobtypes.spec import JobRefused, JobType, Prepared
from node.jobtypes.table import JOB_TYPES, get_job, job_table, known_job_types, node_job_types
from node.settings import NodeSettings

BROKER = "redis://node:s3cretpw@127.0.0.1:1/0"


@pytest.fixture(autouse=True)
def _clean_node_env(monkeypatch):
    """NodeSettings reads NODE_* variables; the caller's environment must not leak in."""
    for name in list(os.environ):
        if name.startswith("NODE_"):
            monkeypatch.delenv(name)


# --- the table --------------------------------------------------------------------------------
def test_psi_is_known():
    assert "psi" in known_job_types()
    job = get_job("psi")
    assert job.name == "psi"
    assert job is psi.JOB
    assert job.prepare is psi.prepare
    assert job.run is psi.run
    assert job.needs_spu is True


def test_unknown_type_refused_naming_it_and_listing_known():
    with pytest.raises(JobRefused) as exc_info:
        get_job("train_xgb")
    msg = str(exc_info.value)
    assert "'train_xgb'" in msg
    assert "psi" in msg
    for known in known_job_types():
        assert known in msg


def test_job_refused_is_a_value_error():
    assert issubclass(JobRefused, ValueError)


def test_two_job_types_of_one_name_are_refused():
    with pytest.raises(ValueError, match="'psi' declared twice"):
        job_table(
            [
                psi.JOB,
                JobType(name="psi", prepared=psi.PsiPrepared, prepare=psi.prepare, run=psi.run),
            ]
        )
    assert get_job("psi") is psi.JOB  # the node's own table is untouched


def test_a_table_with_another_job_type_dispatches_to_it():
    echo = JobType(
        name="unit-test-echo", prepared=Prepared, prepare=lambda p, s: Prepared(), run=lambda *a: {}
    )
    jobs = job_table([psi.JOB, echo])
    assert get_job("unit-test-echo", jobs) is echo
    assert known_job_types(jobs) == ["psi", "unit-test-echo"]
    assert "unit-test-echo" not in known_job_types()  # declared tables, no global registry
    with pytest.raises(TypeError):
        jobs["x"] = echo  # type: ignore[index]


def test_a_node_runs_the_job_types_its_settings_name_beside_its_own(tmp_path):
    s = make_settings(tmp_path, job_modules="tests.e2e.hello_job")
    jobs = node_job_types(s)
    assert known_job_types(jobs) == ["hello", "psi", "ub_psi", "ub_psi_cache", "warmup"]
    assert get_job("hello", jobs).name == "hello" and get_job("psi", jobs) is psi.JOB
    assert node_job_types(make_settings(tmp_path)) is JOB_TYPES  # none named: the built-in table


@pytest.mark.parametrize(
    ("module", "why"),
    [("tests.no_such_module", "No module named"), ("node.heap", "declares no JOB")],
)
def test_a_job_module_that_cannot_be_used_refuses_every_job_naming_it(tmp_path, module, why):
    with pytest.raises(JobRefused, match=f"NODE_JOB_MODULES \\({module}\\) cannot be used") as info:
        node_job_types(make_settings(tmp_path, job_modules=module))
    assert why in str(info.value) and info.value.type == ErrorType.INTERNAL


def test_job_modules_do_not_import_the_table():
    """node.jobtypes.* → node.jobtypes.table would be an import cycle (the table lists the jobs)."""
    code = "import sys, node.jobtypes.psi; print('node.jobtypes.table' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "False"


# --- psi.prepare ------------------------------------------------------------------------------
def make_settings(tmp_path: Path, party: str = "alice", **overrides) -> NodeSettings:
    certs = tmp_path / "certs"
    fields = {
        "party": party,
        "broker_url": BROKER,
        "data_root": tmp_path / "data",
        "state_dir": tmp_path / "state",
        "cert_file": certs / f"{party}.crt",
        "key_file": certs / f"{party}.key",
        "ca_file": certs / "ca.crt",
        "trusted_signers": str(certs / "coordinator.crt"),
        "allowed_peers": ["bob" if party == "alice" else "alice"],
    }
    fields.update(overrides)
    return NodeSettings(**fields)


def make_params(self_party: str = "alice", **task_config) -> TaskParams:
    cfg = {
        "task_type": "psi",
        "keys": {"alice": ["uid"], "bob": ["uid"]},
        "input_paths": {"alice": "customers.csv", "bob": "accounts.csv"},
        "output_paths": {"alice": "out/job-7f3a.csv", "bob": "out/job-7f3a.csv"},
        "receiver": "alice",
        "protocol": "ecdh_psi_2pc",
    }
    cfg.update(task_config)
    return TaskParams.model_validate(
        {
            "task_id": "job-7f3a",
            "subtask_id": "psi",
            "execution_id": "exe-91c2",
            "deadline": "2099-01-01T00:00:00Z",
            "sf_init_config": {
                "parties": ["alice", "bob"],
                "self_party": self_party,
                "cluster": {
                    "alice": {"address": "127.0.0.1:21000"},
                    "bob": {"address": "127.0.0.1:22000"},
                },
            },
            "spu_config": {
                "cluster_def": {
                    "nodes": [
                        {"party": "alice", "address": "127.0.0.1:21100"},
                        {"party": "bob", "address": "127.0.0.1:22100"},
                    ]
                }
            },
            "task_config": cfg,
        }
    )


@pytest.fixture()
def settings(tmp_path) -> NodeSettings:
    s = make_settings(tmp_path)
    s.data_root.mkdir()
    (s.data_root / "customers.csv").write_text("uid,name,age\n1,a,30\n2,b,40\n")
    return s


def test_prepare_good_csv(settings):
    prepared = psi.prepare(make_params(), settings).model_dump()
    root = settings.data_root
    assert prepared["protocol"] == "PROTOCOL_ECDH"
    assert prepared["receiver"] == "alice"
    assert prepared["keys"] == {"alice": ["uid"], "bob": ["uid"]}
    inp, out = Path(prepared["input_path"]), Path(prepared["output_path"])
    assert inp.is_absolute() and out.is_absolute()
    assert prepared["source_path"] == str(root / "customers.csv")
    # the PSI reads the key-only copy in the job's work folder inside the data root
    assert inp == root / ".partyline/work/exe-91c2.alice/keys-customers.csv"
    assert inp.read_text() == "k0\n31\n32\npartyline-sentinel\n"  # the sentinel last
    assert out == root / "out" / "job-7f3a.csv"
    assert root in inp.parents and root in out.parents
    assert out.parent.is_dir()  # output directory made ready inside the root
    assert prepared["output_name"] == "out/job-7f3a.csv"
    assert prepared["sort"] is True
    assert prepared["broadcast_result"] is False
    assert prepared["duplicates"] == "distinct"
    assert prepared["input_check"]["rows"] > 0


def test_prepare_via_the_table_for_bob(tmp_path):
    s = make_settings(tmp_path, party="bob")
    s.data_root.mkdir()
    (s.data_root / "accounts.csv").write_text("uid,balance\n1,10\n")
    prepared = get_job("psi").prepare(make_params("bob", protocol="KKRT"), s).model_dump()
    assert prepared["source_path"] == str(s.data_root / "accounts.csv")
    assert prepared["protocol"] == "PROTOCOL_KKRT"


def test_prepare_missing_key_column(settings):
    params = make_params(keys={"alice": ["uid", "email"], "bob": ["uid", "email"]})
    with pytest.raises(JobRefused) as exc_info:
        psi.prepare(params, settings)
    msg = str(exc_info.value)
    assert "'email'" in msg
    assert "customers.csv" in msg
    assert exc_info.value.type == ErrorType.KEY_COLUMN_MISSING
    assert "uid, name, age" in msg  # the CSV's columns


def test_prepare_input_escaping_root(settings, tmp_path):
    (tmp_path / "secret.csv").write_text("uid\n1\n")
    params = make_params(input_paths={"alice": "../secret.csv", "bob": "accounts.csv"})
    with pytest.raises(JobRefused, match=r"\.\."):
        psi.prepare(params, settings)


def test_prepare_absolute_input_outside_root(settings):
    params = make_params(input_paths={"alice": "/etc/passwd", "bob": "accounts.csv"})
    with pytest.raises(JobRefused, match="outside the data root"):
        psi.prepare(params, settings)


def test_prepare_output_escaping_root(settings, tmp_path):
    params = make_params(output_paths={"alice": "../../stolen.csv", "bob": "out.csv"})
    with pytest.raises(JobRefused):
        psi.prepare(params, settings)
    assert not (tmp_path.parent / "stolen.csv").exists()


def test_prepare_missing_input_file(settings):
    params = make_params(
        input_paths={"alice": "nope.csv", "bob": "accounts.csv"},
        output_paths={"alice": "new/dir/out.csv", "bob": "out.csv"},
    )
    with pytest.raises(JobRefused, match=r"'nope\.csv' does not exist"):
        psi.prepare(params, settings)
    assert not (settings.data_root / "new").exists(), "a refused task created directories"


def test_prepare_input_is_a_directory(settings):
    (settings.data_root / "dir.csv").mkdir()
    params = make_params(input_paths={"alice": "dir.csv", "bob": "accounts.csv"})
    with pytest.raises(JobRefused, match=r"'dir\.csv' does not exist"):
        psi.prepare(params, settings)


def test_prepare_output_equals_input(settings):
    params = make_params(output_paths={"alice": "customers.csv", "bob": "out.csv"})
    with pytest.raises(JobRefused, match="output path equals input path"):
        psi.prepare(params, settings)
    assert (settings.data_root / "customers.csv").read_text().startswith("uid,name,age")


def test_prepare_output_equals_input_through_absolute_spelling(settings):
    absolute = str(settings.data_root / "customers.csv")
    params = make_params(output_paths={"alice": absolute, "bob": "out.csv"})
    with pytest.raises(JobRefused, match="output path equals input path"):
        psi.prepare(params, settings)


def test_prepare_empty_input_csv(settings):
    (settings.data_root / "empty.csv").write_text("")
    params = make_params(input_paths={"alice": "empty.csv", "bob": "accounts.csv"})
    with pytest.raises(JobRefused, match=r"table empty\.csv is empty: no header line"):
        psi.prepare(params, settings)


def test_prepare_invalid_task_config(settings):
    params = make_params(protocol="NOPE")
    with pytest.raises(JobRefused) as exc_info:
        psi.prepare(params, settings)
    msg = str(exc_info.value)
    assert "invalid PSI task_config" in msg
    assert "protocol" in msg
    assert "'NOPE'" in msg


def test_prepare_keys_not_naming_sf_parties(settings):
    params = make_params(
        keys={"alice": ["uid"], "carol": ["uid"]},
        input_paths={"alice": "customers.csv", "carol": "c.csv"},
        output_paths={"alice": "out.csv", "carol": "out.csv"},
    )
    with pytest.raises(JobRefused, match="must name exactly the parties"):
        psi.prepare(params, settings)


def test_prepare_needs_spu_config(settings):
    params = make_params().model_copy(update={"spu_config": None})
    with pytest.raises(JobRefused, match="spu_config"):
        psi.prepare(params, settings)


# --- settings ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/0",
        "redis://node@127.0.0.1:6379/0",
        "redis://node:@127.0.0.1:6379/0",
        "redis://node:changeme@127.0.0.1:6379/0",
        "redis://node:CHANGEME@127.0.0.1:6379/0",
        "rediss://node:password@redis.example:6380/0",
    ],
)
def test_broker_without_real_password_rejected(tmp_path, url):
    with pytest.raises(ValidationError) as exc_info:
        make_settings(tmp_path, broker_url=url)
    errors = exc_info.value.errors()
    assert errors[0]["loc"] == ("broker_url",)
    assert "real password" in errors[0]["msg"]


def test_result_backend_placeholder_rejected(tmp_path):
    with pytest.raises(ValidationError) as exc_info:
        make_settings(tmp_path, result_backend="redis://node:secret@127.0.0.1:6379/1")
    assert exc_info.value.errors()[0]["loc"] == ("result_backend",)


def test_broker_wrong_scheme_rejected_without_echoing_password(tmp_path):
    with pytest.raises(ValidationError) as exc_info:
        make_settings(tmp_path, broker_url="amqp://node:Sup3rS3cret@127.0.0.1:5672//")
    msg = exc_info.value.errors()[0]["msg"]
    assert "'amqp'" in msg
    assert "Sup3rS3cret" not in msg  # what `python -m node` prints


def test_real_password_accepted(tmp_path):
    s = make_settings(tmp_path)
    assert s.broker_url == BROKER
    assert s.backend_url == BROKER


def test_settings_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("NODE_PARTY", "alice")
    monkeypatch.setenv("NODE_BROKER_URL", BROKER)
    monkeypatch.setenv("NODE_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.setenv("NODE_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("NODE_CERT_FILE", str(tmp_path / "alice.crt"))
    monkeypatch.setenv("NODE_KEY_FILE", str(tmp_path / "alice.key"))
    monkeypatch.setenv("NODE_CA_FILE", str(tmp_path / "ca.crt"))
    monkeypatch.setenv("NODE_ALLOWED_PEERS", "bob, carol")
    monkeypatch.setenv("NODE_TRUSTED_SIGNERS", str(tmp_path / "coordinator.crt"))
    monkeypatch.setenv("NODE_RAY_ADDRESS", "127.0.0.1:26379")
    s = NodeSettings()
    assert s.party == "alice"
    assert s.allowed_peers == ["bob", "carol"]
    assert s.data_root == (tmp_path / "data").resolve()
    assert s.ray_port == 26379
    assert s.tls_config() == {
        "cert": str(tmp_path / "alice.crt"),
        "key": str(tmp_path / "alice.key"),
        "ca_cert": str(tmp_path / "ca.crt"),
    }


def test_allowed_peers_drops_self_and_blanks(tmp_path, monkeypatch):
    monkeypatch.setenv("NODE_PARTY", "alice")
    monkeypatch.setenv("NODE_BROKER_URL", BROKER)
    monkeypatch.setenv("NODE_DATA_ROOT", str(tmp_path))
    for name in ("CERT_FILE", "KEY_FILE", "CA_FILE", "TRUSTED_SIGNERS"):
        monkeypatch.setenv(f"NODE_{name}", str(tmp_path / name.lower()))
    monkeypatch.setenv("NODE_ALLOWED_PEERS", " alice,, bob ,")
    assert NodeSettings().allowed_peers == ["bob"]


def test_invalid_party_name_rejected(tmp_path):
    with pytest.raises(ValidationError, match="invalid party name"):
        make_settings(tmp_path, party="Alice")


def test_spu_tls_opts_both_sides(tmp_path):
    opts = make_settings(tmp_path).spu_tls_opts()
    assert set(opts) == {"server_ssl_opts", "client_ssl_opts"}
    for side in opts.values():
        assert side["certificate_path"].endswith("alice.crt")
        assert side["private_key_path"].endswith("alice.key")
        assert side["ca_file_path"].endswith("ca.crt")


def test_two_jobs_naming_one_output_the_second_is_refused_until_the_first_ends(settings):
    """Slots > 1, or a warm and a cold job side by side: both would pass the 'already exists'
    check (the output is not there yet). The output is claimed from preflight to its rename,
    so the second is refused with OutputExists naming the first job."""
    from node.dataroot.paths import release_output

    first = psi.prepare(make_params(), settings)
    other = make_params().model_copy(update={"task_id": "job-other", "execution_id": "exe-o1"})
    with pytest.raises(JobRefused, match="being written by job job-7f3a") as exc_info:
        psi.prepare(other, settings)
    assert exc_info.value.type == ErrorType.OUTPUT_EXISTS
    release_output(settings.data_root, tuple(first.output_claim or ()), "exe-91c2")
    assert psi.prepare(other, settings).output_claim == ["out", "job-7f3a.csv"]


def test_a_refusal_after_the_claim_releases_it(settings):
    bad = make_params(keys={"alice": ["nope"], "bob": ["uid"]})
    with pytest.raises(JobRefused):
        psi.prepare(bad, settings)
    other = make_params().model_copy(update={"task_id": "job-other", "execution_id": "exe-o1"})
    psi.prepare(other, settings)  # not refused as busy


def test_a_table_refused_by_its_check_leaves_no_key_copy(settings):
    (settings.data_root / "dups.csv").write_text("uid,v\n1,a\n1,b\n")
    params = make_params(input_paths={"alice": "dups.csv", "bob": "x.csv"}, duplicates="refuse")
    with pytest.raises(JobRefused):
        psi.prepare(params, settings)
    work = settings.data_root / ".partyline" / "work"
    assert not work.exists() or not list(work.iterdir())

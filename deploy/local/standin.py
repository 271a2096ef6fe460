"""A coordinator stand-in for tests and benchmarks: builds matching per-party PSI params and sends them."""

from __future__ import annotations

import csv
import datetime as dt
import random
import uuid
from pathlib import Path

from deploy.local.federation import LocalFederation
from node.contract import SECRETFLOW_QUEUE, TASK_EXECUTE, new_execution_id, task_request_id


def write_csv(path: Path, key: str, keys: list[str], extra_cols: int = 1) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow([key] + [f"f{i}" for i in range(extra_cols)])
        for k in keys:
            w.writerow([k] + [random.randint(0, 999) for _ in range(extra_cols)])


def read_keys(path: Path, key: str) -> list[str]:
    with open(path, newline="") as fh:
        return [row[key] for row in csv.DictReader(fh)]


def psi_params(
    fed: LocalFederation,
    parties: list[str],
    *,
    keys: dict[str, list[str]],
    inputs: dict[str, str],
    outputs: dict[str, str],
    receiver: str,
    protocol: str = "RR22",
    broadcast_result: bool = False,
    overwrite: bool = False,
    task_id: str | None = None,
    deadline: dt.datetime | None = None,
) -> dict[str, dict]:
    """One template; per party only self_party differs. Fresh fed/SPU ports per job."""
    task_id = task_id or f"job-{uuid.uuid4().hex[:10]}"
    execution_id = new_execution_id()
    cluster, spu_nodes = {}, []
    for p in parties:
        fed_port, spu_port = fed.nodes[p].job_ports()
        cluster[p] = {"address": f"127.0.0.1:{fed_port}"}
        spu_nodes.append({"party": p, "address": f"127.0.0.1:{spu_port}"})
    template = {
        "task_id": task_id,
        "subtask_id": "psi",
        "execution_id": execution_id,
        "deadline": (deadline or dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat(),
        "sf_init_config": {
            "mode": "production",
            "parties": parties,
            "self_party": None,
            "cluster": cluster,
            "cross_silo_comm_backend": "grpc",
        },
        "spu_config": {
            "cluster_def": {
                "nodes": spu_nodes,
                "runtime_config": {"protocol": "SEMI2K", "field": "FM128"},
            },
            "link_desc": {"connect_retry_times": 60, "connect_retry_interval_ms": 1000},
        },
        "task_config": {
            "task_type": "psi",
            "keys": keys,
            "input_paths": inputs,
            "output_paths": outputs,
            "receiver": receiver,
            "protocol": protocol,
            "sort": True,
            "broadcast_result": broadcast_result,
            "overwrite": overwrite,
        },
    }
    out = {}
    for p in parties:
        params = {**template, "sf_init_config": {**template["sf_init_config"], "self_party": p}}
        out[p] = params
    return out


def send(
    fed: LocalFederation, per_party: dict[str, dict], to: dict[str, str] | None = None
) -> dict:
    """Send each party's params to its queue (or to the queue of `to[party]`). → AsyncResults."""
    results = {}
    for p, params in per_party.items():
        target = fed.nodes[(to or {}).get(p, p)]
        app = target.celery_client()
        request_id = task_request_id(params["execution_id"], params["sf_init_config"]["self_party"])
        results[p] = app.send_task(
            TASK_EXECUTE,
            args=[request_id, params],
            task_id=request_id,
            queue=SECRETFLOW_QUEUE,
        )
    return results

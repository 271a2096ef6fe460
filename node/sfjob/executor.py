"""Inside the supervised job process: cluster → devices → dispatch → teardown, with metrics.

Run as `python -m node.sfjob.executor` by node.launch.runner. Protocol (JSON lines):
  child → parent on fd $PARTYLINE_MSG_FD: {"type": "ready"}, {"type": "stage", …},
                                          {"type": "result", "result": …}, {"type": "closed", …}
  parent → child on stdin: one line {"params", "prepared", "settings", "log_path"}
The child imports secretflow before it says "ready", so a pre-started spare takes a job warm.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

from node.contract import ResultStatus, Stage, TaskParams, utcnow
from node.settings import NodeSettings

MSG_FD_ENV = "PARTYLINE_MSG_FD"


def execute(
    params: TaskParams,
    prepared: dict[str, Any],
    settings: NodeSettings,
    report: Callable[..., None],
) -> tuple[dict[str, Any], Callable[[], float]]:
    """Run one job; return (TaskResult dict, teardown) — teardown() runs sf.shutdown, returns s."""
    from node.jobtypes.table import get_job
    from node.sfjob import cluster, devices

    job = get_job(params.task_type)
    started_at = utcnow()
    t0 = time.perf_counter()
    cluster.init_cluster(params, settings)
    t1 = time.perf_counter()
    report(Stage.CLUSTER_INITIALIZED, 0.3)
    devs = devices.create_devices(params, settings)
    t2 = time.perf_counter()
    report(Stage.DEVICES_READY, 0.4)
    report(Stage.ALGORITHM_RUNNING, 0.5)
    output = job.run(prepared, params, devs, report)
    t3 = time.perf_counter()
    report(Stage.ALGORITHM_DONE, 0.95)

    def teardown() -> float:
        s = time.perf_counter()
        devices.destroy_devices(devs)
        cluster.shutdown_cluster()
        return time.perf_counter() - s

    result = success_result(
        params,
        output,
        started_at,
        devs,
        cluster_init_s=t1 - t0,
        device_init_s=t2 - t1,
        algorithm_s=t3 - t2,
    )
    return result, teardown


def success_result(
    params: TaskParams,
    output: dict[str, Any],
    started_at: Any,
    devs: dict,
    *,
    cluster_init_s: float,
    device_init_s: float,
    algorithm_s: float,
    session: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The TaskResult dict of a job that succeeded (its timings in seconds)."""
    return {
        "status": ResultStatus.SUCCESS.value,
        "result": output,
        "error": None,
        "performance_metrics": {
            "cluster_init_s": round(cluster_init_s, 3),
            "device_init_s": round(device_init_s, 3),
            "algorithm_s": round(algorithm_s, 3),
            "teardown_s": 0.0,
            "total_s": round(cluster_init_s + device_init_s + algorithm_s, 3),
            **(session or {}),
        },
        "task_metadata": {
            "task_id": params.task_id,
            "subtask_id": params.subtask_id,
            "execution_id": params.execution_id,
            "party": params.party,
            "task_type": params.task_type,
            "started_at": started_at.isoformat(),
            "completed_at": utcnow().isoformat(),
            "devices_used": sorted(devs),
        },
    }


def send_message(fd: int, msg: dict[str, Any]) -> None:
    os.write(fd, (json.dumps(msg, default=str) + "\n").encode())


def send_error(fd: int, exc: BaseException) -> None:
    """Report an exception (the whole trace also goes to the job log)."""
    trace = traceback.format_exc()
    sys.stderr.write(trace)
    send_message(
        fd,
        {
            "type": "error",
            "error": {
                "type": type(exc).__name__,
                "message": str(exc)[:20_000],
                "trace": trace[-20_000:],
            },
        },
    )
    sys.stdout.flush()
    sys.stderr.flush()


def redirect_output(log_path: str) -> None:
    """Send this process's stdout/stderr (and Ray's driver log lines) to a job's log."""
    sys.stdout.flush()
    sys.stderr.flush()
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)


def main() -> int:
    fd = int(os.environ[MSG_FD_ENV])
    t_import = time.perf_counter()
    from node.sfjob import sflite

    sflite.load()  # SecretFlow's device layer, imported before the job arrives (warm)

    send_message(fd, {"type": "ready", "import_s": round(time.perf_counter() - t_import, 3)})
    line = sys.stdin.readline()
    if not line:
        return 0  # parent closed: spare discarded
    spec = json.loads(line)
    redirect_output(spec["log_path"])
    params = TaskParams.model_validate(spec["params"])
    settings = NodeSettings.model_validate(spec["settings"])

    def report(stage: str, progress: float | None = None) -> None:
        send_message(fd, {"type": "stage", "stage": str(stage), "progress": progress})

    try:
        result, teardown = execute(params, spec["prepared"], settings, report)
    except BaseException as exc:  # report anything, then leave
        send_error(fd, exc)
        os._exit(1)
    send_message(fd, {"type": "result", "result": result})
    try:
        teardown_s = teardown()
        send_message(fd, {"type": "closed", "teardown_s": round(teardown_s, 3)})
    except BaseException as exc:
        traceback.print_exc()
        send_message(fd, {"type": "closed", "error": str(exc)})
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # skip interpreter teardown of Ray/gRPC threads


if __name__ == "__main__":
    sys.exit(main())

"""A warm session's driver: `python -m node.sessions.driver`, started by the session host.

The same protocol as node.sfjob.executor, for many jobs instead of one:
  child → parent on fd $PARTYLINE_MSG_FD: {"type": "ready"}; then per job {"type": "stage", …}…
                                          and {"type": "result", …} or {"type": "error", …}
  parent → child on stdin: one line per job {"params", "prepared", "settings", "log_path"}
The first job connects the session — sf.init against this party's Ray head with the session id
as RayFed's job name, then the SPU device (its runtime actor and brpc link) — and every later
job of the session runs on them. Every job's PSI first checks, over the SPU link, that the peer
runs the same job (node.sfjob.spu_runtime). Any error ends the process, and with it the session's
Ray job, actors and ports: a session that failed is never used again. EOF on stdin (the host
closed the session, or died) ends it too.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from node.contract import Stage, TaskParams, utcnow
from node.settings import NodeSettings
from node.sfjob.executor import MSG_FD_ENV, redirect_output, send_error, send_message


class SessionRefusal(Exception):
    """A job that does not belong to this session (another party set or other ports)."""


def identity(params: TaskParams) -> str:
    """What every job of one session shares: its id, parties and every link address."""
    assert params.session is not None
    sf = params.sf_init_config
    return json.dumps(
        {
            "session": params.session.id,
            "parties": sorted(sf.parties),
            "self": sf.self_party,
            "fed": {p: a.address for p, a in sorted(sf.cluster.items())},
            "spu": params.spu_config.model_dump(mode="json") if params.spu_config else None,
        },
        sort_keys=True,
    )


class Session:
    """This party's side of one warm session (lives in the driver process)."""

    def __init__(self) -> None:
        self.key: str | None = None
        self.devices: dict | None = None
        self.jobs = 0

    def run(
        self, params: TaskParams, prepared: dict[str, Any], settings: NodeSettings, report
    ) -> dict[str, Any]:
        from node.jobtypes.table import get_job
        from node.sfjob import cluster, devices
        from node.sfjob.executor import success_result

        assert params.session is not None
        job = get_job(params.task_type)
        started_at = utcnow()
        t0 = time.perf_counter()
        if self.devices is None:
            cluster.init_cluster(params, settings, job_name=params.session.id)
            t1 = time.perf_counter()
            report(Stage.CLUSTER_INITIALIZED, 0.3)
            self.devices = devices.create_devices(params, settings, name=params.session.id)
            self.key = identity(params)
        else:
            if identity(params) != self.key:
                raise SessionRefusal(
                    f"job {params.execution_id} names session {params.session.id} with other "
                    "parties or ports than the session was started with"
                )
            t1 = time.perf_counter()
            report(Stage.CLUSTER_INITIALIZED, 0.3)
        t2 = time.perf_counter()
        report(Stage.DEVICES_READY, 0.4)
        report(Stage.ALGORITHM_RUNNING, 0.5)
        output = job.run(
            {**prepared, "session_token": params.execution_id}, params, self.devices, report
        )
        t3 = time.perf_counter()
        report(Stage.ALGORITHM_DONE, 0.95)
        self.jobs += 1
        return success_result(
            params,
            output,
            started_at,
            self.devices,
            cluster_init_s=t1 - t0,
            device_init_s=t2 - t1,
            algorithm_s=t3 - t2,
            session={"session_id": params.session.id, "session_job": self.jobs},
        )


def main() -> int:
    fd = int(os.environ[MSG_FD_ENV])
    t_import = time.perf_counter()
    from node.sfjob import sflite

    sflite.load()  # SecretFlow's device layer, imported before the session starts (warm)

    send_message(fd, {"type": "ready", "import_s": round(time.perf_counter() - t_import, 3)})
    session = Session()
    while True:
        line = sys.stdin.readline()
        if not line:  # the host closed the session (or is gone): the Ray job ends with us
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
        spec = json.loads(line)
        redirect_output(spec["log_path"])

        def report(stage: str, progress: float | None = None) -> None:
            send_message(fd, {"type": "stage", "stage": str(stage), "progress": progress})

        try:
            params = TaskParams.model_validate(spec["params"])
            settings = NodeSettings.model_validate(spec["settings"])
            result = session.run(params, spec["prepared"], settings, report)
        except SessionRefusal as exc:  # typed, one line; the session is not trusted after it
            send_message(
                fd,
                {
                    "type": "error",
                    "error": {"type": "InvalidTaskParams", "message": str(exc), "refusal": True},
                },
            )
            os._exit(1)
        except BaseException as exc:  # report anything, then end the session
            send_error(fd, exc)
            os._exit(1)
        send_message(fd, {"type": "result", "result": result})
        sys.stdout.flush()
        sys.stderr.flush()


if __name__ == "__main__":
    sys.exit(main())

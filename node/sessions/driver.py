"""A warm session's driver: `python -m node.sessions.driver`, started by the session host.

The same pipe as the cold job process (node.launch.child_spec), for many jobs instead of one:
`Ready`, then per `JobSpec` on stdin its `StageReached`… and `JobResult` or `JobFailed`. Every
job runs through node.sfjob.stages; the session is its federation: its first job connects it —
sf.init against this party's Ray head with the session id as RayFed's job name, then the SPU
device (its runtime actor and brpc link) — and every later job of the session runs on them.
Every job's PSI first checks, over the SPU link, that the peer runs the same job
(node.sfjob.spu_runtime). A job this party refused before any work comes with `refused` set:
the driver only releases the peers (node.sfjob.stages.release_peers), and a peer's refusal ends this
party's job with PeerRefused — in both cases nothing ran and the session stays. Any other error
ends the process, and with it the session's Ray job, actors and ports: a session that failed is
never used again. EOF on stdin (the host closed the
session, or died) ends it too.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from node.contract import ErrorType, TaskParams
from node.launch.child_spec import JobResult, JobSpec, refusal
from node.settings import NodeSettings
from node.sfjob.pipe import Pipe, flush, next_spec, redirect_output
from node.sfjob.spu_runtime import refusal_note


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
    """This party's side of one warm session (lives in the driver process): the federation
    (node.sfjob.stages.Federation) of every job of the session."""

    def __init__(self) -> None:
        self.id: str | None = None
        self.key: str | None = None
        self.devs: dict | None = None
        self.jobs = 0

    def join_cluster(self, params: TaskParams, settings: NodeSettings) -> None:
        """sf.init for the session's first job; every later one must be of the same session."""
        from node.sfjob import cluster

        assert params.session is not None
        if self.key is None:
            cluster.init_cluster(params, settings, job_name=params.session.id)
            self.id, self.key = params.session.id, identity(params)
        elif identity(params) != self.key:
            raise SessionRefusal(
                f"job {params.execution_id} names session {params.session.id} with other "
                "parties or ports than the session was started with"
            )

    def devices(self, params: TaskParams, settings: NodeSettings) -> dict:
        from node.sfjob import devices

        assert params.session is not None
        if self.devs is None:
            self.devs = devices.create_devices(params, settings, name=params.session.id)
        return self.devs

    def job_done(self) -> dict[str, Any]:
        self.jobs += 1
        return {"session_id": self.id, "session_job": self.jobs}


def main() -> int:
    pipe = Pipe()
    t_import = time.perf_counter()
    from node.sfjob import sflite

    sflite.load()  # SecretFlow's device layer, imported before the session starts (warm)
    from node.sfjob.spu_runtime import PeerRefused

    pipe.ready(t_import)
    session = Session()
    while True:
        spec = next_spec()
        if spec is None:  # the host closed the session (or is gone): the Ray job ends with us
            flush()
            os._exit(0)
        redirect_output(spec.log_path)
        try:
            result = _run(spec, session, pipe)
        except SessionRefusal as exc:  # typed, one line; the session is not trusted after it
            pipe.send(refusal(ErrorType.INVALID_PARAMS, str(exc)))
            os._exit(1)
        except PeerRefused as exc:  # nothing ran anywhere: the session stays for the next job
            pipe.send(refusal(ErrorType.PEER_REFUSED, _cause(exc)))
            flush()
            continue
        except BaseException as exc:  # report anything, then end the session
            pipe.error(exc)
            os._exit(1)
        pipe.send(JobResult(result=result))
        flush()


def _run(spec: JobSpec, session: Session, pipe: Pipe) -> dict[str, Any]:
    """The job's stages — or, when this party refused it, only the release of its peers."""
    from node.sfjob.stages import release_peers, run_stages

    settings = NodeSettings.model_validate(spec.settings)
    if spec.refused is not None:
        note = refusal_note(spec.params.execution_id, spec.refused.message)
        return release_peers(spec.params, note, settings, session)
    return run_stages(spec.params, spec.prepared, settings, session, pipe.reporter())


def _cause(exc: BaseException) -> str:
    """The peer's refusal in its words (Ray wraps the runtime's exception with its trace)."""
    cause = getattr(exc, "cause", None) or exc
    return f"ended before any work: {cause.args[0] if cause.args else cause}"


if __name__ == "__main__":
    sys.exit(main())

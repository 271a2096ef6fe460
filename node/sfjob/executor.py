"""The cold job process: `python -m node.sfjob.executor`, started by node.launch.jobprocess.

It imports secretflow, says `Ready`, waits for one `JobSpec` on stdin, runs it through
node.sfjob.stages in a federation of its own (sf.init, SPU runtime and link for this job),
sends `JobResult` or `JobFailed`, then tears down and says `Closed` (node.launch.child_spec).
A pre-started spare thus takes its job warm.
"""

from __future__ import annotations

import os
import sys
import time
import traceback

from node.launch.child_spec import Closed, JobResult
from node.settings import NodeSettings
from node.sfjob.pipe import Pipe, flush, next_spec, redirect_output


def main() -> int:
    pipe = Pipe()
    t_import = time.perf_counter()
    from node.sfjob import sflite

    sflite.load()  # SecretFlow's device layer, imported before the job arrives (warm)
    from node.sfjob.stages import ColdFederation, run_stages

    pipe.ready(t_import)
    spec = next_spec()
    if spec is None:
        return 0  # parent closed: spare discarded
    redirect_output(spec.log_path)
    federation = ColdFederation()
    try:
        settings = NodeSettings.model_validate(spec.settings)
        result = run_stages(spec.params, spec.prepared, settings, federation, pipe.reporter())
    except BaseException as exc:  # report anything, then leave
        pipe.error(exc)
        os._exit(1)
    pipe.send(JobResult(result=result))
    try:
        pipe.send(Closed(teardown_s=round(federation.teardown(), 3)))
    except BaseException as exc:
        traceback.print_exc()
        pipe.send(Closed(error=str(exc)))
    flush()
    os._exit(0)  # skip interpreter teardown of Ray/gRPC threads


if __name__ == "__main__":
    sys.exit(main())

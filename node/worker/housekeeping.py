"""What a node removes, so that nothing it makes grows without end.

- At the SecretFlow worker's start (`at_start`: no job of this party can be running then — job
  processes and session drivers die with the worker): every job's key-only work folder
  (`.partyline/work/`), SPU's scratch files, every output claim with the temporary file its
  writer left (`.partyline/outputs/*.writing`, `.<name>.<execution>.partial`), output-owner
  records older than any deadline, and job logs past `NODE_JOB_LOG_RETENTION_DAYS`.
- After every job (`after_job`): scratch files and work folders older than any job may run
  (a job killed by the hard time limit leaves its pool process no `finally`), claims past their
  job's deadline, and old job logs.
- Log files the node appends to (the job processes' spawn logs, the session host's log) are
  rotated by size when opened (node.logfiles: one previous copy kept).

Each job's own files are removed on its every exit path by the job itself (node/worker/tasks.py); this
module is what catches a worker killed with -9.
"""

from __future__ import annotations

import logging

from node.contract import MAX_DEADLINE_AHEAD_S
from node.dataroot.paths import PRIVATE_DIR, drop_claims, prune_scratch, remove_entries
from node.settings import NodeSettings

log = logging.getLogger(__name__)

WORK_DIR = "work"


def at_start(settings: NodeSettings) -> dict[str, int]:
    """What a killed worker may have left; returns how many of each were removed."""
    root = settings.data_root
    done = {
        "work_folders": remove_entries(root / PRIVATE_DIR / WORK_DIR, older_than_s=0),
        "scratch": prune_scratch(root, older_than_s=0),
        "output_claims": drop_claims(root),
        "owner_records": remove_entries(
            root / PRIVATE_DIR / "outputs", older_than_s=MAX_DEADLINE_AHEAD_S + 86400
        ),
        "job_logs": _old_job_logs(settings),
    }
    if any(done.values()):
        log.info("removed what earlier runs left: %s", done)
    return done


def after_job(settings: NodeSettings) -> None:
    root, longest = settings.data_root, settings.task_time_limit_s + 600
    prune_scratch(root, older_than_s=longest)
    remove_entries(root / PRIVATE_DIR / WORK_DIR, older_than_s=longest)
    drop_claims(root, lapsed_only=True)
    _old_job_logs(settings)


def _old_job_logs(settings: NodeSettings) -> int:
    return remove_entries(
        settings.state_dir / "jobs", older_than_s=settings.job_log_retention_days * 86400
    )


__all__ = ["after_job", "at_start"]

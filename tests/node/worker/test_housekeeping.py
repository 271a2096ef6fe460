"""node.worker.housekeeping: what a killed worker or a killed job left is removed; what is still in
use is kept (real files in a data root and a state dir)."""

from __future__ import annotations

import os
import time

from node import logfiles
from node.dataroot.paths import OutputTarget, reserve_output, resolve_in_root
from node.worker import housekeeping
from tests.node.sessions.test_host import settings

DAY = 86400


def _aged(path, days: float) -> None:
    then = time.time() - days * DAY
    os.utime(path, (then, then), follow_symlinks=False)


def _node(tmp_path):
    s = settings(tmp_path, job_log_retention_days=14)
    s.data_root.mkdir()
    private = s.data_root / ".partyline"
    work = private / "work" / "exe-1.alice"
    work.mkdir(parents=True)
    (work / "keys-a.csv").write_text("k0\n")
    (private / "tmp").mkdir()
    (private / "tmp" / "spu-bucket").write_text("x")
    old_log, new_log = (
        s.state_dir / "jobs" / "exe-old.alice",
        s.state_dir / "jobs" / "exe-new.alice",
    )
    for d in (old_log, new_log):
        d.mkdir(parents=True)
        (d / "job.log").write_text("log\n")
    _aged(old_log, 20)
    return s


def test_at_start_everything_a_killed_worker_left_goes_and_recent_records_stay(tmp_path):
    s = _node(tmp_path)
    # a job killed while writing its output: its claim and its temporary file
    real = resolve_in_root(s.data_root, "out/res.csv", for_write=True)
    target = OutputTarget.at_preflight(s.data_root, real, "exe-9")
    reserve_output(s.data_root, target.parts, "job-9", "exe-9", time.time() + 3600)
    partial = s.data_root / "out" / ".res.csv.exe-9.partial"
    partial.write_text("half")
    outputs = s.data_root / ".partyline" / "outputs"
    (outputs / "old-owner").write_text("job-1")
    _aged(outputs / "old-owner", 30)
    (outputs / "new-owner").write_text("job-2")
    done = housekeeping.at_start(s)
    assert done == {
        "work_folders": 1, "scratch": 1, "output_claims": 1, "owner_records": 1, "job_logs": 1,
    }  # fmt: skip
    assert not partial.exists() and not list((s.data_root / ".partyline" / "work").iterdir())
    assert sorted(p.name for p in outputs.iterdir()) == ["new-owner"]
    assert [p.name for p in (s.state_dir / "jobs").iterdir()] == ["exe-new.alice"]
    assert housekeeping.at_start(s) == dict.fromkeys(done, 0)  # nothing more


def test_after_a_job_only_what_no_job_can_still_use_goes(tmp_path):
    s = _node(tmp_path)
    stale = s.data_root / ".partyline" / "work" / "exe-killed.alice"
    stale.mkdir()
    _aged(stale, 1)  # older than the 6 h time limit: its job was killed
    reserve_output(s.data_root, ("a.csv",), "job-live", "exe-live", time.time() + 3600)
    reserve_output(s.data_root, ("b.csv",), "job-gone", "exe-gone", time.time() - 1)
    housekeeping.after_job(s)
    assert sorted(p.name for p in (s.data_root / ".partyline" / "work").iterdir()) == [
        "exe-1.alice"  # a job of now may still use it
    ]
    claims = list((s.data_root / ".partyline" / "outputs").glob("*.writing"))
    assert len(claims) == 1 and "exe-live" in claims[0].read_text()
    assert [p.name for p in (s.state_dir / "jobs").iterdir()] == ["exe-new.alice"]


def test_a_log_is_rotated_by_size_when_opened(tmp_path, monkeypatch):
    monkeypatch.setattr(logfiles, "LOG_MAX_BYTES", 100)
    path = tmp_path / "runner" / "spawn.log"
    with logfiles.open_log(path) as fh:
        fh.write(b"x" * 150)
    with logfiles.open_log(path) as fh:  # over the bound: moved aside
        fh.write(b"new\n")
    assert path.read_bytes() == b"new\n"
    assert (tmp_path / "runner" / "spawn.log.1").read_bytes() == b"x" * 150

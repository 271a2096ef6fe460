"""Status pipeline benchmark: node status events → the coordinator's listener → PostgreSQL.

Real parts: one redis-server per party (the stream the nodes write, written here exactly as
node.worker.notifier.StatusNotifier writes it), a real PostgreSQL (Debian's package, temp dir), and the
coordinator's own listener + job service (coordinator.listener / coordinator.services) running
in a separate process, as in production. For 2 and 10 parties it measures:

  throughput   events/s applied and committed (backlog of N events across the parties' streams,
               from the listener's start to the last commit)
  latency      event timestamp → applied in the DB (task_status_logs.received_at), p50/p99,
               with events produced at a steady 1,000 events/s
  RSS          the listener process's peak resident memory
  lost         events missing from the DB after the listener was killed with SIGKILL halfway
               through a backlog and started again (every event must be there exactly once)

Nothing is asserted; the numbers are printed side by side and written to bench/results/.
    python bench/status_pipeline.py [--events 20000] [--parties 2,10]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil
import yaml
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from coordinator.db import make_engine, migrate, session_factory, transaction  # noqa: E402
from coordinator.models import Job, SecretflowTask  # noqa: E402
from deploy.local.ports import PortAllocator  # noqa: E402
from deploy.local.servers import PostgresServer, RedisServer  # noqa: E402
from node.contract import STATUS_STREAM, EventData, StatusEvent, TaskStatus  # noqa: E402

console = Console(width=150)
METRICS = {"cluster_init_s": 2.1, "data_load_s": 0.3, "algorithm_s": 4.2, "total_s": 6.9}
STEPS = [TaskStatus.RECEIVED, TaskStatus.RUNNING] + [TaskStatus.PROGRESS] * 7 + [TaskStatus.SUCCESS]


# --- the listener process -----------------------------------------------------------------------
def listener_main(db_url: str, topology: str) -> int:
    from coordinator.db import make_engine, session_factory
    from coordinator.listener import StatusListener
    from coordinator.parties import PartyClients
    from coordinator.services.jobs import JobService
    from coordinator.topology import load_topology

    topo = load_topology(topology)
    engine = make_engine(db_url)
    clients = PartyClients(topo, None)
    jobs = JobService(topology=topo, clients=clients, db=session_factory(engine))
    listener = StatusListener(clients, jobs.apply, consumer="bench")
    print(json.dumps({"started": time.time()}), flush=True)
    listener.start()
    signal.signal(signal.SIGTERM, lambda *_: listener.stop_event.set())
    while not listener.stop_event.wait(0.5):
        pass
    listener.stop()
    return 0


# --- the driver ---------------------------------------------------------------------------------
class Scenario:
    def __init__(self, pg: PostgresServer, base: Path, n_parties: int, alloc: PortAllocator):
        self.base = base
        self.parties = [f"p{i:02d}" for i in range(n_parties)]
        self.redis = {p: RedisServer(base / f"redis-{p}", alloc.one()) for p in self.parties}
        dbname = f"bench_{n_parties}_{uuid.uuid4().hex[:6]}"
        import psycopg

        with psycopg.connect(pg.url.replace("+psycopg", ""), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{dbname}"')
        self.db_url = pg.url.rsplit("/", 1)[0] + f"/{dbname}"
        migrate(self.db_url)
        self.engine = make_engine(self.db_url)
        self.db = session_factory(self.engine)
        topo = {
            "version": 1,
            "federation": "bench",
            "parties": {
                p: {
                    "broker_url": self.redis[p].url,
                    "fed_host": "127.0.0.1",
                    "fed_ports": f"{20000 + 2 * i * 10}-{20009 + 2 * i * 10}",
                    "spu_ports": f"{20010 + 2 * i * 10}-{20019 + 2 * i * 10}",
                    "slots": 1,
                }
                for i, p in enumerate(self.parties)
            },
        }
        self.topology = base / "topology.yaml"
        self.topology.write_text(yaml.safe_dump(topo))
        self.proc: subprocess.Popen | None = None
        self.started_at = 0.0

    def make_jobs(self, n_events: int) -> list[tuple[str, str, str, str]]:
        """Jobs between neighbouring parties, RUNNING; enough tasks for n_events events."""
        n_tasks = max(2, n_events // len(STEPS))
        tasks = []
        with transaction(self.db) as s:
            for j in range(n_tasks // 2):
                a = self.parties[j % len(self.parties)]
                b = self.parties[(j + 1) % len(self.parties)]
                job_id, exe = f"job-{uuid.uuid4().hex[:12]}", f"exe-{uuid.uuid4().hex[:12]}"
                s.add(
                    Job(
                        id=job_id,
                        status="RUNNING",
                        request={"receiver": a},
                        parties={"names": [a, b]},
                        execution_id=exe,
                        attempt=1,
                        max_attempts=1,
                    )
                )
                for p in (a, b):
                    task_request_id = f"{exe}.{p}"
                    s.add(
                        SecretflowTask(
                            job_id=job_id,
                            task_id=job_id,
                            subtask_id="psi",
                            execution_id=exe,
                            party=p,
                            task_request_id=task_request_id,
                            task_type="psi",
                            status="PENDING",
                            params={},
                        )
                    )
                    tasks.append((job_id, exe, p, task_request_id))
        return tasks

    def events(self, tasks) -> list[StatusEvent]:
        out = []
        for job_id, exe, party, task_request_id in tasks:
            for seq, st in enumerate(STEPS, start=1):
                out.append(
                    StatusEvent(
                        seq=seq,
                        task_request_id=task_request_id,
                        task_id=job_id,
                        subtask_id="psi",
                        execution_id=exe,
                        party=party,
                        status=st,
                        data=EventData(
                            stage="algorithm_running",
                            progress=seq / len(STEPS),
                            # as the node sends it: SUCCESS carries the timings
                            performance_metrics=METRICS if st == TaskStatus.SUCCESS else None,
                        ),
                    )
                )
        return out

    def write(self, events: list[StatusEvent]) -> None:
        by_party: dict[str, list[StatusEvent]] = {}
        for e in events:
            by_party.setdefault(e.party, []).append(e)
        for p, evs in by_party.items():
            pipe = self.redis[p].client().pipeline(transaction=False)
            for e in evs:
                pipe.xadd(STATUS_STREAM, e.to_stream_fields())
            pipe.execute()

    def count(self) -> int:
        with self.engine.connect() as c:
            return c.exec_driver_sql("SELECT count(*) FROM task_status_logs").scalar()

    def start_listener(self) -> None:
        errors = self.base / "listener.stderr"
        with errors.open("ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, __file__, "--listener", self.db_url, str(self.topology)],
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                cwd=ROOT,
            )
        line = self.proc.stdout.readline()
        if not line:  # it ended before starting: say why
            self.proc.wait(30)
            tail = errors.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"the listener exited ({self.proc.returncode}) at start:\n{tail}")
        self.started_at = json.loads(line)["started"]

    def stop_listener(self, sig=signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(30)
        self.proc = None

    def wait_count(self, target: int, timeout: float = 600, rss: list | None = None) -> float:
        end = time.monotonic() + timeout
        ps = psutil.Process(self.proc.pid) if self.proc else None
        while True:
            if rss is not None and ps is not None:
                with contextlib.suppress(psutil.Error):
                    rss.append(ps.memory_info().rss)
            if self.count() >= target:
                return time.time()
            if time.monotonic() > end:
                raise TimeoutError(f"only {self.count()} of {target} events applied")
            time.sleep(0.05)

    def close(self) -> None:
        self.stop_listener(signal.SIGKILL)
        self.engine.dispose()
        for r in self.redis.values():
            r.stop()


def run_scenario(pg, base: Path, n_parties: int, n_events: int, alloc) -> dict:
    sc = Scenario(pg, base / f"parties-{n_parties}", n_parties, alloc)
    out: dict = {"parties": n_parties}
    try:
        # 1. throughput on a backlog
        evs = sc.events(sc.make_jobs(n_events))
        sc.write(evs)
        rss: list[int] = []
        sc.start_listener()
        done = sc.wait_count(len(evs), rss=rss)
        out["events"] = len(evs)
        out["throughput_eps"] = len(evs) / max(1e-9, done - sc.started_at)
        # 2. latency at a steady 1,000 events/s
        evs2 = sc.events(sc.make_jobs(10_000))
        base_count = sc.count()
        t0 = time.monotonic()
        for i in range(0, len(evs2), 10):  # 10 events every 10 ms
            chunk = evs2[i : i + 10]
            now = dt.datetime.now(dt.UTC)
            for e in chunk:
                e.timestamp = now
            sc.write(chunk)
            sleep = t0 + (i + 10) / 1000.0 - time.monotonic()
            if sleep > 0:
                time.sleep(sleep)
        sc.wait_count(base_count + len(evs2), rss=rss)
        with sc.engine.connect() as c:
            lat = sorted(
                float(r[0]) * 1000.0
                for r in c.exec_driver_sql(
                    "SELECT EXTRACT(EPOCH FROM received_at - timestamp) FROM task_status_logs "
                    "WHERE task_request_id = ANY(%(ids)s)",
                    {"ids": list({e.task_request_id for e in evs2})},
                )
            )
        out["latency_p50_ms"] = lat[len(lat) // 2]
        out["latency_p99_ms"] = lat[int(len(lat) * 0.99)]
        out["rate_eps"] = len(evs2) / (time.monotonic() - t0)
        out["rss_mb"] = max(rss) / 2**20 if rss else None
        # 3. kill -9 halfway through a backlog, start again: nothing lost, nothing twice
        sc.stop_listener()
        evs3 = sc.events(sc.make_jobs(n_events))
        before = sc.count()
        sc.write(evs3)
        sc.start_listener()
        half = before + len(evs3) // 2
        while sc.count() < half:
            time.sleep(0.01)
        sc.stop_listener(signal.SIGKILL)
        at_kill = sc.count() - before
        sc.start_listener()
        sc.wait_count(before + len(evs3), timeout=300)
        time.sleep(1.0)
        ids = [e.event_id for e in evs3]
        with sc.engine.connect() as c:
            found = c.exec_driver_sql(
                "SELECT count(DISTINCT event_id), count(*) FROM task_status_logs "
                "WHERE event_id = ANY(%(ids)s)",
                {"ids": ids},
            ).one()
        pending = sum(
            r.client().xpending(STATUS_STREAM, "coordinator")["pending"] for r in sc.redis.values()
        )
        out["kill_applied_before_kill"] = at_kill
        out["lost"] = len(ids) - found[0]
        out["duplicates"] = found[1] - found[0]
        out["pending_after"] = pending
        return out
    finally:
        sc.close()


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--listener":
        return listener_main(sys.argv[2], sys.argv[3])
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--events", type=int, default=20_000, help="backlog size per scenario")
    ap.add_argument("--parties", default="2,10", help="party counts to run (comma-separated)")
    args = ap.parse_args()
    random.seed(1)
    alloc = PortAllocator()
    tmp = Path(tempfile.mkdtemp(prefix="partyline-bench-"))
    os.chmod(tmp, 0o755)
    pg = PostgresServer(tmp / "pg", alloc.one())
    results = []
    try:
        for n in [int(x) for x in args.parties.split(",")]:
            with console.status(
                f"{n} parties: {args.events:,} events backlog, 1,000 events/s, kill -9"
            ):
                results.append(run_scenario(pg, tmp, n, args.events, alloc))
            console.print(results[-1])
    finally:
        pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    table = Table(
        title="status pipeline (PostgreSQL, fsync off; goals: ≥10,000 ev/s, p99 < 50 ms, 0 lost, < 100 MB)"
    )
    for col in (
        "parties",
        "backlog",
        "events/s",
        "p50 ms @1k/s",
        "p99 ms @1k/s",
        "listener RSS MB",
        "lost after kill -9",
        "dup",
        "pending",
    ):
        table.add_column(col, justify="right")
    for r in results:
        table.add_row(
            str(r["parties"]),
            f"{r['events']:,}",
            f"{r['throughput_eps']:,.0f}",
            f"{r['latency_p50_ms']:.1f}",
            f"{r['latency_p99_ms']:.1f}",
            f"{r['rss_mb']:.0f}" if r["rss_mb"] else "?",
            str(r["lost"]),
            str(r["duplicates"]),
            str(r["pending_after"]),
        )
    console.print(table)
    out = ROOT / "bench" / "results" / f"status_pipeline-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    console.print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

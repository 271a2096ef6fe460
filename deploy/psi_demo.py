"""What both demos (`make demo`, native, and `make compose-demo`) share: the sample tables, the
PSI request, the wait for its end through the coordinator's API, and the summary table."""

from __future__ import annotations

import csv
import io
import random
import time
from collections.abc import Callable

import httpx
from rich.console import Console
from rich.table import Table

FINAL = ("SUCCEEDED", "FAILED", "CANCELLED", "TIMED_OUT")


def sample_csv(key: str, ids: list[int], seed: int) -> str:
    rng = random.Random(seed)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([key, "segment", "score"])
    for i in ids:
        w.writerow([f"u{i:09d}", rng.choice("ABCD"), rng.randint(0, 999)])
    return buf.getvalue()


def sample_ids(parties: list[str], rows: int, seed: int = 7) -> dict[str, list[int]]:
    """`rows` distinct ids per party; the first two parties share half of theirs."""
    rng = random.Random(seed)
    common = list(range(rows // 2))
    out = {}
    for i, p in enumerate(parties):
        start = (i + 1) * 10 * rows
        ids = (common if i < 2 else []) + list(
            range(start, start + rows - (rows // 2 if i < 2 else 0))
        )
        rng.shuffle(ids)
        out[p] = ids
    return out


def psi_body(a: str, b: str, protocol: str, output: str = "out/demo-intersection.csv") -> dict:
    side = {"keys": ["uid"], "input": "customers.csv", "output": output}
    return {"parties": {a: dict(side), b: dict(side)}, "receiver": a, "protocol": protocol}


def run_psi(
    http: httpx.Client, body: dict, console: Console, say: Callable[[str], None]
) -> tuple[dict, float]:
    """Submit, follow each party's task on one status line, return (final job, seconds)."""
    t0 = time.monotonic()
    r = http.post("/api/v1/jobs/psi", json=body)
    if r.status_code != 201:
        raise RuntimeError(f"the coordinator refused the PSI ({r.status_code}): {r.text}")
    job = r.json()
    a, b = list(body["parties"])
    say(
        f"PSI {job['id']} submitted: {a} × {b}, receiver {body['receiver']}, protocol {body['protocol']}"
    )
    seen = None
    with console.status("PSI running") as status:
        while True:
            d = http.get(f"/api/v1/jobs/{job['id']}").json()
            view = ", ".join(
                f"{t['party']} {t['status'].lower()}"
                + (f" ({t['stage']})" if t.get("stage") else "")
                for t in d["tasks"]
                if t["execution_id"] == d["execution_id"]
            )
            if view != seen:
                status.update(f"PSI {d['status'].lower()}: {view}")
                seen = view
            if d["status"] in FINAL:
                return d, time.monotonic() - t0
            time.sleep(0.3)


def wait_warm(
    http: httpx.Client,
    parties: list[str],
    console: Console,
    say: Callable[[str], None],
    timeout: float = 300.0,
) -> str | None:
    """Wait for the coordinator's warm-up of `parties` (COORD_PREWARM) to end: SecretFlow's
    start-up is paid now, once, not by the first PSI. None when it succeeded, else why not."""
    t0 = time.monotonic()
    want = sorted(parties)
    with console.status(f"starting the warm session of {' + '.join(want)} (SecretFlow, once)"):
        while time.monotonic() - t0 < timeout:
            items = http.get("/api/v1/jobs", params={"limit": 50}).json()["items"]
            warm = [j for j in items if j["kind"] == "warmup" and sorted(j["parties"]) == want]
            done = [j for j in warm if j["status"] in FINAL]
            if any(j["status"] == "SUCCEEDED" for j in done):
                say(f"warm session of {' + '.join(want)} up ({time.monotonic() - t0:.1f} s)")
                return None
            if done and not any(j["status"] not in FINAL for j in warm):
                return f"the warm-up {done[0]['status']}: {done[0]['error']}"
            time.sleep(0.5)
    return f"no warm session within {timeout:.0f} s"


def summary_table(title: str, rows: list[tuple[str, str]]) -> Table:
    table = Table(title=title, show_header=False)
    for k, v in rows:
        table.add_row(k, v)
    return table

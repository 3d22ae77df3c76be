"""`bench study serve` under load, on loopback only: 50 concurrent raters casting 20 votes each.

The server is the real command (``python -m bench.study serve NAME --port 0``) in its own process, bound to
127.0.0.1; the raters are 50 threads, each with its own keep-alive connection, released together by a barrier.
Every request has a 30 s timeout and the whole test a deadline, so it always ends. Expected: exactly 1000
votes stored, 20 per rater on 20 distinct trials, none lost or duplicated; then a burst of concurrent double
submissions of one vote must store exactly one of each. The p50/p95 vote latency is printed, never asserted.
"""

from __future__ import annotations

import os
import queue
import random
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("starlette", reason="the study app needs the study extra (starlette, uvicorn)")
pytest.importorskip("uvicorn", reason="the study app needs the study extra (starlette, uvicorn)")

from bench.paths import REPO_ROOT, results_root  # noqa: E402
from bench.study.create import create_study  # noqa: E402
from bench.study.export import export_rows  # noqa: E402
from test_study_app import METHODS, Http, study_runs  # noqa: E402

RATERS, VOTES = 50, 20
DEADLINE_S = 120


@pytest.fixture
def server(tmp_path_factory):
    runs = study_runs(tmp_path_factory)
    path, _ = create_study("load", [Path(runs["load"][m]) for m in METHODS], seed=3)
    env = {**os.environ, "BENCH_RESULTS": str(results_root()), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "bench.study", "serve", "load", "--host", "127.0.0.1",
                             "--port", "0", "--max-raters", "100"], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()
    url = None
    try:
        deadline = time.monotonic() + 60
        while url is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                continue
            if " at http://127.0.0.1:" in line:
                url = line.split(" at ", 1)[1].split()[0].rstrip("/")
        assert url, f"the server did not start (exit {proc.poll()})"
        yield path, url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


def test_fifty_raters_twenty_votes_each(server, capsys):
    path, url = server
    barrier = threading.Barrier(RATERS, timeout=60)
    latencies: list[float] = []
    errors: list[str] = []
    voted: dict[str, list[str]] = {}
    lock = threading.Lock()
    stop_at = time.monotonic() + DEADLINE_S

    def rater(i: int) -> None:
        c = Http(url)
        try:
            token = c.join("expert" if i % 4 == 0 else "amateur")
            barrier.wait()
            status, state, _ = c.request("GET", "/api/state")
            assert status == 200, state
            mine, lat = [], []
            rng = random.Random(i)
            for _ in range(VOTES):
                if time.monotonic() > stop_at:
                    raise TimeoutError("deadline passed")
                t = state["trial"]
                t0 = time.perf_counter()
                status, data, _ = c.request("POST", "/api/vote", {"trial": t["id"], "choice": rng.randrange(3),
                                                                  "ms": rng.randrange(500, 5000)})
                lat.append(time.perf_counter() - t0)
                assert status == 201, (status, data)
                mine.append(t["id"])
                state = data["next"]
            assert state["trial"] is None and state["done"] == VOTES
            with lock:
                latencies.extend(lat)
                voted[token] = mine
        except BaseException as e:  # noqa: BLE001 -- reported below
            with lock:
                errors.append(f"rater {i}: {type(e).__name__}: {e}")
            barrier.abort()
        finally:
            c.close()

    t0 = time.monotonic()
    threads = [threading.Thread(target=rater, args=(i,), daemon=True) for i in range(RATERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=max(1.0, stop_at - time.monotonic()))
    wall = time.monotonic() - t0
    assert not any(t.is_alive() for t in threads), "raters still running at the deadline"
    assert errors == [], errors[:5]
    assert len(voted) == RATERS and all(len(set(v)) == VOTES for v in voted.values())

    con = sqlite3.connect(f"file:{path / 'votes.sqlite'}?mode=ro", uri=True)
    n_votes, n_pairs = con.execute("SELECT COUNT(*), COUNT(DISTINCT rater_id || ':' || trial) FROM votes").fetchone()
    per_rater = [r[0] for r in con.execute("SELECT COUNT(*) FROM votes GROUP BY rater_id")]
    con.close()
    assert n_votes == RATERS * VOTES == 1000 and n_pairs == n_votes
    assert per_rater == [VOTES] * RATERS
    rows = export_rows(path)
    assert len(rows) == 1000 and len({(r["rater"], r["image"]) for r in rows}) == 1000

    # concurrent double submissions: the same vote sent twice at once stores exactly one
    results: list[int] = []
    pairs = []
    for _ in range(10):
        c = Http(url)
        c.join("amateur")
        _, state, _ = c.request("GET", "/api/state")
        pairs.append((c.token, state["trial"]["id"]))
        c.close()
    go = threading.Barrier(20, timeout=30)

    def send(token: str, trial: str) -> None:
        c = Http(url, token)
        try:
            go.wait()
            status, _, _ = c.request("POST", "/api/vote", {"trial": trial, "choice": 0})
            with lock:
                results.append(status)
        finally:
            c.close()

    racers = [threading.Thread(target=send, args=p, daemon=True) for p in pairs for _ in range(2)]
    for t in racers:
        t.start()
    for t in racers:
        t.join(timeout=60)
    assert sorted(results) == [201] * 10 + [409] * 10
    con = sqlite3.connect(f"file:{path / 'votes.sqlite'}?mode=ro", uri=True)
    assert con.execute("SELECT COUNT(*) FROM votes").fetchone()[0] == 1010
    con.close()

    lat = sorted(latencies)
    p50, p95 = lat[len(lat) // 2], lat[int(0.95 * (len(lat) - 1))]
    with capsys.disabled():
        print(f"\nload: {RATERS} raters x {VOTES} votes on 127.0.0.1 -> {n_votes} votes stored "
              f"({n_pairs} distinct rater-trial pairs) in {wall:.1f} s; vote latency p50 {1000 * p50:.1f} ms, "
              f"p95 {1000 * p95:.1f} ms, max {1000 * lat[-1]:.1f} ms; double submissions: "
              f"{results.count(201)} stored, {results.count(409)} refused")

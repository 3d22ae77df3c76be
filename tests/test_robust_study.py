"""Issue 15, the study server and vote files as a hostile user tries them.

Server classes, each against a real server: a client closing early (the real `bench` CLI in its own process,
which sets SIGPIPE to its default action), votes only for the trial last shown, --max-raters inside the join
transaction, deeply nested JSON and a client hanging up mid-body, Host/Origin checks, blindness of the served
candidates, stalled connections. Vote-file classes: encodings, a folder, delimiters, `shown` separators,
--columns, an empty file, exact duplicate rows.

The runs are the real ones of tests/test_study_app.py (made once per session). Nothing here asserts a timing:
waits have generous deadlines only so that a broken server fails the test instead of hanging it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import queue
import socket
import sqlite3
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("starlette", reason="the study app needs the study extra (starlette, uvicorn)")
pytest.importorskip("uvicorn", reason="the study app needs the study extra (starlette, uvicorn)")

from bench import study_stats as st  # noqa: E402
from bench.errors import BenchError  # noqa: E402
from bench.paths import REPO_ROOT, results_root  # noqa: E402
from bench.study.create import create_study, load_study  # noqa: E402
from bench.study.server import allowed_hosts, background  # noqa: E402
from bench.study.store import Store  # noqa: E402
from test_study_app import METHODS, Http, study_runs  # noqa: E402

PAPER = ["csrnet", "deepupe", "deeplpf", "ours"]


@pytest.fixture
def study(tmp_path_factory) -> Path:
    runs = study_runs(tmp_path_factory)
    path, _ = create_study("robust", [Path(runs["demo"][m]) for m in METHODS], seed=2)
    return path


class Served:
    """`python -m bench.cli study serve NAME --port 0 ...` in its own process; stderr goes to a file."""

    def __init__(self, name: str, *extra: str, tmp: Path):
        self.err_path = tmp / "server.stderr"
        self.err = open(self.err_path, "w")
        env = {**os.environ, "BENCH_RESULTS": str(results_root()), "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.cli", "study", "serve", name, "--port", "0",
                                      *extra], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=self.err,
                                     text=True)
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [lines.put(x) for x in self.proc.stdout], daemon=True).start()
        self.url = None
        deadline = time.monotonic() + 60
        while self.url is None and time.monotonic() < deadline and self.proc.poll() is None:
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                continue
            if " at http://127.0.0.1:" in line:
                self.url = line.split(" at ", 1)[1].split()[0].rstrip("/")
        if self.url is None:
            self.stop()
            raise AssertionError(f"the server did not start: {self.stderr()}")
        self.port = int(self.url.rsplit(":", 1)[1])

    def stderr(self) -> str:
        self.err.flush()
        return self.err_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        self.err.close()


@pytest.fixture
def served(study, tmp_path):
    servers: list[Served] = []

    def start(*extra: str) -> Served:
        s = Served("robust", *extra, tmp=tmp_path)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.stop()


def _raw(port: int, timeout: float = 30) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return s


def _reset(s: socket.socket) -> None:
    """Close with an RST (SO_LINGER 0): the server's next write on it fails with EPIPE/ECONNRESET."""
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def _wait_for(predicate, what: str, deadline_s: float = 30) -> None:
    end = time.monotonic() + deadline_s
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.05)


def _recv_all(s: socket.socket) -> bytes:
    out = b""
    while True:
        try:
            chunk = s.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return out
        if not chunk:
            return out
        out += chunk


# --- (1) a client that closes early ----------------------------------------------------------------------------
def test_clients_closing_early_never_kill_the_server(served, study):
    srv = served()
    _, doc = load_study(study)
    images = [f"/img/{f}" for t in doc["trials"] for f in t["files"].values()]
    for i in range(10):  # a reload, a flaky network, a port scan: request, then hang up
        for path in ("/", "/api/study", images[i % len(images)]):
            s = _raw(srv.port)
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{srv.port}\r\n\r\n".encode())
            s.close()  # the answer's first write draws an RST; the next gets EPIPE (SIGPIPE kills by default)
        s = _raw(srv.port)
        s.sendall(f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{srv.port}\r\n\r\n".encode())
        _reset(s)  # hang up hard
        s = _raw(srv.port)  # and one that connects and leaves without a word
        _reset(s)
    # pipelined requests whose answers are never read
    s = _raw(srv.port)
    s.sendall(b"".join(f"GET {p} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode() for p in images[:6]))
    _reset(s)
    time.sleep(0.5)  # give a dying server time to die (not a timing assertion)
    assert srv.alive(), f"the server died (exit {srv.proc.returncode}): {srv.stderr()}"
    c = Http(srv.url)
    status, _, _ = c.request("GET", "/api/study")
    c.close()
    assert status == 200 and srv.alive(), srv.stderr()
    assert "Traceback" not in srv.stderr()


# --- (2) a vote only for the trial last shown ---------------------------------------------------------------------
def test_a_vote_is_accepted_only_for_the_trial_last_shown(study):
    with background(study) as url:
        c = Http(url)
        c.join("expert")
        con = sqlite3.connect(f"file:{study / 'votes.sqlite'}?mode=ro", uri=True)
        order = [t for (t,) in con.execute("SELECT trial FROM assignments WHERE rater_id = 1 ORDER BY position")]
        con.close()
        # nothing shown yet: not even the first trial of the rater's order can be voted on
        status, data, _ = c.request("POST", "/api/vote", {"trial": order[0], "choice": 0})
        assert status == 409 and "not the photo you were shown" in data["error"]
        _, state, _ = c.request("GET", "/api/state")
        assert state["trial"]["id"] == order[0]
        for other in order[1:]:  # assigned to the rater, valid ids, never shown
            status, _, _ = c.request("POST", "/api/vote", {"trial": other, "choice": 0})
            assert status == 409
        status, data, _ = c.request("POST", "/api/vote", {"trial": order[0], "choice": 1})
        assert status == 201 and data["next"]["trial"]["id"] == order[1]
        status, _, _ = c.request("POST", "/api/vote", {"trial": order[0], "choice": 1})
        assert status == 409  # the same one twice
        status, _, _ = c.request("POST", "/api/vote", {"trial": order[2], "choice": 1})
        assert status == 409  # skipping ahead
        c.close()
    con = sqlite3.connect(study / "votes.sqlite")
    assert con.execute("SELECT trial, choice FROM votes").fetchall() == [(order[0], 1)]
    con.close()


# --- (3) --max-raters inside the join transaction ------------------------------------------------------------------
def test_max_raters_holds_under_concurrent_joins(study):
    # two stores on one database, as two servers on one study
    _, doc = load_study(study)
    trials, methods = [t["id"] for t in doc["trials"]], [m["name"] for m in doc["methods"]]
    stores = [Store(study / "votes.sqlite", 0, trials, methods) for _ in range(2)]
    go = threading.Barrier(24)
    outcomes: list[str] = []
    lock = threading.Lock()

    def join(i: int) -> None:
        go.wait()
        try:
            stores[i % 2].join(f"token-{i}", "expert", 5)
            res = "in"
        except Exception as e:  # noqa: BLE001
            res = f"{type(e).__name__}:{getattr(e, 'status', '')}"
        with lock:
            outcomes.append(res)

    threads = [threading.Thread(target=join, args=(i,)) for i in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for s in stores:
        s.close()
    assert sorted(outcomes) == ["VoteRejected:403"] * 19 + ["in"] * 5
    # and through the HTTP API
    with background(study, max_raters=8) as url:
        statuses: list[int] = []
        go = threading.Barrier(12)

        def http_join() -> None:
            c = Http(url)
            go.wait()
            status, _, _ = c.request("POST", "/api/join", {"group": "amateur"}, token=None)
            c.close()
            with lock:
                statuses.append(status)

        threads = [threading.Thread(target=http_join) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    assert sorted(statuses) == [201] * 3 + [403] * 9
    con = sqlite3.connect(study / "votes.sqlite")
    assert con.execute("SELECT COUNT(*) FROM raters").fetchone()[0] == 8
    con.close()


# --- (4) nested JSON; a client hanging up mid-body -----------------------------------------------------------------
def test_deep_json_is_400_and_a_hangup_mid_body_is_one_line(served):
    srv = served()
    c = Http(srv.url)
    for body in ["[" * 1000, '{"group": ' + "[" * 500 + "]" * 500 + "}", '{"a":' * 150 + "1" + "}" * 150]:
        status, data, _ = c.request("POST", "/api/join", body, headers={"Content-Type": "application/json"},
                                    token=None)
        assert status == 400, (status, data)
    c.join("expert")
    status, data, _ = c.request("POST", "/api/vote", "[" * 1000, headers={"Content-Type": "application/json"})
    assert status == 400
    # headers announce 200 bytes, 10 arrive, then the client is gone
    s = _raw(srv.port)
    s.sendall(f"POST /api/join HTTP/1.1\r\nHost: 127.0.0.1:{srv.port}\r\nContent-Type: application/json\r\n"
              f"Content-Length: 200\r\n\r\n{{\"group\":".encode())
    time.sleep(0.3)  # let the server start reading the body (not a timing assertion)
    s.close()
    _wait_for(lambda: "hung up" in srv.stderr(), "the server logs the hang-up")
    status, _, _ = c.request("GET", "/api/state")
    c.close()
    err = srv.stderr()
    assert status == 200 and srv.alive()
    assert "Traceback" not in err and "RecursionError" not in err, err
    assert len([ln for ln in err.splitlines() if "hung up" in ln]) == 1, err


# --- (5) Host and Origin ------------------------------------------------------------------------------------------
def test_only_served_hosts_and_same_origin_writes_are_answered(study):
    with background(study) as url:
        port = int(url.rsplit(":", 1)[1])
        c = Http(url)
        J = {"Content-Type": "application/json"}
        for host in ("evil.example", f"evil.example:{port}", "127.0.0.2", ""):  # DNS rebinding keeps its name
            status, _, _ = c.request("GET", "/", headers={"Host": host})
            assert status == 400, host
            status, _, _ = c.request("POST", "/api/join", {"group": "expert"}, token=None,
                                     headers={**J, "Host": host, "Origin": f"http://{host}"})
            assert status == 400, host
        for origin in ("http://evil.example", f"http://evil.example:{port}", "null", f"http://localhost:{port}",
                       f"http://127.0.0.1:{port + 1}", f"https://127.0.0.1:{port}x"):
            status, data, _ = c.request("POST", "/api/join", {"group": "expert"}, token=None,
                                        headers={**J, "Origin": origin})
            assert status == 403, (origin, data)
        status, _, _ = c.request("POST", "/api/join", {"group": "expert"}, token=None,
                                 headers={**J, "Sec-Fetch-Site": "cross-site"})
        assert status == 403
        con = sqlite3.connect(f"file:{study / 'votes.sqlite'}?mode=ro", uri=True)
        assert con.execute("SELECT COUNT(*) FROM raters").fetchone()[0] == 0
        con.close()
        # the page's own requests, and clients that send no Origin
        status, _, _ = c.request("POST", "/api/join", {"group": "expert"}, token=None,
                                 headers={**J, "Origin": f"http://127.0.0.1:{port}", "Sec-Fetch-Site": "same-origin"})
        assert status == 201
        status, _, _ = c.request("POST", "/api/join", {"group": "expert"}, token=None,
                                 headers={**J, "Host": f"localhost:{port}", "Origin": f"http://localhost:{port}"})
        assert status == 201
        assert c.request("GET", "/", headers={"Host": f"localhost:{port}"})[0] == 200
        c.close()
    assert {"127.0.0.1", "localhost", "[::1]"} <= set(allowed_hosts("127.0.0.1"))
    assert "evil.example" not in allowed_hosts("0.0.0.0")
    assert {"127.0.0.1", socket.gethostname().lower()} <= set(allowed_hosts("0.0.0.0"))
    assert set(allowed_hosts("192.0.2.7", ["study.lab.example", "[2001:db8::1]"])) == {
        "192.0.2.7", "study.lab.example", "[2001:db8::1]"}


# --- (6) blindness --------------------------------------------------------------------------------------------------
def _chunks(data: bytes) -> list[bytes]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    out, i = [], 8
    while i < len(data):
        (n,) = struct.unpack(">I", data[i:i + 4])
        out.append(data[i + 4:i + 8])
        i += 12 + n
    return out


def test_served_candidates_do_not_give_the_method_away(study, tmp_path_factory):
    from PIL import Image

    runs = study_runs(tmp_path_factory)
    _, doc = load_study(study)
    recorded = set()
    for m in METHODS:
        with open(Path(runs["demo"][m]) / "per_image.csv", newline="", encoding="utf-8") as f:
            recorded |= {r["output_sha256"] for r in csv.DictReader(f)}
    assert recorded
    run_dirs = {m["name"]: Path(m["run"]) for m in doc["methods"]}
    img = study / "img"
    mtimes = {p.stat().st_mtime for p in img.iterdir()}
    assert len(mtimes) == 1, "file times would follow the --runs order"
    with background(study) as url:
        c = Http(url)
        for t in doc["trials"]:
            sizes = set()
            for m, name in t["files"].items():
                data = (img / name).read_bytes()
                original = run_dirs[m] / "outputs" / f"{t['image']}.png"
                assert hashlib.sha256(data).hexdigest() not in recorded
                assert data != original.read_bytes()
                with Image.open(io.BytesIO(data)) as a, Image.open(original) as b:  # same pixels
                    assert np.array_equal(np.asarray(a.convert("RGB")), np.asarray(b.convert("RGB")))
                assert set(_chunks(data)) <= {b"IHDR", b"IDAT", b"IEND", b"paDd"}  # no metadata carried over
                sizes.add(len(data))
                status, body, h = c.request("GET", f"/img/{name}")
                assert status == 200 and body == data
                assert "last-modified" not in h and h["etag"] == f'"{name[:32]}"'
            assert len(sizes) == 1, f"sizes differ within a trial: {sizes}"
        c.close()
    # two studies of the same runs share no file either
    again, _ = create_study("again", [Path(r) for r in run_dirs.values()], seed=2)
    digest = lambda d: {hashlib.sha256(p.read_bytes()).hexdigest() for p in (d / "img").iterdir()}  # noqa: E731
    assert not digest(study) & digest(again)


# --- (7) stalled connections ----------------------------------------------------------------------------------------
def test_stalled_requests_time_out_and_connections_are_bounded(served):
    srv = served("--request-timeout", "1", "--max-connections", "3")
    silent = _raw(srv.port)  # connects, says nothing
    trickle = _raw(srv.port)  # half a request line and header
    trickle.sendall(b"GET / HTTP/1.1\r\nHost: 127.0")
    stalled_body = _raw(srv.port)  # complete headers, a tenth of the body
    stalled_body.sendall(f"POST /api/join HTTP/1.1\r\nHost: 127.0.0.1:{srv.port}\r\nContent-Type: "
                         f"application/json\r\nContent-Length: 100\r\n\r\n{{\"gr".encode())
    time.sleep(0.3)  # let the server accept these three first (not a timing assertion)
    extra = [_raw(srv.port) for _ in range(2)]
    for s in extra:  # over --max-connections: answered 503 and closed
        s.sendall(f"GET /api/study HTTP/1.1\r\nHost: 127.0.0.1:{srv.port}\r\n\r\n".encode())
        assert _recv_all(s).startswith(b"HTTP/1.1 503"), "a connection over the limit was served"
        s.close()
    assert _recv_all(silent) == b""  # closed by the server, not held forever
    assert _recv_all(trickle) == b""
    answer = _recv_all(stalled_body)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    for s in (silent, trickle, stalled_body):
        s.close()
    c = Http(srv.url)
    status, _, _ = c.request("GET", "/api/study")
    c.close()
    assert status == 200 and srv.alive()
    assert "Traceback" not in srv.stderr()


# --- (8) vote files -----------------------------------------------------------------------------------------------
HEAD = "rater,rater_group,image,category,shown,chosen\n"
ROWS = ["José,expert,i1,Night,csrnet|ours,ours", "r2,amateur,i1,Night,deepupe|deeplpf,deeplpf"]


def _votes(tmp: Path, name: str, data: bytes | str) -> Path:
    p = tmp / name
    p.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return p


def test_vote_file_encodings(tmp_path):
    text = HEAD + "\n".join(ROWS) + "\n"
    for name, data in [("plain.csv", text.encode("utf-8")), ("bom.csv", b"\xef\xbb\xbf" + text.encode("utf-8")),
                       ("crlf.csv", text.replace("\n", "\r\n").encode("utf-8"))]:
        votes, _ = st.read_votes(_votes(tmp_path, name, data), PAPER)
        assert [v.rater for v in votes] == ["José", "r2"] and votes[0].shown == ("csrnet", "ours"), name
    with pytest.raises(BenchError, match=r"not UTF-8: byte 0xE9 on line 2.*Latin-1/Windows-1252"):
        st.read_votes(_votes(tmp_path, "latin1.csv", text.encode("cp1252")), PAPER)
    with pytest.raises(BenchError, match="UTF-16"):
        st.read_votes(_votes(tmp_path, "utf16.csv", text.encode("utf-16")), PAPER)
    with pytest.raises(BenchError, match="UTF-16 text without a byte-order mark"):
        st.read_votes(_votes(tmp_path, "utf16le.csv", text.encode("utf-16-le")), PAPER)
    with pytest.raises(BenchError, match="is a folder"):
        st.read_votes(tmp_path, PAPER)


def test_vote_file_delimiters_and_shown_separators(tmp_path):
    want = [(v.rater, v.group, v.image, v.shown, v.chosen) for v in st.read_votes(
        _votes(tmp_path, "c.csv", HEAD + "\n".join(ROWS) + "\n"), PAPER)[0]]
    for name, delim, sep in [("semi.csv", ";", "|"), ("tab.tsv", "\t", "|"), ("semi2.csv", ";", ","),
                             ("comma.csv", ",", ";"), ("slash.csv", ",", "/")]:
        lines = [HEAD.strip().replace(",", delim)] + [
            delim.join(x.replace("|", sep) for x in r.split(",")) for r in ROWS]
        votes, notes = st.read_votes(_votes(tmp_path, name, "\n".join(lines) + "\n"), PAPER)
        assert [(v.rater, v.group, v.image, v.shown, v.chosen) for v in votes] == want, name
    with pytest.raises(BenchError, match=r"separated by '\|' \(also accepted: ';', ',', '/'\)"):
        st.read_votes(_votes(tmp_path, "space.csv", HEAD + "r1,expert,i1,N,csrnet ours,ours\n"), PAPER)
    with pytest.raises(BenchError, match=r"mixes the separators.*separated by '\|'"):
        st.read_votes(_votes(tmp_path, "mixed.csv", HEAD + "r1,expert,i1,N,csrnet|deepupe;ours,ours\n"), PAPER)


def test_vote_file_columns_empty_and_missing(tmp_path):
    other = "participant;group;photo;cat;seen;pick\nr1;expert;i1;N;csrnet|ours;ours\n"
    cols = st.parse_columns(["rater=participant,rater_group=group", "image=photo", "shown=seen,chosen=pick"])
    votes, _ = st.read_votes(_votes(tmp_path, "other.csv", other), PAPER, columns=cols)
    assert (votes[0].rater, votes[0].group, votes[0].image, votes[0].shown, votes[0].chosen) == (
        "r1", "expert", "i1", ("csrnet", "ours"), "ours")
    with pytest.raises(BenchError, match="missing column.*rater.*--columns rater=NAME"):
        st.read_votes(tmp_path / "other.csv", PAPER)
    with pytest.raises(BenchError, match="has no column 'who'"):
        st.read_votes(tmp_path / "other.csv", PAPER, columns={"rater": "who"})
    with pytest.raises(BenchError, match="did you mean 'rater'"):
        st.parse_columns(["rator=participant"])
    with pytest.raises(BenchError, match="STANDARD=NAME"):
        st.parse_columns(["participant"])
    for name, data in [("zero.csv", b""), ("bomonly.csv", b"\xef\xbb\xbf"), ("blank.csv", b"\n \n")]:
        with pytest.raises(BenchError, match="is empty"):
            st.read_votes(_votes(tmp_path, name, data), PAPER)
    with pytest.raises(BenchError, match="a header row but no votes"):
        st.read_votes(_votes(tmp_path, "head.csv", HEAD), PAPER)
    with pytest.raises(BenchError, match="missing column"):
        st.read_votes(_votes(tmp_path, "cols.csv", "rater,image\nr1,i1\n"), PAPER)


def test_exact_duplicate_vote_rows(tmp_path, capsys):
    from test_report import report

    rows = ROWS + [ROWS[0], ROWS[1], ROWS[0]]
    f = _votes(tmp_path, "dup.csv", HEAD + "\n".join(rows) + "\n")
    with pytest.raises(BenchError, match=r"3 exact duplicate vote row\(s\) \(e.g. line 4 repeats line 2\).*"
                                         r"--allow-duplicates"):
        st.read_votes(f, PAPER)
    votes, notes = st.read_votes(f, PAPER, allow_duplicates=True)
    assert len(votes) == 5 and any("3 exact duplicate" in n for n in notes)
    # not exact: the same rater and image chosen twice differently is a repeated trial, noted, not refused
    votes, notes = st.read_votes(_votes(tmp_path, "rep.csv", HEAD + ROWS[0] + "\n" + ROWS[0].replace(
        "ours,ours", "ours,csrnet") + "\n"), PAPER)
    assert len(votes) == 2 and any("repeated (rater, image)" in n for n in notes)
    # the command: refused in one line, or counted with the count on stderr; --columns passes through
    with pytest.raises(BenchError, match="exact duplicate"):
        report("table3", "--votes", str(f))
    capsys.readouterr()
    report("table3", "--votes", str(f), "--allow-duplicates")
    assert "3 exact duplicate vote row(s) counted" in capsys.readouterr().err
    g = _votes(tmp_path, "g.csv", "who,rater_group,image,category,shown,chosen\n" + "\n".join(ROWS) + "\n")
    out = report("table3", "--votes", str(g), "--columns", "rater=who")
    assert json.loads((out / "table3.stats.json").read_text(encoding="utf-8"))["n_raters"] == 2

"""`bench study`: create a blind study from real runs, the server's strict API, status, export, Table 3.

The runs are real (`bench.run.execute`), made once per pytest session by :func:`study_runs` and shared by
tests/test_study_browser.py and tests/test_study_load.py:

- identity, lime and eff on the embedded ``demo`` set's **train** split: its 5 real photographs, made
  low-light (the test split has only 2, and the browser test needs a 5-trial study; these methods train on
  nothing, so enhancing the train split is an ordinary run);
- the same methods on ``studyload``, a dataset made with ``bench data index`` from 20 small generated image
  pairs, for the 20-trial load test.

The server runs in a thread on 127.0.0.1 with a free port (:func:`bench.study.server.background`).
"""

from __future__ import annotations

import csv
import io
import http.client
import json
import sqlite3
import urllib.parse
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("starlette", reason="the study app needs the study extra (starlette, uvicorn)")
pytest.importorskip("uvicorn", reason="the study app needs the study extra (starlette, uvicorn)")

from bench.errors import BenchError  # noqa: E402
from bench.study import register  # noqa: E402
from bench.study.create import create_study, load_study  # noqa: E402
from bench.study.export import COLUMNS, export, status as study_status  # noqa: E402
from bench.study.server import MAX_BODY, background  # noqa: E402

METHODS = ("identity", "lime", "eff")
REQUIRED = ["rater", "rater_group", "image", "category", "shown", "chosen"]


# --- shared fixtures (imported by the other study tests) ------------------------------------------------------
def _generated_pairs(folder: Path, n: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(11)
    (folder / "low").mkdir(parents=True, exist_ok=True)
    (folder / "high").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        coarse = rng.uniform(0.1, 1.0, size=(4, 6, 3))
        high = np.kron(coarse, np.ones((8, 8, 1)))  # 32x48, blocky but smooth enough
        high = (255 * high).round().astype(np.uint8)
        low = (high.astype(np.float64) * 0.15).round().astype(np.uint8)
        Image.fromarray(high).save(folder / "high" / f"g{i:02d}.png")
        Image.fromarray(low).save(folder / "low" / f"g{i:02d}.png")


def study_runs(tmp_path_factory) -> dict[str, Any]:
    """Real runs of identity, lime and eff (demo train split; a 20-image indexed set), made once a session."""
    base = tmp_path_factory.getbasetemp() / "study-runs"
    ready = base / "runs.json"
    if ready.exists():
        return json.loads(ready.read_text())
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BENCH_DATA", str(base / "data"))
        mp.setenv("BENCH_RESULTS", str(base / "results"))
        from bench.data.index import index_folder
        from bench.run import RunSpec, execute

        demo = {m: str(execute(RunSpec(m, "demo", split="train", progress=False)).run_dir) for m in METHODS}
        _generated_pairs(base / "gen", 20)
        index_folder("studyload", base / "gen" / "low", base / "gen" / "high", progress=False)
        load = {m: str(execute(RunSpec(m, "studyload", progress=False)).run_dir) for m in METHODS}
    doc = {"data": str(base / "data"), "demo": demo, "load": load}
    ready.write_text(json.dumps(doc))
    return doc


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Any]:
    return study_runs(tmp_path_factory)


class Http:
    """A tiny HTTP/1.1 client on one keep-alive connection (raw paths and bodies, as an attacker sends them)."""

    def __init__(self, base: str, token: str | None = None):
        u = urllib.parse.urlsplit(base)
        self.host, self.port = u.hostname, u.port
        self.token = token
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)

    def request(self, method: str, path: str, body: bytes | str | dict | list | None = None,
                headers: dict[str, str] | None = None, token: str | None = "default") -> tuple[int, Any, dict]:
        h = {} if headers is None else dict(headers)
        tok = self.token if token == "default" else token
        if tok is not None and "Authorization" not in h:
            h["Authorization"] = f"Bearer {tok}"
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
            h.setdefault("Content-Type", "application/json")
        if isinstance(body, str):
            body = body.encode("utf-8")
        try:
            self.conn.request(method, path, body=body, headers=h)
            resp = self.conn.getresponse()
        except (http.client.HTTPException, OSError):  # a server that closed the connection: retry once
            self.conn.close()
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
            self.conn.request(method, path, body=body, headers=h)
            resp = self.conn.getresponse()
        raw = resp.read()
        headers_out = {k.lower(): v for k, v in resp.getheaders()}
        data: Any = raw
        if headers_out.get("content-type", "").startswith("application/json"):
            data = json.loads(raw)
        if resp.getheader("connection", "").lower() == "close":
            self.conn.close()
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        return resp.status, data, headers_out

    def join(self, group: str = "expert") -> str:
        status, data, _ = self.request("POST", "/api/join", {"group": group}, token=None)
        assert status == 201, data
        self.token = data["token"]
        return self.token

    def close(self) -> None:
        self.conn.close()


def db_counts(study: Path) -> dict[str, int]:
    con = sqlite3.connect(f"file:{study / 'votes.sqlite'}?mode=ro", uri=True)
    try:
        return {t: con.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("raters", "assignments", "votes")}
    finally:
        con.close()


def cli(*argv: str) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="bench")
    p.add_argument("-q", "--quiet", action="store_true")
    register(p.add_subparsers(dest="cmd", required=True))
    args = p.parse_args(["study", *argv])
    return args.fn(args)


def table3_from(votes: Path, spec: Path, out: Path):
    """The Table 3 report path of `bench report table3 --votes FILE --spec YAML`."""
    from bench.report import write_study
    from bench.report.spec import load_spec

    files = write_study(load_spec("table3", spec), votes, out)
    return {f.name: f for f in files}


@pytest.fixture
def demo_study(runs, monkeypatch) -> Path:
    monkeypatch.setenv("BENCH_DATA", runs["data"])  # --with-input reads the demo inputs
    path, notes = create_study("pilot", [Path(runs["demo"][m]) for m in METHODS], seed=5, with_input=True)
    assert notes == []
    return path


# --- create ---------------------------------------------------------------------------------------------------
def test_create_is_blind_and_complete(demo_study, runs):
    path, doc = load_study("pilot")
    assert path == demo_study and doc["dataset"] == "demo" and doc["split"] == "train"
    assert [m["name"] for m in doc["methods"]] == list(METHODS) and doc["groups"] == ["expert", "amateur"]
    assert len(doc["trials"]) == 5 and {t["category"] for t in doc["trials"]} == {"all"}
    files = sorted(p.name for p in (path / "img").iterdir())
    assert len(files) == 5 * 4  # three outputs and the input per trial
    for name in files:
        assert len(name) == 36 and name.endswith(".png") and int(name[:32], 16) >= 0
    for t in doc["trials"]:
        assert len(t["id"]) == 16 and t["image"] not in t["id"]
        for m in METHODS:
            original = Path(runs["demo"][m]) / "outputs" / f"{t['image']}.png"
            served = (path / "img" / t["files"][m]).read_bytes()
            assert served != original.read_bytes()   # re-encoded: the run output's sha256 does not identify it
            with Image.open(io.BytesIO(served)) as a, Image.open(original) as b:
                assert np.array_equal(np.asarray(a.convert("RGB")), np.asarray(b.convert("RGB")))
        assert t["input"] and (path / "img" / t["input"]).is_file()


def test_create_selection_is_seeded(runs, tmp_path):
    run_dirs = [Path(runs["load"][m]) for m in METHODS]
    a, _ = create_study("a", run_dirs, images=7, seed=1)
    b, _ = create_study("b", run_dirs, images=7, seed=1)
    c, _ = create_study("c", run_dirs, images=7, seed=2)
    pick = lambda p: [t["image"] for t in load_study(p)[1]["trials"]]  # noqa: E731
    assert pick(a) == pick(b) and len(pick(a)) == 7 and pick(a) != pick(c)
    cats = tmp_path / "cats.csv"
    cats.write_text("id,category\n" + "".join(f"g{i:02d},{['Night', 'People'][i % 2]}\n" for i in range(20)))
    d, _ = create_study("d", run_dirs, per_category=3, categories=cats, seed=0)
    trials = load_study(d)[1]["trials"]
    assert [t["category"] for t in trials] == ["Night"] * 3 + ["People"] * 3
    assert all(int(t["image"][1:]) % 2 == (t["category"] == "People") for t in trials)


def test_create_refuses_bad_runs(runs, tmp_path):
    demo = [Path(runs["demo"][m]) for m in METHODS]
    load = [Path(runs["load"][m]) for m in METHODS]
    with pytest.raises(BenchError, match="runs of different data"):
        create_study("x", [demo[0], load[1]])
    with pytest.raises(BenchError, match="same method"):
        create_study("x", [demo[0], demo[0]])
    with pytest.raises(BenchError, match="compares 2 to 4 methods"):
        create_study("x", demo[:1])
    with pytest.raises(BenchError, match="does not exist"):
        create_study("x", [demo[0], tmp_path / "nope"])
    (tmp_path / "half" / "outputs").mkdir(parents=True)
    with pytest.raises(BenchError, match="not complete"):
        create_study("x", [demo[0], tmp_path / "half"])
    with pytest.raises(BenchError, match="study name"):
        create_study("../evil", demo)
    with pytest.raises(BenchError, match="only 5 image"):
        create_study("x", demo, images=6)
    create_study("x", demo[:2])
    with pytest.raises(BenchError, match="already exists"):
        create_study("x", demo[:2])


# --- the API ----------------------------------------------------------------------------------------------------
def test_page_and_api_never_name_a_method(demo_study):
    _, doc = load_study(demo_study)
    names = set(METHODS) | {m["display_name"] for m in doc["methods"]} | {t["image"] for t in doc["trials"]}
    with background(demo_study) as url:
        c = Http(url)
        status, page, headers = c.request("GET", "/")
        assert status == 200 and b"<title>" in page and "default-src 'none'" in headers["content-security-policy"]
        c.join("amateur")
        status, state, headers = c.request("GET", "/api/state")
        assert status == 200 and headers["cache-control"] == "no-store" and state["total"] == 5
        seen = []
        while state["trial"]:
            t = state["trial"]
            assert len(t["candidates"]) == 3 and [x["position"] for x in t["candidates"]] == [0, 1, 2]
            for url_ in [x["url"] for x in t["candidates"]] + [t["input"]]:
                assert url_.startswith("/img/") and len(url_) == len("/img/") + 36
                status, body, h = c.request("GET", url_)
                assert status == 200 and body[:8] == b"\x89PNG\r\n\x1a\n" and "max-age" in h["cache-control"]
            flat = json.dumps(state)
            assert not any(f'"{n}"' in flat or f"/{n}" in flat for n in names), flat
            seen.append(t["id"])
            status, data, _ = c.request("POST", "/api/vote", {"trial": t["id"], "choice": 2, "ms": 1234})
            assert status == 201
            state = data["next"]
        assert state["done"] == 5 and len(set(seen)) == 5
        # a cached image is revalidated cheaply
        img = f"/img/{doc['trials'][0]['files']['lime']}"
        _, _, h = c.request("GET", img)
        status, body, _ = c.request("GET", img, headers={"If-None-Match": h["etag"]})
        assert status == 304 and body == b""
        c.close()


def test_bad_inputs_are_rejected_and_nothing_is_stored(demo_study, capsys):
    path, doc = load_study(demo_study)
    with background(demo_study) as url:
        a, b = Http(url), Http(url)
        a.join("expert")
        b.join("amateur")
        _, state, _ = a.request("GET", "/api/state")
        t1 = state["trial"]["id"]
        status, _, _ = a.request("POST", "/api/vote", {"trial": t1, "choice": 0, "ms": 900})
        assert status == 201
        before = db_counts(path)
        assert before == {"raters": 2, "assignments": 10, "votes": 1}
        _, state, _ = a.request("GET", "/api/state")
        t2 = state["trial"]["id"]
        good = {"trial": t2, "choice": 1}
        J = {"Content-Type": "application/json"}
        cases: list[tuple[str, tuple, dict, Any]] = [
            ("state without a token", ("GET", "/api/state"), {"token": None}, 401),
            ("state with an unknown token", ("GET", "/api/state"), {"token": "x" * 43}, 401),
            ("vote without a token", ("POST", "/api/vote", good), {"token": None}, 401),
            ("vote with an unknown token", ("POST", "/api/vote", good), {"token": "nope"}, 401),
            ("vote with a malformed Authorization header", ("POST", "/api/vote", good),
             {"headers": {"Authorization": "Basic abc"}}, 401),
            ("vote with an overlong token", ("POST", "/api/vote", good), {"token": "y" * 5000}, 401),
            ("a second vote on the same trial", ("POST", "/api/vote", {"trial": t1, "choice": 1}), {}, 409),
            ("a vote on a trial not assigned (unknown id)", ("POST", "/api/vote", {"trial": "0123456789abcdef",
                                                                                    "choice": 0}), {}, 404),
            ("a vote on a trial id that is no id", ("POST", "/api/vote", {"trial": "../t", "choice": 0}), {}, 422),
            ("a forged candidate position 3 of 3", ("POST", "/api/vote", {"trial": t2, "choice": 3}), {}, 422),
            ("a forged candidate position -1", ("POST", "/api/vote", {"trial": t2, "choice": -1}), {}, 422),
            ("a candidate position as a string", ("POST", "/api/vote", {"trial": t2, "choice": "1"}), {}, 422),
            ("a candidate position as a float", ("POST", "/api/vote", {"trial": t2, "choice": 1.0}), {}, 422),
            ("a candidate position as a bool", ("POST", "/api/vote", {"trial": t2, "choice": True}), {}, 422),
            ("a missing field", ("POST", "/api/vote", {"trial": t2}), {}, 422),
            ("an unknown field", ("POST", "/api/vote", {**good, "chosen": "lime"}), {}, 422),
            ("a negative decision time", ("POST", "/api/vote", {**good, "ms": -5}), {}, 422),
            ("malformed JSON", ("POST", "/api/vote", '{"trial": "' + t2 + '", "choice": 1'), {"headers": J}, 400),
            ("a JSON array", ("POST", "/api/vote", [t2, 1]), {}, 400),
            ("NaN in JSON", ("POST", "/api/vote", '{"trial": "' + t2 + '", "choice": NaN}'), {"headers": J}, 400),
            ("invalid UTF-8", ("POST", "/api/vote", b'{"trial": "\xff\xfe", "choice": 1}'), {"headers": J}, 400),
            ("an empty body", ("POST", "/api/vote", b""), {"headers": J}, 400),
            ("a body that is not application/json", ("POST", "/api/vote", json.dumps(good)),
             {"headers": {"Content-Type": "text/plain"}}, 415),
            ("an oversized body", ("POST", "/api/vote", json.dumps({**good, "pad": "x" * 4000})), {"headers": J}, 413),
            ("an oversized chunked body (no Content-Length)", ("POST", "/api/vote",
                                                               iter([b'{"trial": "', b"x" * 3000, b'"}'])),
             {"headers": J}, 413),  # http.client sends an iterator chunked
            ("a Content-Length over the limit", ("POST", "/api/vote", b"{}"),
             {"headers": {**J, "Content-Length": str(10 * MAX_BODY)}, "raw": True}, 413),
            ("join with an unknown group", ("POST", "/api/join", {"group": "admin"}), {"token": None}, 422),
            ("join with a group that is not a string", ("POST", "/api/join", {"group": ["expert"]}),
             {"token": None}, 422),
            ("join with an extra field", ("POST", "/api/join", {"group": "expert", "rater": "r0001"}),
             {"token": None}, 422),
            ("join with malformed JSON", ("POST", "/api/join", "{group"), {"token": None, "headers": J}, 400),
            ("join with an oversized body", ("POST", "/api/join", {"group": "expert", "x": "y" * 5000}),
             {"token": None}, 413),
            ("vote with GET", ("GET", "/api/vote"), {}, 405),
        ]
        for raw_path in ["/img/../study.json", "/img/..%2fstudy.json", "/img/%2e%2e%2fvotes.sqlite",
                         "/img/..%2F..%2F..%2Fetc%2Fpasswd", "/img/%2e%2e/study.json", "/img/..\\study.json",
                         "/img/study.json", "/img/votes.sqlite", "/static/..%2fstudy.json", "/static/../create.py",
                         "/static/index.html/..%2f..%2fcreate.py", "/img/" + "0" * 32 + ".png",
                         "/img/" + doc["trials"][0]["files"]["lime"] + "/..", "/img//etc/passwd"]:
            cases.append((f"image path {raw_path}", ("GET", raw_path), {"token": None}, (400, 404)))
        results = []
        for label, req, opts, want in cases:
            method, p, *body = req
            if opts.get("raw"):  # a lying Content-Length: send the headers and a short body, then hang up
                conn = http.client.HTTPConnection(a.host, a.port, timeout=10)
                conn.putrequest(method, p)
                for k, v in {**opts["headers"], "Authorization": f"Bearer {a.token}"}.items():
                    conn.putheader(k, v)
                conn.endheaders()
                conn.send(body[0])
                resp = conn.getresponse()
                status, data = resp.status, resp.read()
                conn.close()
            else:  # a fresh connection each: a refused body may leave the old one unusable
                c = Http(url, a.token)
                kw = {k: v for k, v in opts.items() if k in ("headers", "token")}
                status, data, _ = c.request(method, p, body[0] if body else None, **kw)
                c.close()
            results.append((label, status))
            assert status in (want if isinstance(want, tuple) else (want,)), (label, status, data)
            assert 400 <= status < 500
            if isinstance(data, bytes):
                assert b'"trials"' not in data and b"SQLite" not in data and b"root:" not in data
        # still healthy, and nothing of the above was stored
        assert db_counts(path) == before
        status, _, _ = a.request("POST", "/api/vote", {"trial": t2, "choice": 1, "ms": 10})
        assert status == 201 and db_counts(path)["votes"] == 2
        a.close()
        b.close()
    with capsys.disabled():
        print(f"\nrejected bad inputs ({len(results)}):")
        for label, status in results:
            print(f"  {status}  {label}")


def test_votes_record_order_and_time(demo_study):
    path, doc = load_study(demo_study)
    with background(demo_study) as url:
        c = Http(url)
        c.join("expert")
        _, state, _ = c.request("GET", "/api/state")
        t = state["trial"]
        status, _, _ = c.request("POST", "/api/vote", {"trial": t["id"], "choice": 1, "ms": 2500})
        assert status == 201
        c.close()
    con = sqlite3.connect(path / "votes.sqlite")
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    (choice, chosen, shown, voted_at, ms), = con.execute(
        "SELECT choice, chosen, shown, voted_at, decision_ms FROM votes").fetchall()
    first_shown, = con.execute("SELECT first_shown_at FROM assignments WHERE trial = ?", (t["id"],)).fetchone()
    con.close()
    trial = next(x for x in doc["trials"] if x["id"] == t["id"])
    shown = json.loads(shown)
    assert sorted(shown) == sorted(METHODS) and chosen == shown[1] and choice == 1 and ms == 2500
    # the URL shown at position 1 is the chosen method's copy
    assert t["candidates"][1]["url"] == f"/img/{trial['files'][chosen]}"
    assert first_shown <= voted_at and voted_at.endswith("+00:00")


# --- status, export, Table 3 ------------------------------------------------------------------------------------
def test_status_export_and_table3(demo_study, capsys, tmp_path):
    path, doc = load_study(demo_study)
    picks = {"expert": 0, "amateur": 2}  # always the left-most / right-most position
    with background(demo_study) as url:
        for group in ("expert", "expert", "amateur"):
            c = Http(url)
            c.join(group)
            _, state, _ = c.request("GET", "/api/state")
            for _ in range(5 if group == "expert" else 3):  # the amateur leaves after 3 trials
                status, data, _ = c.request("POST", "/api/vote", {"trial": state["trial"]["id"],
                                                                  "choice": picks[group]})
                assert status == 201
                state = data["next"]
            c.close()
    st = study_status("pilot")
    assert (st["raters"], st["complete_raters"], st["votes"], st["expected_votes"]) == (3, 2, 13, 15)
    assert st["groups"]["expert"] == {"raters": 2, "complete": 2, "votes": 10}
    assert cli("status", "pilot") == 0
    out = capsys.readouterr().out
    assert "votes 13 of 15" in out and "| amateur |" in out
    assert cli("export", "pilot") == 0
    csv_path, spec_path = path / "votes.csv", path / "votes.table3.yaml"
    assert "wrote 13 votes" in capsys.readouterr().out
    with open(csv_path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == COLUMNS and COLUMNS[:6] == REQUIRED and len(rows) == 13
    con = sqlite3.connect(path / "votes.sqlite")
    db = {(f"r{r:04d}", t): (json.loads(s), c) for r, t, s, c in
          con.execute("SELECT rater_id, trial, shown, chosen FROM votes")}
    con.close()
    images = {t["id"]: t["image"] for t in doc["trials"]}
    for r in rows:
        shown, chosen = db[(r["rater"], r["trial"])]
        assert r["shown"] == "|".join(shown) and r["chosen"] == chosen and r["image"] == images[r["trial"]]
        assert r["chosen"] == shown[int(r["choice"]) - 1] and r["category"] == "all"
        assert r["choice"] == str(picks[r["rater_group"]] + 1)
    # `bench report table3 --votes votes.csv --spec votes.table3.yaml`
    files = table3_from(csv_path, spec_path, tmp_path / "tables")
    md = files["table3.md"].read_text(encoding="utf-8")
    assert "experts" in md and "amateurs" in md and "13 votes, 3 raters, 5 images" in md
    stats = json.loads(files["table3.stats.json"].read_text(encoding="utf-8"))
    want = {g: [sum(r["chosen"] == m for r in rows if r["rater_group"] == g) for m in METHODS]
            for g in ("expert", "amateur")}
    assert {g: stats["per_group"][g]["counts"] for g in want} == want
    assert stats["methods"] == list(METHODS)
    # export elsewhere with --out
    assert cli("export", str(path), "--out", str(tmp_path / "v.csv")) == 0
    assert (tmp_path / "v.csv").read_text() == csv_path.read_text() and (tmp_path / "v.table3.yaml").exists()


def test_status_of_unknown_study():
    with pytest.raises(BenchError, match="no study 'nope'"):
        study_status("nope")
    with pytest.raises(BenchError, match="study name"):
        export("bad name!")


def test_table3_spec_for_the_papers_methods_keeps_the_published_numbers():
    from bench.report.spec import load_reference
    from bench.study.export import PAPER_METHODS, table3_spec

    doc = {"name": "paper", "dataset": "lol", "split": "test", "groups": ["expert", "amateur"], "categorized": True,
           "methods": [{"name": m, "display_name": m.upper()} for m in ["ours", "deeplpf", "csrnet", "deepupe"]],
           "trials": [{"category": c} for c in ["Night", "People", "Night"]]}
    spec = table3_spec(doc)
    assert spec["methods"] == PAPER_METHODS and Path(spec["reference"]).is_file()
    assert spec["categories"] == ["Night", "People"] and spec["method_labels"]["ours"] == "ours"
    mine = table3_spec({**doc, "methods": doc["methods"][:2], "categorized": False})
    assert mine["methods"] == ["ours", "deeplpf"] and "reference" not in mine and "categories" not in mine

    class Spec:  # what load_reference reads
        reference = Path(spec["reference"])

    assert {r["method"] for r in load_reference(Spec())} == set(PAPER_METHODS)

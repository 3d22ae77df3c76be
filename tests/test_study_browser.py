"""`bench study` in a real browser: Playwright (Python) driving Debian's headless Chromium (/usr/bin/chromium).

A rater joins, completes a 5-trial study (identity, lime, eff on the demo set's 5 train photographs, see
tests/test_study_app.py) with the mouse and the keyboard, zooms, shows the input, reloads midway and resumes,
finishes on a phone-sized page; then the votes are checked in SQLite, in the export and in the Table 3 report.
Screenshots of the trial page go to tests/artifacts/ (git-ignored). The server runs in a thread on 127.0.0.1.

Needs ``playwright`` (pip) and ``chromium`` (apt); ``playwright install`` is never used: the browser is the
system's. Skipped, with the reason, when either is missing.
"""

from __future__ import annotations

import csv
import json
import re
import sqlite3
from pathlib import Path

import pytest

pytest.importorskip("starlette", reason="the study app needs the study extra (starlette, uvicorn)")
pytest.importorskip("uvicorn", reason="the study app needs the study extra (starlette, uvicorn)")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")

from bench.study.create import create_study  # noqa: E402
from bench.study.export import export  # noqa: E402
from bench.study.server import background  # noqa: E402
from test_study_app import METHODS, study_runs, table3_from  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)")


def _trial(page) -> str:
    return page.locator("#trial").get_attribute("data-trial")


def _wait_photo(page, n: int, total: int = 5) -> str:
    sync_api.expect(page.locator("#progress-text")).to_have_text(f"Photo {n} of {total}")
    page.wait_for_function("() => [...document.querySelectorAll('#cands img')].every(i => i.complete && "
                           "i.naturalWidth > 0)")
    return _trial(page)


def test_rater_completes_a_study_in_chromium(tmp_path_factory, tmp_path, monkeypatch):
    runs = study_runs(tmp_path_factory)
    monkeypatch.setenv("BENCH_DATA", runs["data"])
    study, _ = create_study("browser", [Path(runs["demo"][m]) for m in METHODS], seed=7, with_input=True)
    ARTIFACTS.mkdir(exist_ok=True)
    picks: list[tuple[str, int]] = []  # (trial id, display position chosen), in order
    problems: list[str] = []

    with background(study) as url, sync_api.sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=str(CHROMIUM),
                                                    headless=True, args=ARGS, viewport={"width": 1280, "height": 800})
        try:
            page = ctx.pages[0] if ctx.pages else ctx.new_page()
            page.set_default_timeout(20_000)
            page.on("console", lambda m: m.type == "error" and problems.append(f"console: {m.text}"))
            page.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))
            ctx.on("response", lambda r: r.status >= 400 and problems.append(f"HTTP {r.status}: {r.url}"))
            page.goto(url + "/")

            # join with the mouse
            sync_api.expect(page.locator("#join")).to_be_visible()
            page.get_by_text("Expert:").click()
            page.locator("#start").click()

            # trial 1: mouse, the second candidate
            t = _wait_photo(page, 1)
            assert page.locator("#cands .cand").count() == 3
            html = page.content()
            assert not any(re.search(rf"\b{m}\b", html, re.I) for m in ("identity", "lime", "LIME", "EFF"))
            page.screenshot(path=str(ARTIFACTS / "study_trial_desktop.png"))
            page.locator('#cands .choose[data-position="1"]').click()
            picks.append((t, 1))

            # trial 2: show the input with the keyboard, then key 3
            t = _wait_photo(page, 2)
            page.keyboard.press("i")
            sync_api.expect(page.locator("#input-box")).to_be_visible()
            page.wait_for_function("() => document.getElementById('input-img').naturalWidth > 0")
            page.screenshot(path=str(ARTIFACTS / "study_trial_desktop_input.png"), full_page=True)
            page.keyboard.press("3")
            picks.append((t, 2))

            # leave midway: reload; the same rater resumes at photo 3
            t = _wait_photo(page, 3)
            page.reload()
            assert _wait_photo(page, 3) == t

            # trial 3: zoom on click, enlarge, Escape, then key 1
            page.locator('#cands .cand[data-position="0"] .shot').click()
            sync_api.expect(page.locator("#zoom")).to_be_visible()
            page.wait_for_function("() => document.getElementById('zoom-img').naturalWidth > 0")
            page.screenshot(path=str(ARTIFACTS / "study_zoom.png"))
            page.locator("#zoom-img").click()
            sync_api.expect(page.locator("#zoom-img")).to_have_class(re.compile("enlarged"))
            page.keyboard.press("Escape")
            sync_api.expect(page.locator("#zoom")).to_be_hidden()
            page.keyboard.press("1")
            picks.append((t, 0))

            # trial 4: choose from inside the zoom view with the mouse
            t = _wait_photo(page, 4)
            page.locator('#cands .cand[data-position="2"] .shot').click()
            page.locator("#zoom-choose").click()
            picks.append((t, 2))
            t4_next = _wait_photo(page, 5)
            assert "#t=" in page.locator("#resume-link").get_attribute("href")

            # the last one on a phone-sized page of the same browser: it resumes there too
            phone = ctx.new_page()
            phone.set_default_timeout(20_000)
            phone.on("pageerror", lambda e: problems.append(f"pageerror (phone): {e}"))
            phone.set_viewport_size({"width": 390, "height": 844})
            phone.goto(url + "/")
            assert _wait_photo(phone, 5) == t4_next
            boxes = [phone.locator(f'#cands .cand[data-position="{i}"]').bounding_box() for i in range(3)]
            assert boxes[0]["y"] == boxes[1]["y"] < boxes[2]["y"]  # two columns on a phone
            assert all(b["x"] >= 0 and b["x"] + b["width"] <= 390 for b in boxes)
            phone.screenshot(path=str(ARTIFACTS / "study_trial_phone.png"), full_page=True)
            phone.locator('#cands .choose[data-position="0"]').click()
            picks.append((t4_next, 0))
            sync_api.expect(phone.locator("#done")).to_be_visible()
            sync_api.expect(phone.locator("#progress-text")).to_have_text("All 5 done")
            page.reload()
            sync_api.expect(page.locator("#done")).to_be_visible()
        finally:
            ctx.close()
    assert problems == []

    # SQLite: one rater, five votes, exactly the positions chosen in the page
    con = sqlite3.connect(study / "votes.sqlite")
    (n_raters, group), = con.execute("SELECT COUNT(*), MAX(grp) FROM raters").fetchall()
    votes = {t: (c, json.loads(s), chosen, at) for t, c, s, chosen, at in
             con.execute("SELECT trial, choice, shown, chosen, voted_at FROM votes WHERE rater_id = 1")}
    con.close()
    assert (n_raters, group) == (1, "expert") and len(votes) == 5 and len({t for t, _ in picks}) == 5
    for trial, pos in picks:
        choice, shown, chosen, _ = votes[trial]
        assert choice == pos and chosen == shown[pos] and sorted(shown) == sorted(METHODS)

    # the export and the Table 3 report
    csv_path, spec_path, n = export("browser")
    assert n == 5
    with open(csv_path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [(r["trial"], int(r["choice"]) - 1) for r in rows] == picks
    assert all(r["rater"] == "r0001" and r["rater_group"] == "expert" for r in rows)
    files = table3_from(csv_path, spec_path, tmp_path / "tables")
    stats = json.loads(files["table3.stats.json"].read_text(encoding="utf-8"))
    counts = [sum(r["chosen"] == m for r in rows) for m in METHODS]
    assert stats["n_votes"] == 5 and stats["per_group"]["expert"]["counts"] == counts
    md = files["table3.md"].read_text(encoding="utf-8")
    assert "5 votes, 1 raters, 5 images" in md
    print("\n" + md)

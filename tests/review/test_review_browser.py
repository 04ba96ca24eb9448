"""The review page in a real browser: Debian's chromium driven by Playwright against the real server on the
demo line's real log. Three parts reviewed with the keyboard (d, f, m; one skipped), two by a bulk action,
then exported; the screenshot is saved and its thumbnails checked for real pixels."""

from __future__ import annotations

import csv
import shutil
import sqlite3
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.review.conftest import inspector

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture
def browser_page():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (dev extra) is not installed")
    if not Path(CHROMIUM).is_file():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        yield page, errors
        browser.close()


TILE_MARKS = (
    "[...document.querySelectorAll('#gallery .tile')].map(t => (t.querySelector('.mark') || {}).className || '')"
)


def _wait_verdicts(page, verdict: str) -> None:
    page.wait_for_function(
        "v => { const s = [...document.querySelectorAll('#gallery .tile .meta span:first-child')];"
        " return s.length > 0 && s.every(e => e.textContent === v); }",
        arg=verdict,
        timeout=15_000,
    )


def _focus(page) -> int:
    return page.evaluate("Number(document.querySelector('#gallery .tile.focus').dataset.index)")


@pytest.mark.slow
def test_review_three_parts_with_the_keyboard_then_export(demo_log, review_server, browser_page, tmp_path):
    page, errors = browser_page
    s = review_server(demo_log)
    page.goto(s.base + "/")
    page.wait_for_selector("body[data-ready='1']", timeout=20_000)
    page.fill("#who", "carla")

    page.select_option("select[name=verdict]", "defect")
    page.click("#apply")
    _wait_verdicts(page, "defect")
    n_defect = page.locator("#gallery .tile").count()
    assert n_defect >= 3
    ids = page.evaluate("[...document.querySelectorAll('#gallery .tile')].map(t => Number(t.dataset.id))")
    page.keyboard.press("ArrowRight")
    assert _focus(page) == 1
    page.keyboard.press("ArrowLeft")
    assert _focus(page) == 0
    page.keyboard.press("d")  # confirm defect, and on to the next
    page.wait_for_function(f"({TILE_MARKS})[0].includes('confirm_defect')", timeout=10_000)
    assert _focus(page) == 1
    page.keyboard.press("f")  # false reject
    page.wait_for_function(f"({TILE_MARKS})[1].includes('false_reject')", timeout=10_000)
    page.keyboard.press("Space")  # skip: nothing stored
    assert _focus(page) == 3
    page.wait_for_selector("#detail #full", timeout=10_000)  # the focused part at full size

    page.select_option("select[name=verdict]", "ok")
    page.click("#apply")
    _wait_verdicts(page, "ok")
    ok_ids = page.evaluate("[...document.querySelectorAll('#gallery .tile')].map(t => Number(t.dataset.id))")
    page.keyboard.press("m")  # an OK part that is defective: missed
    page.wait_for_function(f"({TILE_MARKS})[0].includes('missed')", timeout=10_000)
    page.keyboard.press("x")  # select two for a bulk action
    page.keyboard.press("ArrowRight")
    page.keyboard.press("x")
    assert page.locator("#selinfo").inner_text() == "2 selected"
    page.click("#bulk-ok")
    page.wait_for_function(f"({TILE_MARKS}).filter(c => c.includes('confirm_ok')).length === 2", timeout=10_000)
    page.wait_for_function(
        "document.querySelectorAll('#gallery img.thumb').length > 0 && "
        "[...document.querySelectorAll('#gallery img.thumb')].every(i => i.complete && i.naturalWidth > 0)",
        timeout=10_000,
    )

    shot = tmp_path / "review_page.png"
    page.screenshot(path=str(shot))
    img = cv2.imread(str(shot))
    assert img is not None and img.shape[:2] == (900, 1400)
    boxes = page.evaluate(
        "[...document.querySelectorAll('#gallery img.thumb')].slice(0, 6)"
        ".map(i => { const r = i.getBoundingClientRect(); return [r.x, r.y, r.width, r.height]; })"
    )
    assert boxes
    for x, y, w, h in boxes:
        if y + h > 900:
            continue
        tile = img[int(y) : int(y + h), int(x) : int(x + w)]
        assert tile.size and float(tile.std()) > 8, "a thumbnail is blank"
    full = page.evaluate(
        "(() => { const i = document.querySelector('#detail #full'); return [i.naturalWidth, i.naturalHeight]; })()"
    )
    assert min(full) > 16
    assert not errors, errors
    print(f"screenshot: {shot}")

    page.select_option("select[name=verdict]", "")  # the marks filter: every missed defect, whatever the verdict
    page.select_option("select[name=mark]", "missed")
    page.click("#apply")
    page.wait_for_function(
        "document.querySelectorAll('#gallery .tile').length === 1 && "
        "document.querySelector('#count').textContent === '1 part matches'",
        timeout=10_000,
    )
    assert page.evaluate("Number(document.querySelector('#gallery .tile').dataset.id)") == ok_ids[0]

    con = sqlite3.connect(demo_log)
    marks = dict(con.execute("SELECT part, mark FROM review_marks WHERE who = 'carla'"))
    con.close()
    assert marks == {
        ids[0]: "confirm_defect",
        ids[1]: "false_reject",
        ok_ids[0]: "missed",
        ok_ids[1]: "confirm_ok",
        ok_ids[2]: "confirm_ok",
    }
    assert ids[2] not in marks, "a skipped part stays unreviewed"

    out = tmp_path / "relabel"
    r = inspector("review", "export", "--db", demo_log, "--out", out, timeout=120)
    assert r.returncode == 0, r.stderr
    with (out / "manifest.csv").open() as fh:
        rows = {int(row["source_id"]): row for row in csv.DictReader(fh)}
    assert {k: v["mark"] for k, v in rows.items()} == marks
    assert sorted(p.name for p in (out / "defect").iterdir()) == sorted(
        Path(rows[i]["path"]).name for i in (ids[0], ok_ids[0])
    )
    assert len(list((out / "ok").iterdir())) == 3
    assert all(rows[i]["who"] == "carla" for i in rows)
    for p in (out / "defect").iterdir():
        assert np.asarray(cv2.imread(str(p))).std() > 1


@pytest.mark.slow
def test_paging_with_the_keyboard_on_100k_rows(big_log, review_server, browser_page):
    """n and p walk the keyset pages of a 100,000-row log in order; a filter starts again at page 1."""
    page, errors = browser_page
    s = review_server(big_log)
    page.goto(s.base + "/")
    page.wait_for_selector("body[data-ready='1']", timeout=20_000)
    page.wait_for_function("document.querySelector('#count').textContent === '100000 parts match'", timeout=20_000)
    ids = "[...document.querySelectorAll('#gallery .tile')].map(t => Number(t.dataset.id))"
    first = page.evaluate(ids)
    con = sqlite3.connect(big_log)
    newest = [r[0] for r in con.execute("SELECT id FROM parts ORDER BY time DESC, id DESC LIMIT 180")]
    con.close()
    assert first == newest[:60]
    page.keyboard.press("n")
    page.wait_for_function(f"({ids})[0] === {newest[60]}", timeout=10_000)
    assert page.evaluate(ids) == newest[60:120]
    page.keyboard.press("n")
    page.wait_for_function(f"({ids})[0] === {newest[120]}", timeout=10_000)
    assert page.locator("#pageinfo").inner_text() == "· page 3"
    page.keyboard.press("p")
    page.wait_for_function(f"({ids})[0] === {newest[60]}", timeout=10_000)
    page.fill("input[name=score_min]", "0.99")
    page.click("#apply")
    page.wait_for_function("document.querySelector('#pageinfo').textContent === '· page 1'", timeout=10_000)
    page.wait_for_function(
        "(() => { const s = [...document.querySelectorAll('#gallery .tile .meta span:last-child')];"
        " return s.length > 0 && s.every(e => Number(e.textContent) >= 0.99); })()",
        timeout=10_000,
    )
    assert page.locator("#gallery .tile .none").count() == page.locator("#gallery .tile").count()  # no crops kept
    assert not errors, errors


@pytest.mark.slow
def test_beyond_localhost_the_page_asks_for_the_token_once(demo_log, review_server, browser_page):
    page, errors = browser_page
    s = review_server(demo_log, host="0.0.0.0", env={"INSPECTOR_REVIEW_TOKEN": "line-7-token"})
    asked: list[str] = []

    def answer(dialog) -> None:
        asked.append(dialog.message)
        dialog.accept("wrong" if len(asked) == 1 else "line-7-token")

    page.on("dialog", answer)
    page.goto(s.base + "/")
    page.wait_for_selector("body[data-ready='1']", timeout=20_000)
    page.select_option("select[name=verdict]", "defect")
    page.click("#apply")
    _wait_verdicts(page, "defect")
    page.keyboard.press("d")  # 401: asks, a wrong token, 401 again: asks again, the right one: stored
    page.wait_for_function(f"({TILE_MARKS})[0].includes('confirm_defect')", timeout=15_000)
    assert len(asked) == 2 and "token" in asked[0]
    page.keyboard.press("d")  # the tab keeps the token: no third question
    page.wait_for_function(f"({TILE_MARKS})[1].includes('confirm_defect')", timeout=15_000)
    assert len(asked) == 2
    con = sqlite3.connect(demo_log)
    assert con.execute("SELECT COUNT(*) FROM review_marks").fetchone()[0] == 2
    con.close()
    assert not errors, errors
    assert "line-7-token" not in s.close()

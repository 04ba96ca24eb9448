"""Review page speed on a 100,000-row defect log: time to the first page, to each filter, to a deep page.

Builds a log with the defect log's own schema (inspector.defectlog.writer: the same table, the same upsert the
writer runs), 100,000 parts over two days (90% ok, 9% defect, 1% no verdict), then times ReviewStore's queries
(median of --repeat) with and without the review's index, and the first page through the real HTTP server.

    .venv/bin/python bench/review_page.py [--rows 100000] [--repeat 7] [--http [--browser]]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

REASONS = ("score >= threshold", "blurred: sharpness 12.1 < 40", "source ended before the part was classified")


def make_log(path: Path, rows: int = 100_000, seed: int = 0, t_end: float | None = None) -> Path:
    """A defect log of ``rows`` parts written with the writer's schema and upsert (no crops)."""
    from inspector.defectlog.writer import _PART_SQL, PART_COLS, connect

    rnd = random.Random(seed)
    t_end = time.time() if t_end is None else t_end
    t0 = t_end - 2 * 86400
    con = connect(path)
    con.execute("INSERT OR IGNORE INTO runs (run, started) VALUES ('bench', ?)", (t0,))
    batch = []
    for i in range(rows):
        u = rnd.random()
        verdict = "ok" if u < 0.90 else "defect" if u < 0.99 else "no_verdict"
        score = None if verdict == "no_verdict" else (rnd.uniform(0, 0.5) if verdict == "ok" else rnd.uniform(0.5, 1))
        reason = REASONS[0] if verdict == "defect" else rnd.choice(REASONS[1:]) if verdict == "no_verdict" else None
        row = {
            "time": t0 + i * (2 * 86400 / rows),
            "frame": i * 3,
            "verdict": verdict,
            "score": score,
            "class": {"ok": "ok_front", "defect": "def_front"}.get(verdict),
            "reason": reason,
            "latency_ms": rnd.uniform(8, 30),
            "infer_ms": rnd.uniform(2, 8),
            "timings": json.dumps({"engine_ms": 3.1}),
            "model_hash": "0123456789abcdef",
            "config_hash": "fedcba9876543210",
            "image": None,
            "image_bytes": 0,
            "image_note": None,
        }
        batch.append(("bench", i + 1, *(row[c] for c in PART_COLS)))
        if len(batch) == 5000:
            with con:
                con.executemany(_PART_SQL, batch)
            batch = []
    if batch:
        with con:
            con.executemany(_PART_SQL, batch)
    con.close()
    return path


def _median_ms(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def measure(db: Path, repeat: int, index: bool) -> dict:
    from inspector.review.store import Filters, ReviewStore

    store = ReviewStore(db, index=index)
    t_end = store._select("SELECT MAX(time) FROM parts")[0][0]  # noqa: SLF001
    cases = {
        "first page (60, newest)": Filters(),
        "verdict defect": Filters(verdict="defect"),
        "verdict no_verdict (1%)": Filters(verdict="no_verdict"),
        "score 0.45-0.55": Filters(score_min=0.45, score_max=0.55),
        "reason contains 'blurred'": Filters(reason="blurred"),
        "not reviewed": Filters(reviewed=False),
        "last hour": Filters(since=t_end - 3600),
        "a 1-hour window 30 h ago, defects": Filters(
            since=t_end - 31 * 3600, until=t_end - 30 * 3600, verdict="defect"
        ),
        "nothing matches (score > 2)": Filters(score_min=2.0),
    }
    out = {"index_build_s": round(store.index_s, 3), "page_ms": {}, "count_ms": {}}
    for name, f in cases.items():
        out["page_ms"][name] = round(_median_ms(lambda f=f: store.page(f, limit=60), repeat), 2)
        out["count_ms"][name] = round(_median_ms(lambda f=f: store.count(f), max(1, repeat // 2)), 2)

    def deep() -> None:
        cur = None
        for _ in range(100):
            cur = store.page(Filters(), limit=60, after=cur)["next"]
            cur = (float(cur.rsplit(":", 1)[0]), int(cur.rsplit(":", 1)[1]))

    out["page 100 by keyset (100 pages walked), per page ms"] = round(_median_ms(deep, 3) / 100, 2)
    t = time.perf_counter()
    cur, pages = None, 0
    while True:  # every page, newest to oldest
        res = store.page(Filters(), limit=60, after=cur)
        pages += 1
        if not res["next"]:
            break
        a, b = res["next"].rsplit(":", 1)
        cur = (float(a), int(b))
    out["walk to the last page, per page ms"] = round((time.perf_counter() - t) * 1e3 / pages, 2)
    out["pages walked"] = pages
    if index:  # with 5% of the parts reviewed (every 20th; one write transaction per 10,000)
        ids = [r[0] for r in store._select("SELECT id FROM parts WHERE id % 20 = 0 AND verdict != 'ok'")]  # noqa: SLF001
        ok_ids = [r[0] for r in store._select("SELECT id FROM parts WHERE id % 20 = 0 AND verdict = 'ok'")]  # noqa: SLF001
        t = time.perf_counter()
        for chunk in range(0, len(ok_ids), 10_000):
            store.mark(ok_ids[chunk : chunk + 10_000], "ok", who="bench")
        store.mark(ids, "defect", who="bench")
        out[f"marking 5% ({len(ids) + len(ok_ids)} parts) s"] = round(time.perf_counter() - t, 2)
        for name, f in {
            "reviewed (5%)": Filters(reviewed=True),
            "not reviewed (95%)": Filters(reviewed=False),
            "defects not reviewed": Filters(verdict="defect", reviewed=False),
        }.items():
            out["page_ms"][name] = round(_median_ms(lambda f=f: store.page(f, limit=60), repeat), 2)
            out["count_ms"][name] = round(_median_ms(lambda f=f: store.count(f), max(1, repeat // 2)), 2)
        t = time.perf_counter()
        store.summary()
        out["summary (inspector review) ms"] = round((time.perf_counter() - t) * 1e3, 1)
    store.close()
    return out


def measure_live(db: Path, seconds: float = 4.0, rate_hz: float = 100.0) -> dict:
    """The line's real DefectLog writes parts at ``rate_hz`` while the review opens the log for the first time
    (creating its tables and index): the longest gap between the writer's commits, with and without it."""
    import numpy as np

    from inspector.config import LogConfig
    from inspector.defectlog import DefectLog
    from inspector.records import Part, Verdict
    from inspector.review.store import ReviewStore

    commits: list[float] = []
    writer = DefectLog(
        LogConfig(db=str(db), ok_sample_fraction=0.0),
        run="live",
        on_commit=lambda n: commits.append(time.perf_counter()),
    )
    crop = np.zeros((32, 32, 3), np.uint8)
    t0 = time.perf_counter()
    opened_at = t_open = None
    i = 0
    while time.perf_counter() - t0 < seconds:
        now = time.monotonic_ns()
        writer.on_part(Part(i, i, now, (0, 0, 32, 32), Verdict.OK, 0.1, "ok_front", crop=crop, t_verdict_ns=now))
        i += 1
        if opened_at is None and time.perf_counter() - t0 > seconds / 3:
            opened_at = time.perf_counter()
            th = __import__("threading").Thread(target=lambda: ReviewStore(db).close())
            th.start()
        time.sleep(1 / rate_hz)
    th.join()
    writer.close()
    t_open = opened_at
    gaps_before = [b - a for a, b in zip(commits, commits[1:], strict=False) if b < t_open]
    gaps_during = [b - a for a, b in zip(commits, commits[1:], strict=False) if b >= t_open]
    return {
        "parts sent": i,
        "rows written": writer.stats["rows"],
        "rows dropped": writer.stats["rows_dropped"],
        "longest commit gap before the review opened ms": round(max(gaps_before) * 1e3, 1),
        "longest commit gap after ms": round(max(gaps_during) * 1e3, 1),
    }


def measure_http(db: Path, repeat: int, browser: bool = False) -> dict:
    """The page's own two requests (info + first page), then a filter, through the real uvicorn server."""
    import os
    import subprocess
    import urllib.request

    from inspector.review.http import free_port

    port = free_port()
    env = {**os.environ}
    proc = subprocess.Popen(
        [sys.executable, "-m", "inspector", "review", "--db", str(db), "--web", f"127.0.0.1:{port}"],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        t_start = time.perf_counter()
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(base + "/api/info", timeout=2).read()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("review server did not start") from None
                time.sleep(0.05)
        startup = time.perf_counter() - t_start

        def get(path: str) -> None:
            urllib.request.urlopen(base + path, timeout=10).read()

        out = {}
        if browser:
            out.update(measure_browser(base, repeat))
        return out | {
            "server start to first answer s (process start, imports, index)": round(startup, 2),
            "GET / + /api/info + /api/parts (first page) ms": round(
                _median_ms(lambda: (get("/"), get("/api/info"), get("/api/parts?limit=60")), repeat), 2
            ),
            "GET /api/parts?verdict=no_verdict ms": round(
                _median_ms(lambda: get("/api/parts?verdict=no_verdict"), repeat), 2
            ),
            "GET /api/count ms": round(_median_ms(lambda: get("/api/count"), repeat), 2),
        }
    finally:
        proc.terminate()
        proc.wait(10)


def measure_browser(base: str, repeat: int) -> dict:
    """In Debian's chromium (Playwright): page load to the first page of thumbnails shown, and a filter (verdict
    no_verdict, 1% of the parts) from the click to its page shown."""
    import shutil as sh

    from playwright.sync_api import sync_playwright

    chromium = sh.which("chromium") or "/usr/bin/chromium"
    first, filt, in_page, nav = [], [], [], []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True)
        for _ in range(repeat):
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            t = time.perf_counter()
            page.goto(base + "/")
            page.wait_for_selector("body[data-ready='1']", timeout=30_000)
            page.wait_for_function(
                "[...document.querySelectorAll('#gallery img.thumb, #gallery .none')].length > 0", timeout=30_000
            )
            first.append((time.perf_counter() - t) * 1e3)
            nav.append(float(page.evaluate("document.body.dataset.readyMs")))
            page.select_option("select[name=verdict]", "no_verdict")
            t = time.perf_counter()
            page.click("#apply")
            page.wait_for_function(
                "(() => { const s = [...document.querySelectorAll('#gallery .tile .meta span:first-child')];"
                " return s.length > 0 && s.every(e => e.textContent === 'no_verdict'); })()",
                timeout=30_000,
            )
            filt.append((time.perf_counter() - t) * 1e3)
            in_page.append(float(page.evaluate("document.body.dataset.loadedMs")))
            page.close()
        browser.close()
    return {
        "browser: open the page to the first page shown ms (median)": round(statistics.median(first), 1),
        "browser: of which navigation start to the first page rendered (the page's clock) ms (median)": round(
            statistics.median(nav), 1
        ),
        "browser: filter click to its page shown ms (median)": round(statistics.median(filt), 1),
        "browser: of which the page's own fetch and render ms (median)": round(statistics.median(in_page), 1),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--http", action="store_true", help="also time the first page through the real server")
    ap.add_argument("--browser", action="store_true", help="with --http: also in chromium (Playwright)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="review-bench-"))
    try:
        t = time.perf_counter()
        db = make_log(tmp / "log.db", args.rows)
        made = time.perf_counter() - t
        plain = tmp / "plain.db"
        shutil.copyfile(db, plain)
        result = {"rows": args.rows, "log_built_s": round(made, 2)}
        result["without the review index"] = measure(plain, args.repeat, index=False)
        result["with the review index"] = measure(db, args.repeat, index=True)
        con = sqlite3.connect(db)
        result["db_mb"] = round(db.stat().st_size / 1e6, 1)
        con.close()
        live = tmp / "live.db"
        shutil.copyfile(plain, live)
        result["the line writing while the review first opens the log"] = measure_live(live)
        if args.http:
            result["http"] = measure_http(db, args.repeat, browser=args.browser)
        print(json.dumps(result, indent=2))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

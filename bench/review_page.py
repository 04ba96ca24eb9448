"""Review page speed on a 100,000-row defect log: time to the first page, to each filter, to a deep page.

Builds a log with the defect log's own schema (inspector.defectlog.writer: the same table, the same upsert the
writer runs), 100,000 parts over two days (90% ok, 9% defect, 1% no verdict), then times ReviewStore's queries
(median of --repeat) with and without the review's index, and the first page through the real HTTP server.

    .venv/bin/python bench/review_page.py [--rows 100000] [--repeat 7] [--http]
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
    last = store.page(Filters(), limit=60, after=(0 + 1e18, 10**12))
    cur = None
    for _ in range(1666):  # to the oldest rows (100,000 / 60)
        res = store.page(Filters(), limit=60, after=cur)
        if not res["next"]:
            break
        a, b = res["next"].rsplit(":", 1)
        cur = (float(a), int(b))
    out["walk to the last page, per page ms"] = round((time.perf_counter() - t) * 1e3 / 1667, 2)
    del last
    store.close()
    return out


def measure_http(db: Path, repeat: int) -> dict:
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

        return {
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--http", action="store_true", help="also time the first page through the real server")
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
        if args.http:
            result["http"] = measure_http(db, args.repeat)
        print(json.dumps(result, indent=2))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

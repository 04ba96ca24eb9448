"""The review store on real logs: marks in their own table (inspection rows untouched), keyset paging and
filters on 100,000 rows, reading while the real DefectLog writer keeps writing, images by id only."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from inspector.config import LogConfig
from inspector.defectlog import DefectLog
from inspector.records import Part, Verdict
from inspector.review.store import Filters, ReviewStore, parse_cursor, resolve_mark
from tests.waiting import wait_for


def parts_digest(db) -> str:
    con = sqlite3.connect(db)
    h = hashlib.sha256()
    for row in con.execute("SELECT * FROM parts ORDER BY id"):
        h.update(repr(row).encode())
    con.close()
    return h.hexdigest()


@pytest.mark.parametrize(
    ("mark", "verdict", "expected", "error"),
    [
        ("defect", "defect", ("confirm_defect", "defect"), None),
        ("defect", "ok", ("missed", "defect"), None),
        ("defect", "no_verdict", ("confirm_defect", "defect"), None),
        ("ok", "defect", ("false_reject", "ok"), None),
        ("ok", "ok", ("confirm_ok", "ok"), None),
        ("ok", None, ("false_reject", "ok"), None),
        ("missed", "ok", ("missed", "defect"), None),
        ("confirm_defect", "defect", ("confirm_defect", "defect"), None),
        ("missed", "defect", None, "for a part whose verdict is ok"),
        ("false_reject", "ok", None, "defect or no_verdict"),
        ("good", "ok", None, "unknown mark"),
    ],
)
def test_resolve_mark(mark, verdict, expected, error):
    if error:
        with pytest.raises(ValueError, match=error):
            resolve_mark(mark, verdict)
    else:
        assert resolve_mark(mark, verdict) == expected


def test_marks_live_in_their_own_table_and_never_touch_parts(demo_log):
    before = parts_digest(demo_log)
    store = ReviewStore(demo_log)
    rows = store.page(Filters(), limit=100)["rows"]
    assert len(rows) == 24
    ok = [r for r in rows if r["verdict"] == "ok"]
    bad = [r for r in rows if r["verdict"] != "ok"]
    assert ok and bad, "the demo line has good and defective parts"
    store.mark([bad[0]["id"]], "defect", who="ana")
    store.mark([bad[1]["id"]], "ok", who="ana")
    store.mark([ok[0]["id"]], "missed", who="ben")
    with pytest.raises(ValueError, match="verdict is ok"):  # the whole call fails, nothing written
        store.mark([ok[1]["id"], bad[2]["id"]], "missed")
    with pytest.raises(KeyError):
        store.mark([999999], "defect")
    store.mark([ok[2]["id"]], "ok", who="ben")
    store.mark([ok[2]["id"]], "clear", who="ben")
    assert parts_digest(demo_log) == before, "inspection rows must never change"
    con = sqlite3.connect(demo_log)
    marks = {r[0]: r[1:] for r in con.execute("SELECT part, mark, label, who FROM review_marks")}
    history = con.execute("SELECT mark FROM review_history ORDER BY id").fetchall()
    con.close()
    assert marks == {
        bad[0]["id"]: ("confirm_defect", "defect", "ana"),
        bad[1]["id"]: ("false_reject", "ok", "ana"),
        ok[0]["id"]: ("missed", "defect", "ben"),
    }
    assert [h[0] for h in history] == ["confirm_defect", "false_reject", "missed", "confirm_ok", "clear"]
    assert store.count(Filters(reviewed=True)) == 3
    assert store.count(Filters(reviewed=False)) == 21
    assert store.count(Filters(mark="missed")) == 1
    s = store.summary()
    assert s["marks"]["confirm_defect"]["parts"] == 1 and s["exportable"] == 3
    assert s["false_reject_share"] == pytest.approx(0.5)
    assert s["reviewers"] == {"ana": 2, "ben": 1}
    detail = store.part(bad[0]["id"])
    assert detail["mark"] == "confirm_defect" and detail["has_image"] and "image" not in detail
    assert set(detail["timings"]) >= {"engine_ms"}
    store.close()


def test_a_read_only_copy_is_browsed_and_marks_are_refused(demo_log, tmp_path):
    """A copy nobody may write (as another user when the tests run as root): summary and paging work, marks made
    before are read, a new mark is refused with the reason."""
    import json
    import os
    import shutil
    import subprocess
    import sys
    import tempfile

    store = ReviewStore(demo_log)
    first = store.page(Filters(verdict="defect"), limit=1)["rows"][0]
    store.mark([first["id"]], "defect", who="ana")
    store.close()
    shared = Path(tempfile.mkdtemp(prefix="review-ro-"))  # pytest's tmp_path is private to its user
    src = sqlite3.connect(f"file:{demo_log}?mode=ro", uri=True)  # a live log is copied with SQLite's backup
    dst = sqlite3.connect(shared / "log.db")  # (the newest rows and the mark may be in its -wal file)
    src.backup(dst)
    src.close()
    dst.close()
    demo_log = shared / "log.db"
    for p in (demo_log.parent, *demo_log.parent.iterdir()):
        p.chmod(0o555 if p.is_dir() else 0o444)
    probe = (
        "import json, sys\n"
        "from inspector.review.store import ReviewStore, Filters\n"
        "s = ReviewStore(sys.argv[1])\n"
        "out = {'writable': s.writable, 'reason': s.read_only_reason, 'rows': len(s.page(Filters())['rows']),\n"
        "       'reviewed': s.count(Filters(reviewed=True))}\n"
        "try:\n"
        "    s.mark([1], 'defect')\n"
        "except PermissionError as exc:\n"
        "    out['refused'] = str(exc)\n"
        "print(json.dumps(out))\n"
    )
    cmd = [sys.executable, "-c", probe, str(demo_log)]
    if os.geteuid() == 0:  # root writes read-only files: run the reader as nobody
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv (util-linux): cannot drop to another user")
        cmd = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *cmd]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd="/", env={**os.environ, "HOME": "/"})
    finally:
        shared.chmod(0o755)
        shutil.rmtree(shared)
    if r.returncode in (126, 127) or "inspector" in r.stderr and "ModuleNotFoundError" in r.stderr:
        pytest.skip(f"nobody cannot run this checkout's Python: {r.stderr.strip()[-200:]}")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["writable"] is False and "cannot be written" in out["reason"]
    assert out["rows"] == 24 and out["reviewed"] == 1
    assert "cannot be written" in out["refused"]


def test_images_only_inside_the_images_folder(demo_log):
    store = ReviewStore(demo_log)
    good = store.page(Filters(), limit=1)["rows"][0]
    assert store.image_path(good["id"]).is_file()
    con = sqlite3.connect(demo_log)  # a hostile (or corrupted) copied log
    con.execute("UPDATE parts SET image='../../../../etc/passwd' WHERE id=?", (good["id"],))
    con.execute("UPDATE parts SET image='/etc/passwd' WHERE id=(SELECT MIN(id) FROM parts)")
    con.commit()
    ids = [r[0] for r in con.execute("SELECT id FROM parts WHERE image LIKE '%passwd'")]
    con.close()
    assert len(ids) == 2
    for i in ids:
        assert store.image_path(i) is None and store.image_path(i, "map") is None
    assert store.image_path(10**9) is None


def test_keyset_paging_covers_every_row_once_in_order(big_log):
    store = ReviewStore(big_log)
    seen: list[tuple[float, int]] = []
    cursor = None
    pages = 0
    while True:
        res = store.page(Filters(verdict="no_verdict"), limit=97, after=cursor)
        seen += [(r["time"], r["id"]) for r in res["rows"]]
        pages += 1
        if res["next"] is None:
            break
        cursor = parse_cursor(res["next"])
    con = sqlite3.connect(big_log)
    want = con.execute("SELECT time, id FROM parts WHERE verdict='no_verdict' ORDER BY time DESC, id DESC").fetchall()
    con.close()
    assert len(want) > 500 and pages == -(-len(want) // 97)
    assert seen == [tuple(w) for w in want]


@pytest.mark.parametrize(
    ("filters", "sql"),
    [
        (Filters(verdict="defect"), "verdict='defect'"),
        (Filters(score_min=0.45, score_max=0.55), "score >= 0.45 AND score <= 0.55"),
        (Filters(reason="BLURRED"), "reason LIKE '%blurred%'"),
        (Filters(reason="50%"), "0"),  # a % in the text is a literal, not a wildcard
        (Filters(verdict="ok", score_min=0.4), "verdict='ok' AND score >= 0.4"),
    ],
)
def test_filters_match_a_plain_query(big_log_master, filters, sql):
    store = ReviewStore(big_log_master, index=False)  # read-only use of the shared log
    con = sqlite3.connect(big_log_master)
    want = con.execute(f"SELECT COUNT(*) FROM parts WHERE {sql}").fetchone()[0]
    top = con.execute(f"SELECT id FROM parts WHERE {sql} ORDER BY time DESC, id DESC LIMIT 60").fetchall()
    con.close()
    assert store.count(filters) == want
    assert [r["id"] for r in store.page(filters, limit=60)["rows"]] == [t[0] for t in top]


def test_time_filter_and_the_index_is_used(big_log):
    store = ReviewStore(big_log)
    t_max = store._select("SELECT MAX(time) FROM parts")[0][0]
    rows = store.page(Filters(since=t_max - 3600, verdict="defect"), limit=500)["rows"]
    assert rows and all(r["time"] >= t_max - 3600 and r["verdict"] == "defect" for r in rows)
    plan = " ".join(
        str(r[3])
        for r in store._select("EXPLAIN QUERY PLAN SELECT id FROM parts WHERE verdict='defect' ORDER BY time DESC")
    )
    assert "review_parts_verdict_time" in plan


def test_bad_filters_and_cursors_are_value_errors():
    with pytest.raises(ValueError, match="verdict 'good'"):
        Filters(verdict="good").where()
    with pytest.raises(ValueError, match="cursor"):
        parse_cursor("yesterday")


def _part(i: int) -> Part:
    now = time.monotonic_ns()
    crop = np.full((40, 40, 3), 40 + i % 200, np.uint8)
    verdict = Verdict.DEFECT if i % 3 == 0 else Verdict.OK
    return Part(
        i, i, now, (0, 0, 40, 40), verdict, 0.9 if i % 3 == 0 else 0.1, "def_front", crop=crop, t_verdict_ns=now
    )


def test_review_while_the_real_writer_writes(tmp_path, caplog):
    """The line's DefectLog keeps writing (WAL) while the review creates its tables, pages and marks."""
    cfg = LogConfig(db=str(tmp_path / "live.db"), ok_sample_fraction=1.0)
    writer = DefectLog(cfg)
    stop = threading.Event()
    sent = [0]

    def line() -> None:
        while not stop.is_set():
            writer.on_part(_part(sent[0]))
            sent[0] += 1
            stop.wait(0.002)

    t = threading.Thread(target=line)
    t.start()
    try:
        assert wait_for(lambda: writer.stats["rows"] >= 20, 10)
        store = ReviewStore(cfg.db)  # creates its tables and index while the writer writes
        assert store.writable
        marked = 0
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            rows = store.page(Filters(reviewed=False), limit=10)["rows"]
            if rows:
                store.mark([rows[0]["id"]], "defect", who="live")
                marked += 1
        assert marked >= 5
        n_before = writer.stats["rows"]
        assert wait_for(lambda: store.count(Filters()) > n_before, 5), "new rows are seen while reviewing"
    finally:
        stop.set()
        t.join(5)
        writer.close()
    assert writer.stats["rows"] == sent[0], "every row the line sent is written"
    assert writer.stats["rows_dropped"] == 0
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
    con = sqlite3.connect(cfg.db)
    assert con.execute("SELECT COUNT(*) FROM parts").fetchone()[0] == sent[0]
    assert con.execute("SELECT COUNT(*) FROM review_marks").fetchone()[0] == marked
    con.close()

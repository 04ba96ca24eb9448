"""The defect log (inspector/defectlog) on real SQLite: rows, crops, sampling, image pressure, retention, kill -9."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from inspector.cli import main
from inspector.config import LogConfig
from inspector.defectlog import DefectLog, open_log, safe_name
from inspector.defectlog.query import open_db
from inspector.gate.actuator import GateResult
from tests.gate.gate_kit import make_part


def rows(db: Path) -> dict[int, dict]:
    con = open_db(db)
    out = {r["part_id"]: dict(r) for r in con.execute("SELECT * FROM parts")}
    con.close()
    return out


def test_rows_images_and_ok_sampling(tmp_path: Path) -> None:
    log = open_log(LogConfig(db=str(tmp_path / "log.db"), ok_sample_fraction=0.25), "m" * 16, "c" * 16)
    for i in range(40):
        log.on_part(make_part(i, i % 4 == 0, crop=True))
    log.close()
    got = rows(tmp_path / "log.db")
    assert len(got) == 40
    defects = [r for r in got.values() if r["verdict"] == "defect"]
    oks = [r for r in got.values() if r["verdict"] == "ok"]
    assert all(r["image"] for r in defects)  # every defect's crop is kept
    assert sum(1 for r in oks if r["image"]) == int(len(oks) * 0.25)  # and a quarter of the OK ones
    r = got[0]
    assert (r["model_hash"], r["config_hash"], r["score"]) == ("m" * 16, "c" * 16, 0.9)
    assert r["latency_ms"] == pytest.approx(20.0) and r["infer_ms"] == pytest.approx(5.0)
    img = log.images_dir / r["image"]
    assert img.is_file() and img.read_bytes()[:2] == b"\xff\xd8"  # a JPEG
    assert log.stats["images"] == 10 + 7


@pytest.mark.parametrize(
    ("raw", "safe"),
    [
        ("../../etc/passwd", "etc_passwd"),
        ("scratch mark", "scratch_mark"),
        ("", "x"),
        ("..", "x"),
        ("a" * 100, "a" * 40),
        ("défaut/€", "d_faut"),
    ],
)
def test_safe_name(raw: str, safe: str) -> None:
    assert safe_name(raw) == safe


def test_hostile_class_names_stay_in_the_images_folder(tmp_path: Path) -> None:
    log = open_log(LogConfig(db=str(tmp_path / "log.db")))
    p = make_part(1, True, crop=True)
    p.cls = "../../../escape\\x"
    log.on_part(p)
    log.close()
    rel = rows(tmp_path / "log.db")[1]["image"]
    assert "/" not in rel.split("/", 1)[1] and ".." not in rel
    assert (log.images_dir / rel).resolve().is_relative_to(log.images_dir.resolve())


def test_full_queue_drops_images_keeps_rows(tmp_path: Path) -> None:
    db = tmp_path / "log.db"
    log = DefectLog(LogConfig(db=str(db), queue_size=4))
    blocker = sqlite3.connect(db, timeout=1)
    blocker.execute("BEGIN IMMEDIATE")  # another writer holds the lock: the log thread cannot commit
    try:
        for i in range(30):
            log.on_part(make_part(i, True, crop=True))
    finally:
        blocker.rollback()
        blocker.close()
    log.close()
    got = rows(db)
    assert len(got) == 30  # every row kept
    dropped = [r for r in got.values() if r["image_note"] == "dropped: queue full"]
    assert len(dropped) == log.stats["images_dropped_queue"] >= 30 - 4 - 1
    assert sum(1 for r in got.values() if r["image"]) == log.stats["images"] == 30 - len(dropped)
    assert open_db(db).execute("SELECT images_dropped FROM runs").fetchone()[0] == len(dropped)


def test_disk_full_drops_images_keeps_rows(tmp_path: Path) -> None:
    log = open_log(LogConfig(db=str(tmp_path / "log.db"), min_free_mb=1e12))  # more than any disk has
    for i in range(5):
        log.on_part(make_part(i, True, crop=True))
    log.close()
    got = rows(tmp_path / "log.db")
    assert len(got) == 5 and all(r["image"] is None and r["image_note"] == "dropped: disk full" for r in got.values())
    assert log.stats["images_dropped_disk"] == 5


def _noisy(i: int) -> np.ndarray:
    return np.random.default_rng(i).integers(0, 255, (64, 64, 3), dtype=np.uint8)  # ~10 kB as JPEG


def test_retention_by_age_and_by_size(tmp_path: Path) -> None:
    db = tmp_path / "log.db"
    cfg = LogConfig(db=str(db), retention_days=1.0, max_size_mb=None)
    log = open_log(cfg)
    for i in range(20):
        p = make_part(i, True)
        p.crop = _noisy(i)
        log.on_part(p)
    log.close()
    con = sqlite3.connect(db)
    with con:  # the first 5 rows are two days old; one row claims an image outside the folder
        con.execute("UPDATE parts SET time = time - 2 * 86400 WHERE part_id < 5")
        con.execute("UPDATE parts SET image = '../outside.jpg' WHERE part_id = 19")
    con.close()
    victim = log.images_dir.parent / "outside.jpg"
    victim.write_bytes(b"keep me")
    old_images = [log.images_dir / r["image"] for i, r in rows(db).items() if i < 5]
    assert all(p.is_file() for p in old_images)

    total = sum(r["image_bytes"] for r in rows(db).values() if r["part_id"] >= 5)
    limit_mb = total * 0.5 / 1e6
    log2 = open_log(LogConfig(db=str(db), retention_days=1.0, max_size_mb=limit_mb))  # retention runs at open
    log2.close()
    got = rows(db)
    assert sorted(got) == list(range(5, 20))  # the old rows are gone ...
    assert not any(p.exists() for p in old_images)  # ... with their images
    kept = [r for r in got.values() if r["image"]]
    assert sum(r["image_bytes"] for r in kept) <= limit_mb * 1e6
    dropped = sorted(i for i, r in got.items() if r["image"] is None)
    assert dropped == list(range(5, 5 + len(dropped)))  # oldest images first; rows stay
    assert all(got[i]["image_note"] == "deleted: size retention" for i in dropped if i != 19)
    assert victim.read_bytes() == b"keep me"  # never deletes outside the images folder


WRITER = textwrap.dedent("""
    import sys, time
    from tests.gate.gate_kit import make_part  # the checkout's root is on PYTHONPATH
    from inspector.config import LogConfig
    from inspector.defectlog import DefectLog
    log = DefectLog(LogConfig(db=sys.argv[1], ok_sample_fraction=0.5),
                    on_commit=lambda n: print(n, flush=True))
    i = 0
    while True:
        log.on_part(make_part(i, i % 3 == 0, crop=True))
        i += 1
        time.sleep(0.0005)
""")


@pytest.mark.slow
def test_kill_9_mid_run_keeps_every_committed_row(tmp_path: Path) -> None:
    db = tmp_path / "log.db"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([sys.executable, str(script), str(db)], stdout=subprocess.PIPE, text=True, env=env)
    committed = 0
    timer = threading.Timer(30, proc.kill)  # a hung writer cannot hang the test
    timer.start()
    try:
        for line in proc.stdout:
            committed = int(line)
            if committed >= 300:
                break
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        timer.cancel()
    assert committed >= 300 and proc.returncode == -signal.SIGKILL
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    ids = [r[0] for r in con.execute("SELECT part_id FROM parts ORDER BY part_id")]
    assert len(ids) >= committed and ids[:committed] == list(range(committed))  # nothing committed is lost
    img_dir = db.parent / "log_images"
    for (rel,) in con.execute("SELECT image FROM parts WHERE image IS NOT NULL AND part_id < ?", (committed,)):
        assert (img_dir / rel).is_file()


def _filled_log(tmp_path: Path) -> Path:
    db = tmp_path / "log.db"
    log = open_log(LogConfig(db=str(db), ok_sample_fraction=0.0), "modelhash", "cfghash")
    for i in range(12):
        log.on_part(make_part(i, i % 4 == 0, crop=True))
    log.close()
    con = sqlite3.connect(db)
    with con:
        con.execute("UPDATE parts SET time = time - 3 * 3600 WHERE part_id < 6")  # half are 3 h old
    con.close()
    return db


def test_cli_export_csv_since(tmp_path: Path, capsys) -> None:
    db = _filled_log(tmp_path)
    assert main(["log", "export", "--db", str(db), "--since", "1h", "--format", "csv"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("run,part_id,time,") and len(lines) == 1 + 6
    assert [int(x.split(",")[1]) for x in lines[1:]] == list(range(6, 12))
    out = tmp_path / "defects.jsonl"
    assert main(["log", "export", "--db", str(db), "--verdict", "defect", "--format", "jsonl", "--out", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 3


def test_cli_stats(tmp_path: Path, capsys) -> None:
    db = _filled_log(tmp_path)
    assert main(["log", "stats", "--db", str(db), "--json"]) == 0
    import json

    s = json.loads(capsys.readouterr().out)
    assert s["parts"] == 12 and s["verdicts"] == {"ok": 9, "defect": 3} and s["images_kept"] == 3
    assert s["runs"][0]["model_hash"] == "modelhash" and s["latency_ms"]["p50"] == pytest.approx(20.0)
    assert main(["log", "stats", "--db", str(db), "--since", "1h"]) == 0
    assert "6 parts" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["log", "stats", "--db", "{tmp}/missing.db"], "no such defect log"),
        (["log", "stats", "--db", "{tmp}/notadb.db"], "not a defect log"),
        (["log", "export", "--db", "{tmp}/log.db", "--since", "yesterday"], "--since 'yesterday'"),
    ],
)
def test_cli_bad_input_is_one_line(tmp_path: Path, capsys, argv: list[str], message: str) -> None:
    _filled_log(tmp_path)
    (tmp_path / "notadb.db").write_text("hello")
    assert main([a.replace("{tmp}", str(tmp_path)) for a in argv]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_open_log_none_and_bad_path(tmp_path: Path) -> None:
    from engines.errors import UserError

    assert open_log(LogConfig()) is None
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="cannot open the defect log"):
        open_log(LogConfig(db=str(tmp_path / "file" / "log.db")))
    t0 = time.monotonic()
    log = open_log(LogConfig(db=str(tmp_path / "ok.db")))
    for i in range(200):
        log.on_part(make_part(i, True, crop=True))
    assert time.monotonic() - t0 < 2.0  # on_part only enqueues
    log.close()


def test_rows_waiting_for_a_locked_database_are_bounded(tmp_path: Path) -> None:
    db = tmp_path / "log.db"
    log = DefectLog(LogConfig(db=str(db), max_pending_rows=100, queue_size=4))
    blocker = sqlite3.connect(db, timeout=1)
    blocker.execute("BEGIN IMMEDIATE")  # the database cannot be written: rows wait in memory
    try:
        for i in range(250):
            log.on_part(make_part(i, True, crop=True))
        assert log.stats["rows_dropped"] == 150  # rows accepted and not committed count, in the queue or not
        log.gate_result(GateResult(0, True, "fired", 0, 0))  # a gate outcome is a row update: bounded the same way
        assert log.stats["rows_dropped"] == 151
    finally:
        blocker.rollback()
        blocker.close()
    log.close()
    got = rows(db)
    assert sorted(got) == list(range(100)) and log.stats["rows"] == 100  # the first 100 kept, all written
    assert log.images_waiting == 0  # a dropped row's crop is not left counted as waiting
    assert sum(1 for r in got.values() if r["image"]) == log.stats["images"] <= 100

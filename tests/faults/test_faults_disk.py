"""Log disk full: the defect log on a real 1 MiB tmpfs that fills up during `inspector run`, then frees up.

Needs root (mount); skipped with the reason otherwise.
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from faults_kit import ROOT, line_video, write_config

PARTS = [(14 * i, False) for i in range(8)]


@pytest.fixture
def small_disk(tmp_path: Path):
    d = tmp_path / "disk"
    d.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(d)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({r.stderr.strip() or 'not root'}); the disk-full case needs it")
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], capture_output=True)


def test_log_disk_full_keeps_inspecting_and_writes_every_row_once_space_returns(kit, tmp_path, small_disk) -> None:
    """The defect log's disk has 96 KB left (the database, its WAL and shared memory need about 60); every
    crop is kept (ok_sample_fraction 1, min_free_mb 0), so images and then SQLite run out of space mid-run.
    When the log reports it, the test frees the space.

    Expected: inspection, events and the gate are not held up (exit 0, all 8 parts judged, events complete);
    the log says "database or disk is full" and keeps the rows for retry; once space is back every part has
    exactly one row (none lost), crops that could not be written are noted in image_note."""
    filler = small_disk / "filler"
    free = shutil.disk_usage(small_disk).free
    filler.write_bytes(b"\0" * (free - 96 * 1024))
    video = line_video(tmp_path / "line.avi", PARTS, 14 * 8 + 50)
    db = small_disk / "defects.db"
    cfg = write_config(
        tmp_path / "line.yaml", kit, str(video), f"log:\n  db: {db}\n  min_free_mb: 0\n  ok_sample_fraction: 1.0\n"
    )
    cmd = [
        sys.executable,
        "-m",
        "inspector",
        "run",
        "--config",
        str(cfg),
        "--realtime",
        "--serial",
        "sim",
        "--events",
        str(tmp_path / "ev.jsonl"),
    ]
    child = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, errors="replace"
    )
    err: list[str] = []
    full_at = None
    sel = selectors.DefaultSelector()
    sel.register(child.stderr, selectors.EVENT_READ)
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            if not sel.select(timeout=0.5):
                continue
            line = child.stderr.readline()
            if not line:
                break
            err.append(line)
            if full_at is None and "database or disk is full" in line:
                full_at = len(err)
                filler.unlink()  # space comes back
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    text = "".join(err)
    assert child.returncode == 0, text[-2000:]
    assert full_at is not None, f"the log never ran out of space:\n{text[-2000:]}"
    assert "Traceback" not in text, text[-3000:]
    events = [json.loads(x) for x in (tmp_path / "ev.jsonl").read_text().splitlines()]
    assert [e["verdict"] for e in events] == ["ok"] * len(PARTS), events
    con = sqlite3.connect(db)
    rows = con.execute("SELECT part_id, image, image_note FROM parts ORDER BY part_id").fetchall()
    con.close()
    assert [r[0] for r in rows] == sorted(e["part_id"] for e in events), rows
    for pid, image, note in rows:
        assert image is not None or (note or "").startswith("dropped"), (pid, image, note)
        if image is not None:
            assert (small_disk / "defects_images" / image).is_file() or os.path.exists(db.parent / image)


def test_log_disk_already_full_at_start_is_one_clear_line(kit, tmp_path, small_disk) -> None:
    """The log's disk has no space left when `inspector run` starts.

    Expected: the run does not start: exit 1, one `error:` line saying the disk is full (not a misleading
    "not a database"), no traceback."""
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * shutil.disk_usage(small_disk).free)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "inspector",
            "run",
            "--no-display",
            "--source",
            str(kit.video),
            "--model",
            str(kit.onnx),
            "--log-db",
            str(small_disk / "defects.db"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=60,
    )
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert r.returncode == 1 and len(errors) == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "the disk is full" in errors[0], errors

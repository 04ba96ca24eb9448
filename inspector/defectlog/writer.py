"""The defect log writer: one SQLite (WAL) row per part and JPEG crops, on its own thread.

``on_part`` (inspection thread) only builds a small row and enqueues it. When more than ``queue_size`` images
wait, or the disk's free space is under ``min_free_mb``, the image is dropped and counted, the row kept. Rows
wait in memory while the database cannot be written and are all written once it can, up to
``max_pending_rows``: past that a new row is dropped and counted (``rows_dropped``, an error line every 1000)
rather than let a long outage exhaust memory and stop the line. Each batch is one transaction, so a killed
process leaves every committed row readable (WAL, synchronous=NORMAL: durable across a process crash; a power
cut may lose the last batch).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import re
import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from engines.heatmap import heatmap
from inspector.config import LogConfig
from inspector.outputs import images_dir
from inspector.records import GateResult, Part, Verdict

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run TEXT PRIMARY KEY, started REAL, model_hash TEXT, config_hash TEXT,
    rows INTEGER DEFAULT 0, images INTEGER DEFAULT 0, images_dropped INTEGER DEFAULT 0
);
CREATE TABLE IF NOT EXISTS parts (
    id INTEGER PRIMARY KEY,
    run TEXT NOT NULL, part_id INTEGER NOT NULL,
    time REAL, frame INTEGER, verdict TEXT, score REAL, class TEXT, reason TEXT,
    latency_ms REAL, infer_ms REAL, timings TEXT, model_hash TEXT, config_hash TEXT,
    image TEXT, image_bytes INTEGER DEFAULT 0, image_note TEXT,
    gate_status TEXT, reject_sent INTEGER, reject_acked INTEGER, reject_fired INTEGER,
    sent_ms REAL, acked_ms REAL, fire_late_ms REAL, gate_retries INTEGER, gate_reason TEXT,
    UNIQUE (run, part_id)
);
CREATE INDEX IF NOT EXISTS parts_time ON parts (time);
"""
PART_COLS = (
    "time",
    "frame",
    "verdict",
    "score",
    "class",
    "reason",
    "latency_ms",
    "infer_ms",
    "timings",
    "model_hash",
    "config_hash",
    "image",
    "image_bytes",
    "image_note",
)
GATE_COLS = (
    "gate_status",
    "reject_sent",
    "reject_acked",
    "reject_fired",
    "sent_ms",
    "acked_ms",
    "fire_late_ms",
    "gate_retries",
    "gate_reason",
)
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")  # no dots either: no '..', no hidden files, no second suffix


def map_path(crop_path: Path) -> Path:
    """Where an anomaly model's heat map of a logged crop goes: ``<crop>_map.png`` beside it."""
    return crop_path.with_name(crop_path.stem + "_map.png")


def safe_name(text: object, limit: int = 40) -> str:
    """A file-name component from anything (class names, run ids): no separators, no dot-dot, bounded."""
    s = _UNSAFE.sub("_", str(text)).strip("_") or "x"
    return s[:limit]


def connect(db: str | Path, timeout: float = 5.0) -> sqlite3.Connection:
    con = sqlite3.connect(str(db), timeout=timeout)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    con.executescript(SCHEMA)
    return con


def _upsert(table_cols: tuple[str, ...]) -> str:
    cols = ("run", "part_id", *table_cols)
    sets = ", ".join(f"{c}=excluded.{c}" for c in table_cols)
    return (
        f"INSERT INTO parts ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
        f"ON CONFLICT (run, part_id) DO UPDATE SET {sets}"
    )


_PART_SQL = _upsert(PART_COLS)
_GATE_SQL = _upsert(GATE_COLS)
_FULL_SQL = _upsert(PART_COLS + GATE_COLS)  # a part row that waited for its gate outcome: one write


class DefectLog:
    """PartSink writing the defect log. ``gate_result`` takes the gate's per-part outcome (GateResult)."""

    def __init__(
        self,
        cfg: LogConfig,
        model_hash: str | None = None,
        config_hash: str | None = None,
        *,
        on_commit: Callable[[int], None] | None = None,
        run: str | None = None,
        gate_wait_s: float | None = None,
    ) -> None:
        if not cfg.db:
            raise ValueError("LogConfig.db is not set")
        self.cfg = cfg
        self.db = Path(cfg.db)
        self.images_dir = images_dir(cfg)
        self.model_hash, self.config_hash = model_hash, config_hash
        self.run = run or time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
        self.on_commit = on_commit
        # With a gate: a part's row waits (bounded, in memory) up to gate_wait_s for the gate's outcome, so the
        # row is written once with both; an outcome that comes later updates the row already written.
        self.gate_wait_s = gate_wait_s
        self._waiting: dict[int, tuple[int, tuple]] = {}  # part id -> (deadline ns, queue item)
        self.stats = dict.fromkeys(
            (
                "rows",
                "images",
                "images_dropped_queue",
                "images_dropped_disk",
                "image_errors",
                "gate_updates",
                "commits",
                "retention_deleted",
                "retention_images_deleted",
                "rows_dropped",
            ),
            0,
        )
        self._q: queue.Queue = queue.Queue()  # bounded by max_pending_rows (in _put); images by queue_size
        self._images_waiting = 0
        self._pending = 0  # rows and gate outcomes accepted and not yet committed
        self._lock = threading.Lock()
        self._ok_acc = 0.0
        self._free_checked = (0.0, True)
        self.db.parent.mkdir(parents=True, exist_ok=True)
        con = connect(self.db)  # fail here, on the caller's thread, if the path is unusable
        con.close()
        self._thread = threading.Thread(target=self._run, name="defect-log", daemon=True)
        self._thread.start()

    # -- PartSink ----------------------------------------------------------------------------------------
    def on_part(self, part: Part) -> None:
        wall = time.time() - (time.monotonic_ns() - part.t_capture_ns) / 1e9
        ev = part.to_row()  # the one serialisation of a part, shared with the events file and MQTT
        infer_ms = part.infer_ms
        stages = part.stage_ms()
        row = {
            "time": wall,
            "frame": ev["frame_index"],
            "verdict": ev["verdict"],
            "score": ev["score"],
            "class": ev["class"],
            "reason": ev["reason"],
            "latency_ms": ev["latency_ms"],
            "infer_ms": None if infer_ms is None else round(infer_ms, 3),
            "timings": json.dumps(stages) if stages else None,
            "model_hash": self.model_hash,
            "config_hash": self.config_hash,
            "image": None,
            "image_bytes": 0,
            "image_note": None,
        }
        crop = None
        if part.crop is not None and self._want_image(part):
            with self._lock:
                if self._images_waiting >= self.cfg.queue_size:
                    self.stats["images_dropped_queue"] += 1
                    row["image_note"] = "dropped: queue full"
                else:
                    self._images_waiting += 1
                    crop = part.crop  # the Part owns its crop (the pipeline copies it out of the frame)
                    if part.anomaly_map is not None:  # anomaly models: saved beside the crop, <crop>_map.png
                        row["_anomaly_map"] = part.anomaly_map
        item = ("part", part.part_id, row, crop)
        if self.gate_wait_s is None:
            self._put(item)
        else:
            self._put(item, wait_until=time.monotonic_ns() + int(self.gate_wait_s * 1e9))

    def _put(self, item: tuple, wait_until: int | None = None) -> None:
        """Enqueue a row (or keep it until ``wait_until`` for its gate outcome), unless ``max_pending_rows`` rows
        are already accepted and not yet committed."""
        with self._lock:
            full = self._pending >= self.cfg.max_pending_rows
            if full:
                self.stats["rows_dropped"] += 1
                n = self.stats["rows_dropped"]
                if item[3] is not None:
                    self._images_waiting -= 1
            else:
                self._pending += 1
                if wait_until is not None:
                    self._waiting[item[1]] = (wait_until, item)
                    return
        if not full:
            self._q.put(item)
        elif n % 1000 == 1:
            log.error(
                "defect log %s: %d rows wait for the database (log.max_pending_rows); %d row(s) dropped so "
                "far - free the disk or fix the database",
                self.db,
                self.cfg.max_pending_rows,
                n,
            )

    def gate_result(self, r: GateResult) -> None:
        """Callback for the gate actuator: its outcome for one part, written into the part's row."""

        def rel(t: int | None) -> float | None:
            return None if t is None or not r.t_capture_ns else (t - r.t_capture_ns) / 1e6

        row = {
            "gate_status": r.status,
            "reject_sent": int(r.sent_ns is not None),
            "reject_acked": int(r.acked_ns is not None),
            "reject_fired": int(r.fired_ns is not None or r.status == "failsafe"),
            "sent_ms": rel(r.sent_ns),
            "acked_ms": rel(r.acked_ns),
            "fire_late_ms": r.fire_late_ms,
            "gate_retries": r.retries,
            "gate_reason": r.reason,
        }
        with self._lock:
            waiting = self._waiting.pop(r.part_id, None)
        if waiting is not None:  # the part's row is still here: written once, with its outcome
            _, (kind, pid, part_row, crop) = waiting
            self._q.put((kind, pid, {**part_row, **row}, crop))
        else:
            self._put(("gate", r.part_id, row, None))

    def _release_waiting(self, now_ns: int | None) -> list[tuple]:
        """Rows whose gate outcome did not come in time (all of them when ``now_ns`` is None)."""
        with self._lock:
            due = [pid for pid, (t, _) in self._waiting.items() if now_ns is None or t <= now_ns]
            return [self._waiting.pop(pid)[1] for pid in due]

    def close(self, timeout: float = 10.0) -> None:
        for item in self._release_waiting(None):  # the gate has closed first and reported what it could
            self._q.put(item)
        self._q.put(("stop", 0, None, None))
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("defect-log thread still alive after %.0f s; %d items unwritten", timeout, self._q.qsize())

    # -- state for monitoring (read from any thread) -----------------------------------------------------
    @property
    def queue_depth(self) -> int:
        """Rows, gate outcomes and crops waiting for the writer thread (rows waiting for their gate outcome too)."""
        return self._q.qsize() + len(self._waiting)

    @property
    def images_waiting(self) -> int:
        """Crops queued for writing (``log.queue_size`` bounds it; past that they are dropped and counted)."""
        return self._images_waiting

    # -- writer thread -----------------------------------------------------------------------------------
    def _want_image(self, part: Part) -> bool:
        if part.verdict is not Verdict.OK:
            return True
        with self._lock:
            self._ok_acc += self.cfg.ok_sample_fraction
            if self._ok_acc >= 1.0:
                self._ok_acc -= 1.0
                return True
        return False

    def _run(self) -> None:
        con = connect(self.db)
        con.execute(
            "INSERT OR IGNORE INTO runs (run, started, model_hash, config_hash) VALUES (?, ?, ?, ?)",
            (self.run, time.time(), self.model_hash, self.config_hash),
        )
        con.commit()
        self._retention(con)
        next_retention = time.monotonic() + self.cfg.retention_check_s
        stop = False
        while not stop:
            try:
                batch = [self._q.get(timeout=0.2)]
            except queue.Empty:
                batch = []
            while len(batch) < 500:
                try:
                    batch.append(self._q.get_nowait())
                except queue.Empty:
                    break
            if self._waiting:
                batch.extend(self._release_waiting(time.monotonic_ns()))
            rows = 0
            try:
                with con:
                    for kind, pid, row, crop in batch:
                        if kind == "stop":
                            stop = True
                        elif kind == "part":
                            if crop is not None:
                                self._save_image(pid, row, crop)
                            sql, cols = (
                                (_FULL_SQL, PART_COLS + GATE_COLS) if "gate_status" in row else (_PART_SQL, PART_COLS)
                            )
                            con.execute(sql, (self.run, pid, *(row[c] for c in cols)))
                            rows += 1
                        else:
                            con.execute(_GATE_SQL, (self.run, pid, *(row[c] for c in GATE_COLS)))
                            self.stats["gate_updates"] += 1
                    if rows:
                        self.stats["rows"] += rows
                        con.execute(
                            "UPDATE runs SET rows=?, images=?, images_dropped=? WHERE run=?",
                            (self.stats["rows"], self.stats["images"], self._dropped(), self.run),
                        )
            except sqlite3.Error as exc:  # disk full or the file went away: keep the rows, try again
                log.error("defect log %s: %s; %d items kept for retry", self.db, exc, len(batch))
                for kind, pid, row, _crop in batch:  # an image already written stays referenced
                    self._q.put((kind, pid, row, None))
                stop = False
                time.sleep(0.5)
                continue
            if batch:
                with self._lock:
                    self._pending -= sum(1 for item in batch if item[0] != "stop")
                self.stats["commits"] += 1
                if rows and self.on_commit is not None:
                    self.on_commit(self.stats["rows"])
            if time.monotonic() >= next_retention:
                self._retention(con)
                next_retention = time.monotonic() + self.cfg.retention_check_s
        con.close()

    def _dropped(self) -> int:
        s = self.stats
        return s["images_dropped_queue"] + s["images_dropped_disk"] + s["image_errors"]

    def _disk_ok(self) -> bool:
        t, ok = self._free_checked
        if time.monotonic() - t > 1.0:
            try:
                self.images_dir.mkdir(parents=True, exist_ok=True)
                ok = shutil.disk_usage(self.images_dir).free >= self.cfg.min_free_mb * 1e6
            except OSError:
                ok = False
            self._free_checked = (time.monotonic(), ok)
        return ok

    def _save_image(self, pid: int, row: dict, crop: np.ndarray) -> None:
        with self._lock:
            self._images_waiting -= 1
        if not self._disk_ok():
            self.stats["images_dropped_disk"] += 1
            row["image_note"] = "dropped: disk full"
            return
        day = time.strftime("%Y-%m-%d", time.localtime(row["time"]))
        name = f"{safe_name(self.run)}_{int(pid):08d}_{safe_name(row['verdict'])}_{safe_name(row['class'])}.jpg"
        rel = f"{day}/{name}"
        try:
            ok, buf = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, self.cfg.jpeg_quality])
            if not ok:
                raise OSError("JPEG encoding failed")
            path = self.images_dir / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(buf.tobytes())
        except (OSError, cv2.error) as exc:
            self.stats["image_errors"] += 1
            row["image_note"] = f"dropped: {exc}"[:120]
            log.warning("defect log image for part %d not written: %s", pid, exc)
            return
        row["image"], row["image_bytes"] = rel, len(buf)
        self.stats["images"] += 1
        amap = row.pop("_anomaly_map", None)
        if amap is not None:
            try:
                ok, png = cv2.imencode(".png", heatmap(amap, (crop.shape[1], crop.shape[0])))
                if not ok:
                    raise OSError("PNG encoding failed")
                map_path(path).write_bytes(png.tobytes())
                row["image_bytes"] += len(png)  # size retention counts the map with its crop
            except (OSError, cv2.error, ValueError) as exc:
                log.warning("defect log anomaly map for part %d not written: %s", pid, exc)

    def _retention(self, con: sqlite3.Connection) -> None:
        """Delete rows (and images) older than retention_days; then oldest images until under max_size_mb."""
        try:
            if self.cfg.retention_days is not None:
                cutoff = time.time() - self.cfg.retention_days * 86400
                for (rel,) in con.execute(
                    "SELECT image FROM parts WHERE time < ? AND image IS NOT NULL", (cutoff,)
                ).fetchall():
                    self._unlink(rel)
                n = con.execute("DELETE FROM parts WHERE time < ?", (cutoff,)).rowcount
                self.stats["retention_deleted"] += n
            if self.cfg.max_size_mb is not None:
                limit = self.cfg.max_size_mb * 1e6
                total = con.execute("SELECT COALESCE(SUM(image_bytes), 0) FROM parts").fetchone()[0]
                while total > limit:
                    old = con.execute(
                        "SELECT id, image, image_bytes FROM parts WHERE image IS NOT NULL ORDER BY time LIMIT 200"
                    ).fetchall()
                    if not old:
                        break
                    for row_id, rel, size in old:
                        if total <= 0.9 * limit:
                            break
                        self._unlink(rel)
                        con.execute(
                            "UPDATE parts SET image=NULL, image_bytes=0, image_note='deleted: size "
                            "retention' WHERE id=?",
                            (row_id,),
                        )
                        total -= size or 0
                        self.stats["retention_images_deleted"] += 1
                    if total <= 0.9 * limit:
                        break
            con.commit()
        except sqlite3.Error as exc:
            log.error("defect log retention failed: %s", exc)

    def _unlink(self, rel: str) -> None:
        p = (self.images_dir / rel).resolve()
        if self.images_dir.resolve() in p.parents:  # never outside the images folder, whatever the row says
            for f in (p, map_path(p)):  # the crop and, for anomaly models, its map
                try:
                    os.unlink(f)
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    log.warning("retention: cannot delete %s: %s", f, exc)

"""The review store: browse a defect log read-only, and keep review marks in an own table of the same file.

The inspection rows (``parts``) are never altered. Browsing uses read-only connections (WAL readers: the line
keeps writing meanwhile); a mark is one short write transaction on its own connection. On a log that cannot be
written (a copy on a read-only medium) browsing still works and marking says why it cannot.
"""

from __future__ import annotations

import getpass
import json
import logging
import socket
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ground.errors import UserError

log = logging.getLogger(__name__)

# The review's own tables and the indexes its filters use. Indexes change no row; CREATE INDEX holds the write
# lock while it builds (measured in docs/BENCHMARKS.md: about a second for 100,000 rows), which the line's
# writer waits out (its busy timeout is 5 s) with its rows queued in memory.
REVIEW_SCHEMA = """
CREATE TABLE IF NOT EXISTS review_marks (
    part INTEGER PRIMARY KEY,          -- parts.id
    run TEXT NOT NULL, part_id INTEGER NOT NULL,  -- parts.(run, part_id): a mark never moves to another part
    mark TEXT NOT NULL, label TEXT NOT NULL, who TEXT, at REAL NOT NULL, source TEXT
);
CREATE TABLE IF NOT EXISTS review_history (
    id INTEGER PRIMARY KEY, part INTEGER NOT NULL, run TEXT, part_id INTEGER,
    mark TEXT NOT NULL, who TEXT, at REAL NOT NULL, source TEXT
);
CREATE INDEX IF NOT EXISTS review_parts_verdict_time ON parts (verdict, time);
"""

# mark -> (label it gives the crop, verdicts it applies to). "defect"/"ok" are resolved per part (bulk actions).
MARKS: dict[str, tuple[str, tuple[str, ...]]] = {
    "confirm_defect": ("defect", ("defect", "no_verdict")),
    "false_reject": ("ok", ("defect", "no_verdict")),
    "missed": ("defect", ("ok",)),
    "confirm_ok": ("ok", ("ok",)),
}
VERDICTS = ("ok", "defect", "no_verdict")
PAGE_MAX = 500
_COLS = (
    "p.id, p.run, p.part_id, p.time, p.frame, p.verdict, p.score, p.class, p.reason, p.latency_ms, p.infer_ms, "
    "p.image, m.mark, m.label, m.who, m.at"
)
_JOIN = "LEFT JOIN review_marks m ON m.part = p.id AND m.run = p.run AND m.part_id = p.part_id"


def resolve_mark(mark: str, verdict: str | None) -> tuple[str, str]:
    """(mark, label) for a part with ``verdict``: "defect"/"ok" become the mark that fits the verdict; an
    explicit mark that contradicts it (a "missed" defect verdict) is a ValueError."""
    rejected = verdict != "ok"
    if mark == "defect":
        mark = "confirm_defect" if rejected else "missed"
    elif mark == "ok":
        mark = "false_reject" if rejected else "confirm_ok"
    if mark not in MARKS:
        raise ValueError(f"unknown mark {mark!r}; use one of {', '.join((*MARKS, 'defect', 'ok', 'clear'))}")
    label, verdicts = MARKS[mark]
    if (verdict or "no_verdict") not in verdicts:
        raise ValueError(f"mark {mark!r} is for a part whose verdict is {' or '.join(verdicts)}, not {verdict!r}")
    return mark, label


def default_who() -> str:
    """Who a mark is from when nobody says: the OS user at this host."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


@dataclass
class Filters:
    """The gallery's filters; every field optional. Times are unix seconds."""

    since: float | None = None
    until: float | None = None
    verdict: str | None = None
    score_min: float | None = None
    score_max: float | None = None
    reason: str | None = None  # a substring, any case
    reviewed: bool | None = None  # True: marked only; False: unmarked only
    mark: str | None = None

    def where(self) -> tuple[str, list[Any]]:
        c: list[str] = []
        a: list[Any] = []
        if self.since is not None:
            c.append("p.time >= ?")
            a.append(self.since)
        if self.until is not None:
            c.append("p.time < ?")
            a.append(self.until)
        if self.verdict is not None:
            if self.verdict not in VERDICTS:
                raise ValueError(f"verdict {self.verdict!r}: use one of {', '.join(VERDICTS)}")
            c.append("p.verdict = ?")
            a.append(self.verdict)
        if self.score_min is not None:
            c.append("p.score >= ?")
            a.append(self.score_min)
        if self.score_max is not None:
            c.append("p.score <= ?")
            a.append(self.score_max)
        if self.reason:
            c.append("p.reason LIKE ? ESCAPE '\\'")
            esc = self.reason.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            a.append(f"%{esc}%")
        if self.reviewed is True:
            c.append("m.part IS NOT NULL")
        elif self.reviewed is False:
            c.append("m.part IS NULL")
        if self.mark is not None:
            if self.mark not in MARKS:
                raise ValueError(f"mark {self.mark!r}: use one of {', '.join(MARKS)}")
            c.append("m.mark = ?")
            a.append(self.mark)
        return " AND ".join(c), a


def _row(r: sqlite3.Row) -> dict[str, Any]:
    d = dict(r)
    d["has_image"] = d.pop("image") is not None
    return d


class ReviewStore:
    """One defect log opened for review. Thread-safe: read connections per thread, one lock for marks."""

    def __init__(self, db: str | Path, images_dir: str | Path | None = None, *, index: bool = True) -> None:
        self.db = Path(db)
        if not self.db.is_file():
            raise UserError(f"--db {self.db}: no such defect log; give the database path from log.db (or --log-db)")
        self.images_dir = Path(images_dir) if images_dir else self.db.parent / (self.db.stem + "_images")
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self.writable, self.read_only_reason = True, ""
        try:  # a probe of its own: the thread's reader, opened before _prepare, would shadow the new table
            probe = _open_read_only(self.db)
            try:
                probe.execute("SELECT id, run, part_id, time, verdict, score, image FROM parts LIMIT 1").fetchall()
            finally:
                probe.close()
        except sqlite3.Error as exc:
            raise UserError(
                f"--db {self.db}: not a defect log ({exc}); give the database written by `inspector run`"
            ) from None
        self.index_s = self._prepare(index)

    # -- connections ---------------------------------------------------------------------------------------
    def _reader(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None:
            con = _open_read_only(self.db)
            con.row_factory = sqlite3.Row
            q = "SELECT 1 FROM sqlite_master WHERE type='table' AND name='review_marks'"
            if con.execute(q).fetchone() is None:  # never reviewed and not writable: an empty one, in memory
                con.executescript(
                    REVIEW_SCHEMA.replace("CREATE TABLE IF NOT EXISTS", "CREATE TEMP TABLE").split("CREATE INDEX")[0]
                )
            self._local.con = con
        return con

    def _writer(self) -> sqlite3.Connection:
        con = sqlite3.connect(str(self.db), timeout=5.0)
        con.execute("PRAGMA busy_timeout=5000")
        return con

    def _prepare(self, index: bool) -> float:
        """Create the review tables (and the filter index): one short write transaction. -> seconds it took.
        A log that cannot be written is browsed read-only (marks refused, with the reason)."""
        t0 = time.perf_counter()
        schema = REVIEW_SCHEMA if index else REVIEW_SCHEMA.split("CREATE INDEX")[0]
        try:
            con = self._writer()
            try:
                with con:
                    con.executescript("BEGIN IMMEDIATE;" + schema + "COMMIT;")
            finally:
                con.close()
        except sqlite3.Error as exc:
            self.writable = False
            self.read_only_reason = f"{self.db} cannot be written ({exc}); browsing only, marks are not stored"
            log.info("review: %s", self.read_only_reason)
        return time.perf_counter() - t0

    def _select(self, sql: str, args: list[Any] | tuple = ()) -> list[sqlite3.Row]:
        return self._reader().execute(sql, args).fetchall()

    # -- browsing ------------------------------------------------------------------------------------------
    def page(self, f: Filters, limit: int = 60, after: tuple[float, int] | None = None) -> dict[str, Any]:
        """Newest first, ``limit`` rows after the cursor ``(time, id)`` of the last row shown (keyset paging:
        page 1000 costs what page 1 does). -> {"rows": [...], "next": cursor or None}."""
        limit = max(1, min(int(limit), PAGE_MAX))
        where, args = f.where()
        clauses = [where] if where else []
        if after is not None:
            clauses.append("(p.time, p.id) < (?, ?)")
            args = [*args, float(after[0]), int(after[1])]
        w = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        sql = f"SELECT {_COLS} FROM parts p {_JOIN}{w} ORDER BY p.time DESC, p.id DESC LIMIT ?"
        rows = [_row(r) for r in self._select(sql, [*args, limit + 1])]
        nxt = None
        if len(rows) > limit:
            rows = rows[:limit]
            nxt = f"{rows[-1]['time']!r}:{rows[-1]['id']}"
        return {"rows": rows, "next": nxt}

    def count(self, f: Filters) -> int:
        where, args = f.where()
        w = f" WHERE {where}" if where else ""
        join = _JOIN if f.reviewed is not None or f.mark is not None else ""  # the marks only when filtered on
        return self._select(f"SELECT COUNT(*) FROM parts p {join}{w}", args)[0][0]

    def part(self, row_id: int) -> dict[str, Any] | None:
        """One part with everything logged about it (timings decoded), its mark, and whether a map exists."""
        rows = self._select(f"SELECT p.*, m.mark, m.label, m.who, m.at FROM parts p {_JOIN} WHERE p.id = ?", [row_id])
        if not rows:
            return None
        d = dict(rows[0])
        try:
            d["timings"] = json.loads(d["timings"]) if d.get("timings") else {}
        except ValueError:
            d["timings"] = {}
        d["has_image"] = self.image_path(row_id, row=d) is not None
        d["has_map"] = self.image_path(row_id, "map", row=d) is not None
        d.pop("image", None)  # the page asks by id, never by path
        return d

    def image_path(self, row_id: int, kind: str = "crop", row: dict[str, Any] | None = None) -> Path | None:
        """The crop (or its heat map) of row ``row_id`` as a file inside the images folder, else None. The path
        comes from the row, never from the request, and must resolve inside the images folder (a copied log's
        row cannot point at /etc/passwd)."""
        from inspector.defectlog.writer import map_path

        if row is None:
            rows = self._select("SELECT image FROM parts WHERE id = ?", [row_id])
            if not rows:
                return None
            row = dict(rows[0])
        rel = row.get("image")
        if not rel or not isinstance(rel, str):
            return None
        base = self.images_dir.resolve()
        p = (base / rel).resolve()
        if base not in p.parents:
            log.warning("review: row %d names an image outside %s; not served", row_id, base)
            return None
        if kind == "map":
            p = map_path(p)
        return p if p.is_file() else None

    def summary(self, f: Filters | None = None) -> dict[str, Any]:
        """What is reviewed and what is not: per verdict, per mark, per reviewer; exportable crops."""
        f = f or Filters()
        where, args = f.where()
        w = f" WHERE {where}" if where else ""
        by_verdict: dict[str, dict[str, int]] = {}
        q = (
            f"SELECT COALESCE(p.verdict, 'no_verdict'), m.mark IS NOT NULL, COUNT(*), COUNT(p.image) "
            f"FROM parts p {_JOIN}{w} GROUP BY 1, 2"
        )
        for verdict, marked, n, with_image in self._select(q, args):
            d = by_verdict.setdefault(verdict, {"parts": 0, "reviewed": 0, "unreviewed": 0, "with_crop": 0})
            d["parts"] += n
            d["reviewed" if marked else "unreviewed"] += n
            d["with_crop"] += with_image
        marks = {
            k: {"parts": n, "with_crop": c}
            for k, n, c in self._select(
                f"SELECT m.mark, COUNT(*), COUNT(p.image) FROM parts p {_JOIN}{w}{' AND' if w else ' WHERE'} "
                "m.mark IS NOT NULL GROUP BY 1",
                args,
            )
        }
        who = {
            k or "-": n
            for k, n in self._select(
                f"SELECT m.who, COUNT(*) FROM parts p {_JOIN}{w}{' AND' if w else ' WHERE'} m.mark IS NOT NULL "
                "GROUP BY 1 ORDER BY 2 DESC",
                args,
            )
        }
        span = self._select(f"SELECT MIN(p.time), MAX(p.time), COUNT(*) FROM parts p {_JOIN}{w}", args)[0]
        rejected_reviewed = sum(marks.get(k, {}).get("parts", 0) for k in ("confirm_defect", "false_reject"))
        ok_reviewed = sum(marks.get(k, {}).get("parts", 0) for k in ("missed", "confirm_ok"))
        return {
            "db": str(self.db),
            "parts": span[2],
            "first": span[0],
            "last": span[1],
            "verdicts": by_verdict,
            "marks": marks,
            "reviewers": who,
            # of the rejected parts a person looked at, the share that was good: the false-reject rate as judged
            "false_reject_share": (marks.get("false_reject", {}).get("parts", 0) / rejected_reviewed)
            if rejected_reviewed
            else None,
            "missed_share": (marks.get("missed", {}).get("parts", 0) / ok_reviewed) if ok_reviewed else None,
            "exportable": sum(v["with_crop"] for v in marks.values()),
            "writable": self.writable,
        }

    def reasons(self, limit: int = 50) -> list[str]:
        """The most frequent reasons (for the filter's suggestions), from the newest 20,000 rows."""
        q = (
            "SELECT reason, COUNT(*) FROM (SELECT reason FROM parts ORDER BY time DESC LIMIT 20000) "
            "WHERE reason IS NOT NULL GROUP BY reason ORDER BY 2 DESC LIMIT ?"
        )
        return [r[0] for r in self._select(q, [limit])]

    # -- marks ---------------------------------------------------------------------------------------------
    def mark(self, ids: list[int], mark: str, who: str | None = None, source: str | None = None) -> dict[str, Any]:
        """Mark parts (``mark`` "clear" removes their marks). One write transaction for the whole selection;
        a mark that does not fit a part's verdict fails the whole call (ValueError), nothing written."""
        if not self.writable:
            raise PermissionError(self.read_only_reason)
        ids = sorted({int(i) for i in ids})
        if not ids:
            raise ValueError("no parts given")
        if len(ids) > 10_000:
            raise ValueError(f"{len(ids)} parts in one call; mark at most 10000 at a time")
        who = (who or "").strip()[:80] or default_who()
        now = time.time()
        qs = ",".join("?" * len(ids))
        with self._write_lock:
            con = self._writer()
            try:
                with con:
                    con.execute("BEGIN IMMEDIATE")
                    found = {
                        r[0]: r[1:]
                        for r in con.execute(f"SELECT id, run, part_id, verdict FROM parts WHERE id IN ({qs})", ids)
                    }
                    missing = [i for i in ids if i not in found]
                    if missing:
                        raise KeyError(f"no part with id {missing[0]} in this log")
                    out = {}
                    for i in ids:
                        run, part_id, verdict = found[i]
                        if mark == "clear":
                            con.execute("DELETE FROM review_marks WHERE part = ?", (i,))
                            out[i] = None
                        else:
                            m, label = resolve_mark(mark, verdict)
                            con.execute(
                                "INSERT INTO review_marks (part, run, part_id, mark, label, who, at, source) "
                                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (part) DO UPDATE SET run=excluded.run, "
                                "part_id=excluded.part_id, mark=excluded.mark, label=excluded.label, "
                                "who=excluded.who, at=excluded.at, source=excluded.source",
                                (i, run, part_id, m, label, who, now, source),
                            )
                            out[i] = m
                        con.execute(
                            "INSERT INTO review_history (part, run, part_id, mark, who, at, source) "
                            "VALUES (?, ?, ?, ?, ?, ?, ?)",
                            (i, run, part_id, out[i] or "clear", who, now, source),
                        )
            finally:
                con.close()
        return {"marked": {str(k): v for k, v in out.items()}, "who": who, "at": now}

    def marked(self) -> list[dict[str, Any]]:
        """Every marked part that still exists, oldest mark first (the export's input)."""
        q = (
            "SELECT p.id, p.run, p.part_id, p.time, p.verdict, p.score, p.class, p.reason, p.image, "
            "m.mark, m.label, m.who, m.at FROM parts p JOIN review_marks m ON m.part = p.id AND m.run = p.run "
            "AND m.part_id = p.part_id ORDER BY m.at, p.id"
        )
        return [dict(r) for r in self._select(q)]

    def close(self) -> None:
        con = getattr(self._local, "con", None)
        if con is not None:
            con.close()
            self._local.con = None


def _open_read_only(db: Path) -> sqlite3.Connection:
    """A read-only connection: a WAL reader beside the line's writer; on a copy in a folder that cannot be
    written (no -shm can be made there, so nobody can be writing it either) an immutable one."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5.0, check_same_thread=False)
    try:
        con.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        return con
    except sqlite3.OperationalError as exc:
        con.close()
        if "readonly" not in str(exc) and "unable to open" not in str(exc):
            raise
    wal = Path(f"{db}-wal")
    if wal.is_file() and wal.stat().st_size > 0:
        log.warning(
            "%s: read-only and its -wal file cannot be read without a -shm beside it: the newest rows and marks "
            "may be missing; copy a live log with sqlite3 LOG '.backup COPY' (or with its -wal and -shm files)",
            db,
        )
    return sqlite3.connect(f"file:{db}?immutable=1", uri=True, timeout=5.0, check_same_thread=False)


def parse_cursor(text: str | None) -> tuple[float, int] | None:
    """The gallery's cursor "time:id" -> (time, id); a malformed one is a ValueError."""
    if not text:
        return None
    t, _, i = text.rpartition(":")
    try:
        return float(t), int(i)
    except ValueError:
        raise ValueError(f"cursor {text!r}: expected TIME:ID as the last page returned it") from None

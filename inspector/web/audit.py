"""The audit of threshold changes: a table of its own in the defect log's SQLite file.

One row per change made from the web console (when, who, from which address, old, new, reason, the run). The
inspection rows (``parts``, ``runs``) are never touched: this module only creates and appends to
``threshold_changes``. WAL mode, as the writer uses, so a write here never blocks the log's writer for long.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS threshold_changes (
    id INTEGER PRIMARY KEY,
    time REAL NOT NULL, who TEXT NOT NULL, address TEXT, old REAL, new REAL NOT NULL, reason TEXT NOT NULL,
    run TEXT, model TEXT
);
"""
COLS = ("id", "time", "who", "address", "old", "new", "reason", "run", "model")


def _connect(db: str | Path, timeout_s: float) -> sqlite3.Connection:
    con = sqlite3.connect(str(db), timeout=timeout_s)
    con.execute("PRAGMA journal_mode=WAL")
    con.executescript(SCHEMA)
    return con


class AuditLog:
    """Appends and reads the audit rows; each call opens its own connection (called from server threads)."""

    def __init__(self, db: str | Path, timeout_s: float = 5.0) -> None:
        # no connection here: the defect log creates (and checks) the file when the line starts, after this
        self.db = Path(db)
        self.timeout_s = timeout_s

    def append(self, **row: Any) -> int:
        """One change -> its row id."""
        values = [row.get(c) for c in COLS[1:]]
        con = _connect(self.db, self.timeout_s)
        try:
            with con:
                cur = con.execute(
                    f"INSERT INTO threshold_changes ({', '.join(COLS[1:])}) VALUES ({', '.join('?' * len(values))})",
                    values,
                )
            return int(cur.lastrowid)
        finally:
            con.close()

    def history(self, limit: int = 50) -> list[dict[str, Any]]:
        """The latest changes, newest first (none before the log file exists)."""
        if not self.db.is_file():
            return []
        con = _connect(self.db, self.timeout_s)
        try:
            rows = con.execute(
                f"SELECT {', '.join(COLS)} FROM threshold_changes ORDER BY id DESC LIMIT ?", (int(limit),)
            ).fetchall()
        finally:
            con.close()
        return [dict(zip(COLS, r, strict=True)) for r in rows]

"""Reading the defect log: export rows (CSV / JSON lines) and summary statistics for `inspector log`."""

from __future__ import annotations

import csv
import json
import re
import sqlite3
import time
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from ground.errors import UserError

EXPORT_COLS = (
    "run",
    "part_id",
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
    "image_note",
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
_REL = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_when(text: str | None, what: str = "--since") -> float | None:
    """'2h', '30m', '7d' (ago), '2026-11-27' or '2026-11-27T14:00' (local time) -> unix seconds."""
    if text is None:
        return None
    m = _REL.match(text.strip())
    if m:
        return time.time() - float(m.group(1)) * _UNIT_S[m.group(2)]
    try:
        return datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        raise UserError(
            f"{what} {text!r}: expected an age such as 30m, 2h, 7d or a date such as 2026-11-27 or 2026-11-27T14:00"
        ) from None


def check_window(since: float | None, until: float | None, since_text: str | None, until_text: str | None) -> None:
    """--since later than (or equal to) --until selects nothing: say so instead of an empty export."""
    if since is not None and until is not None and since >= until:
        ages = all(t is not None and _REL.match(t.strip()) for t in (since_text, until_text))
        hint = " (an age counts back from now: 2h is earlier than 1h)" if ages else ""
        raise UserError(
            f"--since {since_text} is not before --until {until_text}{hint}, so no row can match; swap them"
        )


def significant(value: float | None, digits: int = 4) -> float | None:
    """A score as people read it: ``digits`` significant digits (0.9731, 0.0001234), not 0.973081231."""
    if value is None:
        return None
    return float(f"{value:.{digits}g}")


def open_db(db: str | Path) -> sqlite3.Connection:
    """Open an existing log read-only; a missing or foreign file is a UserError."""
    p = Path(db)
    if not p.is_file():
        raise UserError(f"{p}: no such defect log; give the database path from log.db (or --log-db)")
    try:
        con = sqlite3.connect(f"file:{p}?mode=ro", uri=True, timeout=5.0)
        con.execute("SELECT 1 FROM parts LIMIT 1")
    except sqlite3.Error as exc:
        raise UserError(f"{p}: not a defect log ({exc}); give the database written by `inspector run`") from None
    con.row_factory = sqlite3.Row
    return con


def _where(since: float | None, until: float | None, verdict: str | None) -> tuple[str, list[Any]]:
    clauses, args = [], []
    if since is not None:
        clauses.append("time >= ?")
        args.append(since)
    if until is not None:
        clauses.append("time < ?")
        args.append(until)
    if verdict is not None:
        clauses.append("verdict = ?")
        args.append(verdict)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", args


_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> Any:
    """Text a spreadsheet would run as a formula (a class name from a model's sidecar, an error message) is
    quoted with a leading apostrophe: the export is opened in Excel (CSV injection)."""
    return "'" + value if isinstance(value, str) and value.startswith(_FORMULA) else value


def export(
    db: str | Path,
    out: IO[str],
    *,
    since: float | None = None,
    until: float | None = None,
    verdict: str | None = None,
    fmt: str = "csv",
) -> int:
    """Write matching rows, oldest first; -> row count. Time is written as ISO 8601 local time."""
    con = open_db(db)
    where, args = _where(since, until, verdict)
    cur = con.execute(f"SELECT {', '.join(EXPORT_COLS)} FROM parts{where} ORDER BY time, id", args)
    writer = csv.writer(out) if fmt == "csv" else None
    if writer is not None:
        writer.writerow(EXPORT_COLS)
    n = 0
    for row in cur:
        d = dict(row)
        if d["time"] is not None:
            d["time"] = datetime.fromtimestamp(d["time"]).isoformat(timespec="milliseconds")
        d["score"] = significant(d["score"])
        if writer is not None:
            writer.writerow([_cell(d[c]) for c in EXPORT_COLS])
        else:
            if d["timings"]:  # stored as JSON text; in a JSON line it is an object, not a string inside one
                try:
                    d["timings"] = json.loads(d["timings"])
                except ValueError:
                    pass
            out.write(json.dumps(d) + "\n")
        n += 1
    con.close()
    return n


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def stats(db: str | Path, *, since: float | None = None, until: float | None = None) -> dict[str, Any]:
    """Counts by verdict, class and gate outcome; verdict latency percentiles; image and run totals."""
    con = open_db(db)
    where, args = _where(since, until, None)

    def count_by(col: str) -> dict[str, int]:
        q = f"SELECT COALESCE({col}, '-') AS k, COUNT(*) FROM parts{where} GROUP BY k ORDER BY 2 DESC"
        return {str(k): n for k, n in con.execute(q, args)}

    lat = [
        r[0]
        for r in con.execute(
            f"SELECT latency_ms FROM parts{where}{' AND' if where else ' WHERE'} latency_ms IS NOT NULL", args
        )
    ]
    span = con.execute(
        f"SELECT MIN(time), MAX(time), COUNT(*), COUNT(image), COALESCE(SUM(image_bytes), 0) FROM parts{where}", args
    ).fetchone()
    runs = [
        dict(r)
        for r in con.execute(
            "SELECT run, started, model_hash, config_hash, rows, images, images_dropped FROM runs ORDER BY started"
        )
    ]
    counts = {"verdicts": count_by("verdict"), "classes": count_by("class"), "gate": count_by("gate_status")}
    con.close()

    def fmt(t: float | None) -> str | None:
        return None if t is None else datetime.fromtimestamp(t).isoformat(timespec="seconds")

    return {
        "db": str(db),
        "parts": span[2],
        "first": fmt(span[0]),
        "last": fmt(span[1]),
        **counts,
        "images_kept": span[3],
        "images_mb": round(span[4] / 1e6, 3),
        "images_dropped": sum(r["images_dropped"] or 0 for r in runs),
        "latency_ms": {"p50": _pct(lat, 50), "p99": _pct(lat, 99), "max": max(lat) if lat else None},
        "runs": runs,
    }

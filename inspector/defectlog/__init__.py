"""The defect log: every verdict on record (SQLite, WAL) with JPEG crops for review and retraining.

:func:`open_log` is what `inspector run` calls; :func:`file_hash` and :func:`config_hash` give the two hashes
each row carries, so a row says which model and which settings made its verdict.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from ground.errors import UserError
from ground.files import file_sha256
from inspector.config import LogConfig
from inspector.defectlog.writer import DefectLog, safe_name

__all__ = ["DefectLog", "config_hash", "file_hash", "open_log", "safe_name"]


def file_hash(path: str | Path | None) -> str | None:
    """First 16 hex digits of the file's SHA-256 (the model file); None when there is no file."""
    if path is None or not Path(path).is_file():
        return None
    return file_sha256(path)[:16]


def config_hash(cfg: object) -> str:
    """First 16 hex digits of the SHA-256 of the validated configuration (pydantic JSON, keys in order)."""
    dump = cfg.model_dump_json() if hasattr(cfg, "model_dump_json") else repr(cfg)
    return hashlib.sha256(dump.encode()).hexdigest()[:16]


def open_log(
    cfg: LogConfig, model_hash: str | None = None, config_hash: str | None = None, gate_wait_s: float | None = None
) -> DefectLog | None:
    """The log sink for ``cfg.db`` (None: no log). An unusable path is a UserError, before the line starts.
    ``gate_wait_s``: with a gate, how long a part's row waits for the gate's outcome (one write with both)."""
    if not cfg.db:
        return None
    try:
        return DefectLog(cfg, model_hash, config_hash, gate_wait_s=gate_wait_s)
    except (OSError, ValueError) as exc:
        raise UserError(
            f"log.db {cfg.db}: cannot open the defect log ({exc}); check the path and permissions"
        ) from None
    except Exception as exc:  # sqlite3.DatabaseError: a file that is not a database
        if type(exc).__module__ == "sqlite3":
            free = _free_bytes(Path(cfg.db).parent)
            if free is not None and free < 1_000_000:  # SQLite says "disk I/O error" when it cannot grow
                raise UserError(
                    f"log.db {cfg.db}: the disk is full ({free // 1024} KB free); free some space "
                    "or put the log on another disk"
                ) from None
            raise UserError(f"log.db {cfg.db}: not a usable SQLite database ({exc}); give a new file") from None
        raise


def _free_bytes(path: Path) -> int | None:
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None

"""The files a run writes, checked before it starts: no two outputs on one path, no output over an input, no
existing file that is not ours overwritten, and a folder that is missing (created, and said) or not writable
(refused) named in one line.

A run's outputs are the events file (``--events``), its summary beside it, the scorecard, the defect log
(``log.db``) and its images folder; its inputs are the configuration, the truth file, the model and a recorded
source. ``inspector run --events same.db --log-db same.db`` would otherwise write JSON lines over the database.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

from ground.errors import UserError
from inspector.config import LogConfig

SQLITE_MAGIC = b"SQLite format 3\x00"


def _key(path: str | Path) -> Path:
    return Path(path).expanduser().resolve()


def check_distinct(outputs: dict[str, str | Path | None], inputs: dict[str, str | Path | None]) -> None:
    """Refuse two outputs on one path, or an output on an input's path (one line naming both)."""
    seen: dict[Path, str] = {}
    for name, path in outputs.items():
        if not path:
            continue
        k = _key(path)
        if k in seen:
            raise UserError(
                f"{name} {path} is the same file as {seen[k]}: one would overwrite the other; give each output its "
                "own path"
            )
        seen[k] = name
    for name, path in inputs.items():
        if path and (k := _key(path)) in seen:
            raise UserError(f"{seen[k]} {path} would overwrite the {name} it reads; give the output another path")


def is_events_file(path: Path) -> bool:
    """An events file from `inspector run` (each line a part's JSON object), or an empty file."""
    with path.open("rb") as f:
        head = f.read(4096)
    if not head.strip():
        return True
    first = head.split(b"\n", 1)[0]
    try:
        row = json.loads(first)
    except ValueError:
        return False
    return isinstance(row, dict) and "part_id" in row and "verdict" in row


def _json_with(keys: tuple[str, ...]) -> Callable[[Path], bool]:
    def ours(path: Path) -> bool:
        try:
            d = json.loads(path.read_text(encoding="utf-8") or "{}")
        except (ValueError, UnicodeDecodeError):
            return False
        return isinstance(d, dict) and (not d or all(k in d for k in keys))

    return ours


#: the run summary (``<events>.summary.json``) and the scorecard (``scorecard.json``) as this program writes them
is_summary_file = _json_with(("parts", "frames"))
is_scorecard_file = _json_with(("parts", "confusion"))


def check_not_foreign(name: str, path: str | Path | None, ours: Callable[[Path], bool], what: str) -> None:
    """An existing ``path`` that this program did not write (by its content) is never overwritten."""
    if not path:
        return
    p = Path(path)
    if not p.exists():
        return
    if p.is_dir():
        raise UserError(f"{name} {p}: is a folder; give a file path")
    if not p.is_file():  # a device or a pipe (/dev/stdout, a FIFO): writing to it is the point, and reading would block
        return
    try:
        if ours(p):
            return
        foreign = "a SQLite database" if p.read_bytes()[:16] == SQLITE_MAGIC else "some other file"
    except OSError as exc:
        raise UserError(f"{name} {p}: cannot read it ({exc.strerror}); check its permissions") from None
    raise UserError(
        f"{name} {p}: already exists and is {foreign}, not {what}; it is not overwritten - give a new path or "
        "move that file away"
    )


def check_defect_log(name: str, path: str | Path | None) -> None:
    """An existing database given as the defect log must be one (or empty): its tables are never mixed into
    another program's database."""
    if not path:
        return
    p = Path(path)
    if not p.is_file() or p.stat().st_size == 0:
        return
    with p.open("rb") as f:
        magic = f.read(16)
    if magic != SQLITE_MAGIC:
        raise UserError(
            f"{name} {p}: already exists and is not a SQLite database; it is not overwritten - give a new file or "
            "the defect log written by an earlier run"
        )
    try:
        con = sqlite3.connect(f"file:{p}?mode=ro", uri=True, timeout=5.0)
        try:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        finally:
            con.close()
    except sqlite3.Error:
        return  # unreadable: opening it says why, in its own line
    if tables and "parts" not in tables:
        shown = ", ".join(sorted(tables)[:4])
        raise UserError(
            f"{name} {p}: is another program's SQLite database (tables {shown}), not a defect log; it is not "
            "changed - give a new file"
        )


def _existing_ancestor(p: Path) -> Path:
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def images_dir(cfg: LogConfig) -> Path:
    """Where the defect log's crops go: ``log.images_dir``, else ``<db name without .db>_images`` beside it."""
    db = Path(cfg.db or "defects.db")
    return Path(cfg.images_dir) if cfg.images_dir else db.parent / (db.stem + "_images")


def _folder_base(name: str, p: Path, folder: Path) -> Path:
    """The nearest existing ancestor of ``folder`` (where it would be created); a file there is refused."""
    base = _existing_ancestor(folder)
    if base.exists() and not base.is_dir():
        raise UserError(f"{name} {p}: {base} is a file, not a folder; give a path inside a folder")
    return base


def check_folder(name: str, path: str | Path, *, is_dir: bool = False) -> None:
    """Refuse an output whose folder could not be written (created later, when the first file goes there)."""
    p = Path(path).expanduser()
    base = _folder_base(name, p, p if is_dir else p.parent)
    if not os.access(base, os.W_OK | os.X_OK):
        raise UserError(
            f"{name} {p}: {base} is not writable by this user, so nothing can be saved there; choose a folder you "
            "may write, or change its permissions"
        )


def prepare_folder(name: str, path: str | Path, *, is_dir: bool = False) -> str | None:
    """Make sure an output can be written: the folder that holds it (``is_dir``: the folder itself) exists and
    is writable. A missing folder is created -> the warning to show; one that cannot be written is refused."""
    p = Path(path).expanduser()
    if (
        not is_dir and p.exists() and not p.is_file() and not p.is_dir()
    ):  # /dev/stdout, a FIFO: only it must be writable
        if not os.access(p, os.W_OK):
            raise UserError(f"{name} {p}: not writable by this user; give another path")
        return None
    folder = p if is_dir else p.parent
    folder = folder if str(folder) else Path(".")
    if folder.is_dir():
        if not os.access(folder, os.W_OK | os.X_OK):
            raise UserError(
                f"{name} {p}: the folder {folder} is not writable by this user; choose a folder you may write, or "
                "change its permissions"
            )
        if not is_dir and p.exists() and not os.access(p, os.W_OK):
            raise UserError(f"{name} {p}: the file is read-only for this user; give a new file or change its mode")
        return None
    base = _folder_base(name, p, folder)
    if not os.access(base, os.W_OK | os.X_OK):
        raise UserError(
            f"{name} {p}: the folder {folder} does not exist and cannot be created ({base} is not writable by this "
            "user); create it first or choose another path"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(
            f"{name} {p}: the folder {folder} does not exist and cannot be created ({exc.strerror}); create it "
            "first or choose another path"
        ) from None
    return f"{name} {p}: the folder {folder} did not exist; created it"

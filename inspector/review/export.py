"""`inspector review export`: the reviewed crops as a class-folder data set, ready for `inspector train --data`.

Each marked part with a crop on disk is copied (bytes unchanged) into ``DIR/<class>/``; ``DIR/manifest.csv``
says where each file came from (source row id, run, part id, mark, who, when, the line's verdict, score and
class). Its first two columns are ``path,label``, so the manifest alone is also a training set
(``inspector train --data DIR/manifest.csv``).
"""

from __future__ import annotations

import csv
import logging
import shutil
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

from ground.errors import UserError
from inspector.defectlog.writer import safe_name
from inspector.review.store import ReviewStore

log = logging.getLogger(__name__)

MANIFEST = "manifest.csv"
MANIFEST_COLS = (
    "path",
    "label",
    "source_id",
    "run",
    "part_id",
    "mark",
    "who",
    "marked_at",
    "verdict",
    "score",
    "class",
    "reason",
    "time",
)
CLASS_MODES = ("ok-defect", "model")


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t).isoformat(timespec="seconds")


def model_class_names(store: ReviewStore) -> tuple[str, list[str]]:
    """The line model's class names as the log shows them: (the OK class, the defect classes), from the class
    most often given with an OK verdict and the classes given with a defect verdict."""
    ok = store._select(  # noqa: SLF001 - the store's own read connection
        "SELECT class, COUNT(*) FROM parts WHERE verdict='ok' AND class IS NOT NULL GROUP BY 1 ORDER BY 2 DESC LIMIT 1"
    )
    bad = store._select(  # noqa: SLF001
        "SELECT DISTINCT class FROM parts WHERE verdict='defect' AND class IS NOT NULL ORDER BY 1"
    )
    ok_name = ok[0][0] if ok else "ok"
    return ok_name, [r[0] for r in bad if r[0] != ok_name]


def class_of(row: dict[str, Any], mode: str, ok_name: str, defect_names: list[str]) -> str:
    """The folder a reviewed crop goes into. ``ok-defect``: ok/ or defect/. ``model``: the model's class names;
    a confirmed defect keeps the class the model gave it, a missed one takes the model's single defect class
    (or ``defect`` when the model has several and the review did not say which)."""
    if mode == "ok-defect":
        return row["label"]
    if row["label"] == "ok":
        return safe_name(ok_name)
    if row["mark"] == "confirm_defect" and row["class"] and row["class"] != ok_name:
        return safe_name(row["class"])
    return safe_name(defect_names[0]) if len(defect_names) == 1 else "defect"


def export_dataset(store: ReviewStore, out: str | Path, *, classes: str = "ok-defect") -> dict[str, Any]:
    """Write the data set; -> a summary (counts per class, parts skipped and why). ``out`` must be new or
    empty: an export never mixes with older files."""
    if classes not in CLASS_MODES:
        raise UserError(f"--classes {classes!r}: use one of {', '.join(CLASS_MODES)}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out {out}: exists and is not an empty folder; give a new folder for the data set")
    rows = store.marked()
    if not rows:
        raise UserError(f"{store.db}: no reviewed parts to export; review some first (inspector review --web)")
    ok_name, defect_names = model_class_names(store) if classes == "model" else ("ok", [])
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--out {out}: cannot create the folder ({exc.strerror})") from None
    counts: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    with (out / MANIFEST).open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(MANIFEST_COLS)
        for r in rows:
            src = store.image_path(r["id"], row=r)
            if src is None:
                skipped["no crop on disk (an OK part not sampled, or deleted by retention)"] += 1
                continue
            cls = class_of(r, classes, ok_name, defect_names)
            rel = f"{cls}/{safe_name(r['run'])}_{int(r['part_id']):08d}{src.suffix.lower()}"
            try:
                (out / cls).mkdir(exist_ok=True)
                shutil.copyfile(src, out / rel)
            except FileNotFoundError:  # retention deleted it while the export ran
                skipped["no crop on disk (an OK part not sampled, or deleted by retention)"] += 1
                continue
            except OSError as exc:
                raise UserError(f"--out {out}: cannot write {rel} ({exc.strerror})") from None
            counts[cls] += 1
            w.writerow(
                (
                    rel,
                    cls,
                    r["id"],
                    r["run"],
                    r["part_id"],
                    r["mark"],
                    r["who"],
                    _iso(r["at"]),
                    r["verdict"],
                    r["score"],
                    r["class"],
                    r["reason"],
                    _iso(r["time"]),
                )
            )
    summary = {"out": str(out), "classes": dict(sorted(counts.items())), "files": sum(counts.values())}
    summary["skipped"] = dict(skipped)
    summary["trainable"] = len(counts) >= 2
    if not summary["trainable"]:
        log.warning("review export: only class(es) %s; training needs at least two", sorted(counts))
    return summary

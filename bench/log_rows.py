#!/usr/bin/env python3
"""Defect log throughput: rows/s the writer thread sustains with JPEG crops, and the cost of on_part.

Parts are offered flat out (faster than any line) with real casting crops (300x300 from the shared data when
present, else synthetic), queue_size large enough that nothing is dropped, so the figure is what the writer
thread (JPEG encode + file write + SQLite WAL commit) sustains. Two mixes: every part a defect (a crop per
row, the worst case) and a production mix (10% defects, 2% of OK parts sampled). Also: on_part's own cost
on the inspection thread (p50/p99, microseconds).

    .venv/bin/python bench/log_rows.py [--parts 2000] [--json out.json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from inspector.config import LogConfig  # noqa: E402
from inspector.defectlog import DefectLog  # noqa: E402
from inspector.records import Part, Verdict  # noqa: E402


def crops(n: int = 16) -> list[np.ndarray]:
    data = Path(os.environ.get("INSPECTOR_DATA", ROOT.parent / "shared" / "data")) / "casting" / "train"
    files = sorted(data.glob("*/*.jpeg"))[:n] if data.is_dir() else []
    if files:
        return [cv2.imread(str(f)) for f in files]
    rng = np.random.default_rng(0)
    return [cv2.GaussianBlur(rng.integers(0, 255, (300, 300, 3), dtype=np.uint8), (7, 7), 0) for _ in range(n)]


def run(parts: int, defect_every: int, ok_fraction: float, imgs: list[np.ndarray]) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="log-bench-"))
    cfg = LogConfig(
        db=str(tmp / "log.db"),
        ok_sample_fraction=ok_fraction,
        queue_size=parts + 1,
        retention_days=None,
        max_size_mb=None,
    )
    log = DefectLog(cfg, "model", "config")
    cost = []
    t0 = time.perf_counter()
    for i in range(parts):
        now = time.monotonic_ns()
        defect = i % defect_every == 0
        p = Part(
            i,
            i,
            now - 20_000_000,
            (0, 0, 300, 300),
            Verdict.DEFECT if defect else Verdict.OK,
            0.9 if defect else 0.1,
            "def_front" if defect else "ok_front",
            t_infer_start_ns=now - 5_000_000,
            t_verdict_ns=now,
            crop=imgs[i % len(imgs)],
        )
        c0 = time.perf_counter_ns()
        log.on_part(p)
        cost.append((time.perf_counter_ns() - c0) / 1e3)
    t_offered = time.perf_counter() - t0
    log.close(timeout=600)
    elapsed = time.perf_counter() - t0
    cost.sort()
    size = sum(f.stat().st_size for f in tmp.rglob("*") if f.is_file())
    return {
        "parts": parts,
        "images": log.stats["images"],
        "dropped": log._dropped(),
        "rows": log.stats["rows"],
        "seconds": round(elapsed, 3),
        "rows_per_s": round(parts / elapsed, 1),
        "images_per_s": round(log.stats["images"] / elapsed, 1),
        "offer_seconds": round(t_offered, 3),
        "on_part_us": {"p50": round(cost[len(cost) // 2], 1), "p99": round(cost[int(len(cost) * 0.99)], 1)},
        "disk_mb": round(size / 1e6, 2),
        "commits": log.stats["commits"],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", type=int, default=2000)
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()
    cv2.setNumThreads(1)
    imgs = crops()
    out = {
        "date": dt.date.today().isoformat(),
        "machine": platform.node(),
        "python": platform.python_version(),
        "crop": f"{imgs[0].shape[1]}x{imgs[0].shape[0]}",
        "all_defects": run(args.parts, 1, 0.0, imgs),
        "production_mix": run(args.parts, 10, 0.02, imgs),
    }
    print(json.dumps(out, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

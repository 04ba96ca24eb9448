#!/usr/bin/env python
"""Sharpness (model.min_sharpness) on simulated casting lines: the two sharp 200-part lines and the motion-blur
line of tests/replay/test_replay_e2e.py, from the shipped model's held-out photos. Prints each line's sharpness
spread and confusion; with a value, runs the lines with min_sharpness set.

Usage: .venv/bin/python bench/sharpness_lines.py [MIN_SHARPNESS] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import yaml

from engines.meta import read_sidecar
from inspector.cli import main
from inspector.events import read_events
from inspector.simulate import render_line

ROOT = Path(__file__).resolve().parents[1]
LINES = {
    "fast": dict(parts=200, seed=11, speed_px_s=900, min_gap_px=30, max_gap_px=120),
    "down": dict(parts=200, seed=12, speed_px_s=750, min_gap_px=30, max_gap_px=100, direction="down"),
    "blur": dict(parts=60, seed=13, speed_px_s=750, min_gap_px=30, max_gap_px=100, direction="left", blur=True),
}


def run() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("min_sharpness", type=float, nargs="?")
    ap.add_argument("--out", default="/tmp/sharpness_lines")
    a = ap.parse_args()
    model = ROOT / "models" / "casting_seedcnn.onnx"
    data = Path(os.environ.get("INSPECTOR_DATA", ROOT.parent / "shared" / "data"))
    held = [(data / "casting" / "train" / k, Path(k).parent.name) for k in read_sidecar(model).extra["split"]["test"]]
    held = [(p, c) for p, c in held if p.is_file()]
    for name, kw in LINES.items():
        d = Path(a.out) / name
        d.mkdir(parents=True, exist_ok=True)
        spec = render_line(held, d / "line.mp4", d / "truth.csv", fps=30, size=(640, 480), **kw)
        cfg = Path(spec.write_config(d / "line.yaml", model=str(model)))
        if a.min_sharpness is not None:
            y = yaml.safe_load(cfg.read_text())
            y.setdefault("model", {})["min_sharpness"] = a.min_sharpness
            cfg.write_text(yaml.safe_dump(y))
        ev = d / "events.jsonl"
        main(["run", "--config", str(cfg), "--no-display", "--events", str(ev), "--truth", spec.truth])
        s = np.array([e["sharpness"] for e in read_events(ev) if e["sharpness"] is not None])
        card = json.loads((d / "scorecard.json").read_text())
        q = np.percentile(s, [5, 50]).round(1).tolist()
        print(
            f"RESULT {name}: min {s.min():.1f} p5 {q[0]} p50 {q[1]} max {s.max():.1f}; confusion "
            f"{json.dumps(card['confusion'])}; escaped defects {card['escaped_defects']}",
            flush=True,
        )


if __name__ == "__main__":
    run()

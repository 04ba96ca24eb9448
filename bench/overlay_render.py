#!/usr/bin/env python3
"""What the operator's window costs the main thread per drawn frame: :func:`inspector.overlay.render_overlay`
(the frame copied into the larger canvas, ROI, boxes, placed labels, the status bar with three thumbnails) and
the health snapshot it reads, at 640x480, 1280x720 and 1920x1080 with 8 parts in view. The window draws at most
30 times a second (33 ms apart), so the render should take a small part of that.

    .venv/bin/python bench/overlay_render.py [--repeat 200]
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np

from inspector.detect import Roi
from inspector.events import Summary
from inspector.health import HealthProbe, ModelHealth
from inspector.overlay import render_overlay
from inspector.pipeline import FrameView, LoopStats
from inspector.records import Part, Verdict


def scene(w: int, h: int) -> tuple[FrameView, LoopStats, HealthProbe]:
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    summary = Summary()
    side = h // 6
    parts = []
    for i in range(8):
        v = (Verdict.OK, Verdict.DEFECT, Verdict.NO_VERDICT)[i % 3]
        crop = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
        p = Part(i + 1, 0, 0, (20 + i * (w // 9), h // 3, side, side), v, score=0.4, reason="lost", crop=crop)
        p.t_verdict_ns = 5_000_000
        summary.on_part(p)
        parts.append(p)
    stats = LoopStats(summary=summary, fps=30.0, last_latency_ms=5.0)
    view = FrameView(frame, 0, Roi(10, 10, w - 20, h - 20), [], [], parts)
    return view, stats, HealthProbe(stats=stats, model=ModelHealth("m.onnx", "onnxruntime"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=200)
    args = ap.parse_args()
    print(f"python {platform.python_version()}, {platform.machine()}, repeat {args.repeat}")
    print("| frame | render_overlay ms (median / p95) | health snapshot ms (median) | canvas |")
    print("| --- | --- | --- | --- |")
    for w, h in ((640, 480), (1280, 720), (1920, 1080)):
        view, stats, probe = scene(w, h)
        render_overlay(view, stats, health=probe.snapshot())  # warm-up: layout cache, first allocations
        r, s = [], []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            health = probe.snapshot()
            t1 = time.perf_counter()
            out = render_overlay(view, stats, health=health)
            t2 = time.perf_counter()
            s.append((t1 - t0) * 1e3)
            r.append((t2 - t1) * 1e3)
        print(
            f"| {w}x{h} | {np.median(r):.2f} / {np.percentile(r, 95):.2f} | {np.median(s):.3f} "
            f"| {out.shape[1]}x{out.shape[0]} |"
        )


if __name__ == "__main__":
    main()

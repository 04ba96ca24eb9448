#!/usr/bin/env python3
"""Where the inspection thread's time goes, per frame, on a rendered 640x480 30 fps line (no capture thread).

The frames are decoded into memory first, so each stage is timed on its own: segmentation (each detection
method), tracking, the whole ``Pipeline.process`` (segmentation + tracking + crop + preprocess + inference +
sinks), and inference alone per part. Compared with decoding, which the capture thread does in parallel.
Best of ``--rounds`` rounds, to keep other processes' noise out.

    .venv/bin/python bench/pipeline_stages.py [--model models/casting_seedcnn.onnx] [--parts 40] [--json out.json]
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engines.base import load_engine  # noqa: E402
from engines.preprocess import preprocess  # noqa: E402
from inspector.config import InspectorConfig  # noqa: E402
from inspector.detect import Detector, Roi  # noqa: E402
from inspector.events import Summary  # noqa: E402
from inspector.pipeline import Pipeline  # noqa: E402
from inspector.records import Frame  # noqa: E402
from inspector.simulate import render_line  # noqa: E402
from inspector.track import Tracker  # noqa: E402


def best(fn, rounds: int) -> float:
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return min(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(ROOT / "models" / "casting_seedcnn.onnx"))
    ap.add_argument("--parts", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / "line.mp4"
        spec = render_line(ROOT / "demo", video, Path(tmp) / "truth.csv", parts=args.parts, seed=2)
        images: list = []

        def decode() -> None:
            cap = cv2.VideoCapture(str(video))
            images.clear()
            while True:
                ok, img = cap.read()
                if not ok:
                    break
                images.append(img)
            cap.release()

        decode_s = best(decode, min(3, args.rounds))
    n = len(images)
    line_cfg = spec.config_dict(args.model)
    cfg = InspectorConfig.model_validate(line_cfg)
    engine = load_engine(args.model)
    roi = Roi.from_config(cfg.roi, spec.size)
    res: dict = {
        "date": dt.date.today().isoformat(),
        "machine": f"{os.cpu_count()} CPU(s), {platform.machine()}, load avg {os.getloadavg()[0]:.1f}",
        "model": Path(args.model).name,
        "frames": n,
        "parts": len(spec.parts),
        "decode_ms_per_frame": round(decode_s / n * 1e3, 3),
    }

    for method in ("color", "threshold", "background"):
        for ds in (1, 2, 4):
            d = dict(line_cfg["detection"], method=method, downscale=ds)
            if method == "threshold":
                d["threshold"] = "otsu"
            if method == "background":
                d["threshold"] = 30
            dcfg = InspectorConfig.model_validate({**line_cfg, "detection": d}).detection

            def segment(dcfg=dcfg) -> None:
                det = Detector(dcfg, roi)
                for img in images:
                    det.detect(img)

            res[f"segment_{method}_ds{ds}_ms"] = round(best(segment, args.rounds) / n * 1e3, 3)

    det = Detector(cfg.detection, roi)
    dets = [det.detect(img) for img in images]

    def track() -> None:
        tr = Tracker(cfg.tracking, roi)
        for i, d in enumerate(dets):
            tr.update(d, i)

    res["track_ms"] = round(best(track, args.rounds) / n * 1e3, 3)

    parts_seen: list[int] = []

    def process() -> None:
        s = Summary()
        pipe = Pipeline(cfg, engine, [s], keep_crops=False)
        for i, img in enumerate(images):
            pipe.process(Frame(i, time.monotonic_ns(), img))
        parts_seen.append(s.parts)

    proc_s = best(process, args.rounds)
    res["process_ms_per_frame"] = round(proc_s / n * 1e3, 3)
    crop = images[n // 2][100:260, 100:260]
    batch = preprocess([crop], engine.meta)
    infer_s = best(lambda: [engine.infer(batch) for _ in range(50)], args.rounds) / 50
    prep_s = best(lambda: [preprocess([crop], engine.meta) for _ in range(50)], args.rounds) / 50
    res["infer_ms_per_part"] = round(infer_s * 1e3, 3)
    res["preprocess_ms_per_part"] = round(prep_s * 1e3, 3)
    res["parts_judged"] = parts_seen[-1]
    per_frame_model = (infer_s + prep_s) * parts_seen[-1] / n
    res["process_minus_model_ms_per_frame"] = round((proc_s / n - per_frame_model) * 1e3, 3)
    res["work_over_decode_plus_model"] = round((decode_s / n + proc_s / n) / (decode_s / n + per_frame_model), 3)
    print(json.dumps(res, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

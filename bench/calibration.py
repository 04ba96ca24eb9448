#!/usr/bin/env python3
"""Calibration accuracy against known truth, and the cost of undistortion per frame.

1. Camera: chessboards rendered through a known lens (calibration.synth) at several resolutions and view
   counts -> focal-length error, RMS reprojection error, largest lens-model disagreement over the image.
2. Belt: lines rendered at known speeds in every direction (inspector.simulate.render_line), measured by
   `inspector calibrate belt`'s own path (runtime detector + tracker) -> speed error and spread.
3. Undistortion: one precomputed cv2.remap (the runtime) vs cv2.undistort per frame, ms per frame (median).

    .venv/bin/python bench/calibration.py [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from calibration.belt import measure_belt  # noqa: E402
from calibration.camera import Undistorter, calibrate, list_images  # noqa: E402
from calibration.synth import write_board_set  # noqa: E402
from inspector.commands.calibrate import collect_tracks  # noqa: E402
from inspector.config import InspectorConfig  # noqa: E402
from inspector.simulate import render_line  # noqa: E402

DIST = np.array([-0.25, 0.08, 0.001, -0.0005, 0.0])


def lens_difference(K0, d0, K1, d1, size) -> float:
    w, h = size
    g = np.stack(np.meshgrid(np.linspace(0.05 * w, 0.95 * w, 33), np.linspace(0.05 * h, 0.95 * h, 25)), -1)
    g = g.reshape(-1, 1, 2)
    rays = cv2.undistortPoints(g, K0, d0).reshape(-1, 2)
    back, _ = cv2.projectPoints(np.column_stack([rays, np.ones(len(rays))]), np.zeros(3), np.zeros(3), K1, d1)
    return float(np.linalg.norm(back.reshape(-1, 2) - g.reshape(-1, 2), axis=1).max())


def camera_rows(tmp: Path) -> list[dict]:
    rows = []
    for size, views, seed in [((640, 480), 10, 0), ((640, 480), 20, 1), ((1280, 960), 10, 2)]:
        s = size[0] / 640
        K = np.array([[800.0 * s, 0, 322.0 * s], [0, 805.0 * s, 236.0 * s], [0, 0, 1]])
        d = tmp / f"boards_{size[0]}_{views}"
        t0 = time.perf_counter()
        write_board_set(d, K, DIST, n=views, size=size, seed=seed)
        render_s = time.perf_counter() - t0
        for fix_k3 in (False, True):
            t0 = time.perf_counter()
            c = calibrate(list_images(d), (9, 6), 25.0, fix_k3=fix_k3)
            rows.append(
                {
                    "size": f"{size[0]}x{size[1]}",
                    "views": views,
                    "model": "k1 k2 p1 p2" if fix_k3 else "k1 k2 p1 p2 k3",
                    "fx_err_pct": 100 * (c.K[0, 0] / K[0, 0] - 1),
                    "fy_err_pct": 100 * (c.K[1, 1] / K[1, 1] - 1),
                    "rms_px": c.rms_px,
                    "lens_max_diff_px": lens_difference(K, DIST, c.K, c.dist, size),
                    "k1": c.dist_coeffs[0],
                    "k2": c.dist_coeffs[1],
                    "found": len(c.per_image),
                    "calib_s": time.perf_counter() - t0,
                    "render_s": render_s,
                }
            )
    return rows


def belt_rows(tmp: Path) -> list[dict]:
    imgs = tmp / "parts"
    for name in ("ok", "defect"):
        (imgs / name).mkdir(parents=True)
        for i in range(3):
            img = np.full((96, 96, 3), 170, np.uint8)
            cv2.circle(img, (48, 48), 38, (210, 210, 210), -1)
            cv2.circle(img, (48, 48), 24, (25, 25, 25), -1)
            cv2.imwrite(str(imgs / name / f"{i}.png"), img)
    rows = []
    for direction, speed, fps, blur in [
        ("right", 300, 30, False),
        ("left", 450, 30, True),
        ("down", 150, 25, False),
        ("up", 600, 60, True),
    ]:
        spec = render_line(
            imgs,
            tmp / f"line_{direction}.avi",
            fps=fps,
            size=(640, 480),
            speed_px_s=speed,
            parts=8,
            seed=3,
            direction=direction,
            blur=blur,
        )
        cfg = InspectorConfig.model_validate(spec.config_dict())
        tracks, dirn, frames = collect_tracks(cfg, spec.video)
        m = measure_belt(tracks, dirn)
        rows.append(
            {
                "direction": direction,
                "true_px_s": speed,
                "fps": fps,
                "motion_blur": blur,
                "measured_px_s": m.speed_px_s,
                "err_pct": 100 * (m.speed_px_s / speed - 1),
                "spread_pct": m.spread_pct,
                "parts": m.parts,
                "rendered_parts": len(spec.parts),
            }
        )
    return rows


def undistort_rows() -> list[dict]:
    from calibration.camera import Board, CameraCalibration

    rows = []
    for w, h in [(640, 480), (1280, 720), (1920, 1080)]:
        s = w / 640
        K = [[800.0 * s, 0, w / 2], [0, 800.0 * s, h / 2], [0, 0, 1]]
        calib = CameraCalibration(
            frame_size=(w, h),
            board=Board(cols=9, rows=6, square_mm=25),
            camera_matrix=K,
            dist_coeffs=DIST.tolist(),
            rms_px=0.1,
        )
        und = Undistorter(calib)
        frame = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
        times: dict[str, list[float]] = {"remap": [], "undistort": []}
        Kc, dc, newK = calib.K, calib.dist, und.new_K
        for _ in range(5):  # interleaved rounds: the shared machine's load hits both alike
            for name in times:
                t0 = time.perf_counter()
                for _ in range(20):
                    if name == "remap":
                        und.apply(frame)
                    else:
                        cv2.undistort(frame, Kc, dc, None, newK)
                times[name].append((time.perf_counter() - t0) / 20 * 1000)
        rows.append(
            {
                "size": f"{w}x{h}",
                "remap_ms": float(np.median(times["remap"])),
                "undistort_ms": float(np.median(times["undistort"])),
            }
        )
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="write the figures here too")
    args = ap.parse_args()
    cv2.setNumThreads(2)
    with tempfile.TemporaryDirectory() as tmp:
        res = {
            "machine": f"{platform.node()} {platform.machine()} python {platform.python_version()} "
            f"opencv {cv2.__version__}",
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "camera": camera_rows(Path(tmp)),
            "belt": belt_rows(Path(tmp)),
            "undistort": undistort_rows(),
        }
    print(f"# {res['machine']}, {res['date']}")
    print("\n| frames | views | distortion model | fx error | fy error | RMS px | lens max diff px | k1 | k2 |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in res["camera"]:
        print(
            f"| {r['size']} | {r['views']} | {r['model']} | {r['fx_err_pct']:+.3f} % | {r['fy_err_pct']:+.3f} % | "
            f"{r['rms_px']:.3f} | {r['lens_max_diff_px']:.2f} | {r['k1']:.4f} | {r['k2']:.4f} |"
        )
    print("\n| direction | fps | motion blur | true px/s | measured px/s | error | spread | parts |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in res["belt"]:
        print(
            f"| {r['direction']} | {r['fps']} | {r['motion_blur']} | {r['true_px_s']} | {r['measured_px_s']:.2f} | "
            f"{r['err_pct']:+.3f} % | {r['spread_pct']:.3f} % | {r['parts']}/{r['rendered_parts']} |"
        )
    print("\n| frame | one remap (runtime) ms | cv2.undistort ms |")
    print("| --- | --- | --- |")
    for r in res["undistort"]:
        print(f"| {r['size']} | {r['remap_ms']:.2f} | {r['undistort_ms']:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

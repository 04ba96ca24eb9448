#!/usr/bin/env python3
"""Capture figures on this machine: source read rates, the capture thread's overhead, live hand-off latency,
stall detection and reopen times.

- read rate: frames/s and CPU ms/frame (our process + gst-launch-1.0) reading flat out;
- overhead: CaptureThread.get() on a recording vs the bare source read of the same file;
- hand-off: live frame age at get() (t_get - t_capture) with a consumer always waiting;
- stall: a live gst pipeline frozen with SIGSTOP: time to stall_count, and to the first frame after reopen.

    .venv/bin/python bench/capture_sources.py [--frames 300] [--stalls 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from inspector.capture import CaptureThread, open_source  # noqa: E402
from inspector.config import SourceConfig  # noqa: E402


def write_clip(path: Path, n: int, size: tuple[int, int]) -> Path:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, size)
    for i in range(n):
        writer.write(np.roll(base, i * 4, axis=1))
    writer.release()
    return path


def read_rate(uri: str, n: int) -> dict:
    """Frames/s and CPU per frame reading a source flat out (children = the gst-launch-1.0 process)."""
    me = psutil.Process()
    src = open_source(uri, SourceConfig())
    kids = me.children()
    cpu0 = me.cpu_times()
    kid0 = sum(k.cpu_times().user + k.cpu_times().system for k in kids)
    t0, count = time.perf_counter(), 0
    while count < n and src.read() is not None:
        count += 1
    wall = time.perf_counter() - t0
    cpu1 = me.cpu_times()
    kid1 = sum(k.cpu_times().user + k.cpu_times().system for k in kids if k.is_running())
    src.close()
    ours = (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / count * 1e3
    return {
        "frames": count,
        "fps": round(count / wall, 1),
        "cpu_ms_per_frame_python": round(ours, 2),
        "cpu_ms_per_frame_gst": round((kid1 - kid0) / count * 1e3, 2) if kids else None,
    }


def thread_rate(uri: str) -> float:
    cap = CaptureThread(SourceConfig(), uri).start()
    t0, count = time.perf_counter(), 0
    while True:
        if cap.get(timeout=2.0) is None:
            if cap.ended.is_set():
                break
            continue
        count += 1
    wall = time.perf_counter() - t0
    cap.close()
    return count / wall


def handoff(seconds: float) -> dict:
    cap = CaptureThread(
        SourceConfig(), "gst:videotestsrc is-live=true ! video/x-raw,width=640,height=480,framerate=30/1"
    ).start()
    ages = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        f = cap.get(timeout=1.0)
        if f is not None:
            ages.append((time.monotonic_ns() - f.t_capture_ns) / 1e6)
    cap.close()
    return {
        "frames": len(ages),
        "age_ms_p50": round(float(np.percentile(ages, 50)), 3),
        "age_ms_p99": round(float(np.percentile(ages, 99)), 3),
        "dropped": cap.stats.dropped,
    }


def stalls(trials: int, timeout_s: float) -> dict:
    detect, recover = [], []
    cap = CaptureThread(
        SourceConfig(stall_timeout_s=timeout_s),
        "gst:videotestsrc is-live=true ! video/x-raw,width=320,height=240,framerate=30/1",
    ).start()
    for i in range(trials):
        while cap.get(timeout=5.0) is None:
            pass
        pid = cap.source.pid
        os.kill(pid, signal.SIGSTOP)
        t0 = time.monotonic()
        while cap.stall_count < i + 1:
            time.sleep(0.005)
        detect.append(time.monotonic() - t0)
        while (f := cap.get(timeout=5.0)) is None or f.t_capture_ns < (t0 + detect[-1]) * 1e9:
            pass
        recover.append(time.monotonic() - t0)
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
    cap.close()
    return {
        "stall_timeout_s": timeout_s,
        "detect_s_max": round(max(detect), 3),
        "detect_s_mean": round(float(np.mean(detect)), 3),
        "first_frame_after_s_max": round(max(recover), 3),
        "stalls": cap.stats.stalls,
        "reopens": cap.stats.reopens,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--stalls", type=int, default=5)
    args = ap.parse_args()
    out: dict = {"machine": f"{platform.machine()} {os.cpu_count()} CPUs", "date": time.strftime("%Y-%m-%d")}
    with tempfile.TemporaryDirectory() as tmp:
        clip = str(write_clip(Path(tmp) / "clip.avi", args.frames, (640, 480)))
        out["file_mjpg_640x480_opencv"] = read_rate(clip, args.frames)
        out["file_mjpg_640x480_capture_thread_fps"] = round(thread_rate(clip), 1)
        out["file_mjpg_640x480_gst_filesrc"] = read_rate(
            f"gst:filesrc location={clip} ! avidemux ! jpegdec", args.frames
        )
        for w, h in ((640, 480), (1280, 720)):
            out[f"gst_videotestsrc_{w}x{h}"] = read_rate(
                f"gst:videotestsrc num-buffers={args.frames} ! video/x-raw,width={w},height={h}", args.frames
            )
    out["live_handoff_640x480_30fps"] = handoff(5.0)
    out["stall_sigstop"] = stalls(args.stalls, 1.0)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

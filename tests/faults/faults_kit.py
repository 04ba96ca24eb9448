"""What the fault and bad-input tests run on: a tiny exported model, a short line video, the CLI as a child.

A module (not conftest) so the doc generator in test_faults_bad_input.py can build the same kit outside
pytest. Everything is real: an untrained SeedCNN exported to ONNX (the real backend and file format), an MJPG
video drawn with OpenCV, `python -m inspector` in a subprocess.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
BELT, OK_GRAY, DEFECT_GRAY = 40, 150, 245


@dataclass
class Kit:
    dir: Path
    onnx: Path  # tiny.onnx + tiny.onnx.json, input 32 gray
    pt: Path  # the checkpoint it was exported from
    video: Path  # 160x120 MJPG, 12 frames of empty belt


def make_kit(d: Path) -> Kit:
    """Build the model and video in ``d`` (world-readable, so a child run as `nobody` can read them)."""
    import torch

    from engines.archs import build_network
    from engines.checkpoint import save_checkpoint
    from engines.export import export_onnx
    from engines.meta import ModelMeta

    torch.set_num_threads(1)
    d.mkdir(parents=True, exist_ok=True)
    meta = ModelMeta("seedcnn", ["def_front", "ok_front"], "ok_front", 32, 1, [0.5], [0.25], 0.5)
    torch.manual_seed(0)
    save_checkpoint(d / "tiny.pt", build_network(meta).state_dict(), meta)
    onnx = export_onnx(d / "tiny.pt", d / "tiny.onnx")
    video = d / "belt.avi"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (160, 120))
    for i in range(12):
        w.write(np.full((120, 160, 3), BELT + i, np.uint8))
    w.release()
    for p in (d, *d.iterdir()):
        p.chmod(0o755 if p.is_dir() else 0o644)
    return Kit(d, onnx, d / "tiny.pt", video)


def line_video(path: Path, parts: list[tuple[int, bool]], frames: int, size=(320, 120), speed: int = 8) -> Path:
    """A drawn belt: each part (start frame, defect) is a 40 px square moving right at ``speed`` px/frame."""
    w, h = size
    rng = np.random.default_rng(0)
    wr = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, size)
    assert wr.isOpened(), path
    for f in range(frames):
        img = np.full((h, w, 3), BELT, np.uint8) + rng.integers(0, 10, (h, w, 3), dtype=np.uint8)
        for start, defect in parts:
            x = -40 + (f - start) * speed
            if f >= start and x < w:
                img[40:80, max(0, x) : max(0, x + 40)] = DEFECT_GRAY if defect else OK_GRAY
        wr.write(img)
    wr.release()
    return path


def run_cli(*argv: str, cwd: Path | None = None, env: dict | None = None, user: str | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess:
    """`python -m inspector ARGV` in a child (as ``user`` through setpriv when given); no display."""
    e = {**os.environ, **(env or {})}
    e.pop("DISPLAY", None)
    e["PYTHONPATH"] = os.pathsep.join(filter(None, [env.get("PYTHONPATH") if env else None, str(ROOT)]))
    cmd = [sys.executable, "-m", "inspector", *argv]
    if user is not None:
        cmd = ["setpriv", f"--reuid={user}", "--regid=nogroup", "--clear-groups", *cmd]
        e["HOME"] = "/tmp"
    return subprocess.run(cmd, cwd=cwd, env=e, capture_output=True, text=True, errors="replace",
                          timeout=timeout)


def corrupt_jpeg_frames(path: Path, which: tuple[int, ...]) -> Path:
    """Overwrite the start of the chosen JPEG frames of an MJPG AVI so they cannot be decoded (bit rot, a bad
    USB transfer): the container stays valid, the frames do not."""
    data = bytearray(path.read_bytes())
    starts = [i for i in range(len(data) - 2) if data[i : i + 3] == b"\xff\xd8\xff"]
    for k in which:
        data[starts[k] : starts[k] + 300] = bytes(300)
    path.write_bytes(bytes(data))
    return path


def write_config(path: Path, kit: Kit, uri: str, extra: str = "") -> Path:
    """The YAML twin of faults_line.line_config for `inspector run` in a child process."""
    path.write_text(
        f"source:\n  uri: {uri}\n"
        "roi:\n  direction: right\n  trigger: 0.5\n"
        "detection:\n  method: threshold\n  threshold: 100\n  min_area: 800\n"
        f"model:\n  path: {kit.onnx}\n  threshold: 0.99\n"
        "gate:\n  camera_to_gate_mm: 60\n  belt_speed_mm_s: 200\n  worst_latency_ms: 50\n  heartbeat_ms: 40\n"
        "  link_timeout_ms: 200\n  ack_timeout_ms: 30\n  pulse_ms: 20\n"
        "display:\n  enabled: 'off'\n" + extra
    )
    return path

"""What the fault and bad-input tests run on: a tiny exported model, a short line video, the CLI as a child.

A module (not conftest) so the doc generator in test_faults_bad_input.py can build the same kit outside
pytest. Everything is real: an untrained SeedCNN exported to ONNX (the real backend and file format), an MJPG
video drawn with OpenCV, `python -m inspector` in a subprocess.

Also an in-process line for fault injection (:class:`Line`): real capture thread, real pipeline, real ONNX
engine, the real gate actuator over a pty pair to the gate simulator, the real SQLite defect log; only the
fault is injected. Used where the fault must be timed against what the pipeline is doing (a source frozen
while a part is in flight, an engine that fails on one batch); faults that need no such timing go through
`inspector run`.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from engines.base import load_engine
from inspector.capture import CaptureThread
from inspector.config import InspectorConfig
from inspector.defectlog import open_log
from inspector.gate import open_actuator
from inspector.gate.sim import GateSimulator, PtyLink
from inspector.pipeline import Pipeline, run_loop
from inspector.records import Part, Verdict

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


def run_cli(
    *argv: str,
    cwd: Path | None = None,
    env: dict | None = None,
    user: str | None = None,
    timeout: float = 60,
    python_c: bool = False,
) -> subprocess.CompletedProcess:
    """`python -m inspector ARGV` in a child (as ``user`` through setpriv when given); no display.
    ``python_c``: `python -c ARGV[0] ARGV[1:]` instead (a probe run the same way)."""
    e = {**os.environ, **(env or {})}
    e.pop("DISPLAY", None)
    e["PYTHONPATH"] = os.pathsep.join(filter(None, [env.get("PYTHONPATH") if env else None, str(ROOT)]))
    cmd = [sys.executable, "-c", *argv] if python_c else [sys.executable, "-m", "inspector", *argv]
    if user is not None:
        cmd = ["setpriv", f"--reuid={user}", "--regid=nogroup", "--clear-groups", *cmd]
        e["HOME"] = "/tmp"
    return subprocess.run(cmd, cwd=cwd, env=e, capture_output=True, text=True, errors="replace", timeout=timeout)


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
    """The YAML twin of line_config for `inspector run` in a child process."""
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


# --- the in-process line ------------------------------------------------------------------------------------
# 300 ms of belt travel camera -> gate; a dead link noticed within 200 ms; short timeouts keep tests quick
GATE = dict(
    camera_to_gate_mm=60.0,
    belt_speed_mm_s=200.0,
    worst_latency_ms=50.0,
    heartbeat_ms=40.0,
    link_timeout_ms=200.0,
    ack_timeout_ms=30.0,
    pulse_ms=20.0,
)
# the drawn line of faults_kit.line_video: 40 px squares on a dark belt, moving right
DETECT = dict(method="threshold", threshold=100, min_area=800)


def line_config(tmp: Path, kit: Kit, uri: str, **sections: dict) -> InspectorConfig:
    """Every part OK unless the fault says otherwise: threshold 0.99 over an untrained model's ~0.5 scores."""
    cfg = {
        "source": {"uri": uri},
        "roi": {"direction": "right", "trigger": 0.5},
        "detection": DETECT,
        "model": {"path": str(kit.onnx), "threshold": 0.99},
        "log": {"db": str(tmp / "log" / "defects.db"), "ok_sample_fraction": 1.0},
        "display": {"enabled": "off"},
    }
    for k, v in sections.items():
        cfg[k] = {**cfg.get(k, {}), **v}
    return InspectorConfig.model_validate(cfg)


class Parts:
    """A sink that keeps every part (the inspection thread's view of the verdicts)."""

    def __init__(self) -> None:
        self.parts: list[Part] = []

    def on_part(self, part: Part) -> None:
        self.parts.append(part)

    def close(self) -> None:
        pass

    def by_verdict(self, v: Verdict) -> list[Part]:
        return [p for p in self.parts if p.verdict is v]


class Line:
    def __init__(
        self, tmp: Path, kit: Kit, uri: str, *, engine: Any = None, gate: dict | None = None, **sections: dict
    ) -> None:
        self.link = PtyLink(tmp / "ttyGATE")
        g = {**GATE, **(gate or {})}
        self.cfg = line_config(tmp, kit, uri, gate={**g, "port": self.link.port}, **sections)
        self.sim = GateSimulator(
            self.link, record=tmp / "gate.jsonl", link_timeout_ms=g["link_timeout_ms"], heartbeat_ms=g["heartbeat_ms"]
        ).start()
        self.engine = engine if engine is not None else load_engine(kit.onnx)
        self.parts = Parts()
        self.dlog = open_log(self.cfg.log, "model", "config")
        self.gate = open_actuator(self.cfg.gate, on_result=self.dlog.gate_result)
        self.pipeline = Pipeline(self.cfg, self.engine, [self.gate, self.parts, self.dlog])
        self.capture: CaptureThread | None = None
        self.closed = False

    def run(self, view: Any = None, timeout_s: float = 30.0):
        """Run until the source ends or ``view`` says stop; a watchdog stops a hung run after ``timeout_s``."""
        assert self.gate.running.wait(5), "the gate controller never reached RUN"
        stop = threading.Event()
        timer = threading.Timer(timeout_s, stop.set)
        timer.start()
        try:
            self.capture = CaptureThread(self.cfg.source).start()
            return run_loop(self.pipeline, self.capture, view=view, stop=stop)
        finally:
            timer.cancel()
            self.close()

    def close(self) -> None:
        """The order of `inspector run`: capture, then the gate (it drains parts on the belt), then the log."""
        if self.closed:
            return
        self.closed = True
        if self.capture is not None:
            self.capture.close()
        self.gate.close()
        self.dlog.close()
        self.engine.close() if hasattr(self.engine, "close") else None
        self.sim.close()
        self.link.close()

    def rows(self) -> dict[int, dict]:
        """part_id -> defect log row."""
        con = sqlite3.connect(self.cfg.log.db)
        con.row_factory = sqlite3.Row
        try:
            return {r["part_id"]: dict(r) for r in con.execute("SELECT * FROM parts")}
        finally:
            con.close()


class Hook:
    """A view that calls ``fn(pipeline_view)`` on every frame; stop when it returns False."""

    paused = False

    def __init__(self, fn: Callable[[Any], bool]) -> None:
        self.fn = fn

    def update(self, view, stats) -> bool:
        return self.fn(view)

    def close(self) -> None:
        pass


def check_fail_safe(line: Line) -> dict[int, dict]:
    """What every fault case must keep: one log row per part, every part without a verdict rejected (sent to
    the gate as a reject, and not passed), its reason on record. Returns the rows."""
    rows = line.rows()
    assert sorted(rows) == sorted(p.part_id for p in line.parts.parts), "a part has no defect log row"
    for p in line.parts.by_verdict(Verdict.NO_VERDICT):
        r = rows[p.part_id]
        assert p.rejected and p.reason, p
        assert r["verdict"] == "no_verdict" and r["reason"] == p.reason, r
        assert r["reject_sent"] == 1 or r["gate_status"] == "failsafe", r
        assert r["gate_status"] in ("fired", "failsafe", "unconfirmed"), r
    return rows

"""An in-process line for fault injection: real capture thread, real pipeline, real ONNX engine, the real gate
actuator over a pty pair to the gate simulator, the real SQLite defect log. Only the fault is injected.

Used where the fault must be timed against what the pipeline is doing (a source frozen while a part is in
flight, an engine that fails on one batch); faults that need no such timing go through `inspector run`.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from faults_kit import Kit

from engines.base import load_engine
from inspector.capture import CaptureThread
from inspector.config import InspectorConfig
from inspector.defectlog import open_log
from inspector.gate import open_actuator
from inspector.gate.sim import GateSimulator, PtyLink
from inspector.pipeline import Pipeline, run_loop
from inspector.records import Part, Verdict

# 300 ms of belt travel camera -> gate; a dead link noticed within 200 ms; short timeouts keep tests quick
GATE = dict(camera_to_gate_mm=60.0, belt_speed_mm_s=200.0, worst_latency_ms=50.0, heartbeat_ms=40.0,
            link_timeout_ms=200.0, ack_timeout_ms=30.0, pulse_ms=20.0)
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
    def __init__(self, tmp: Path, kit: Kit, uri: str, *, engine: Any = None, gate: dict | None = None,
                 **sections: dict) -> None:
        self.link = PtyLink(tmp / "ttyGATE")
        g = {**GATE, **(gate or {})}
        self.cfg = line_config(tmp, kit, uri, gate={**g, "port": self.link.port}, **sections)
        self.sim = GateSimulator(self.link, record=tmp / "gate.jsonl", link_timeout_ms=g["link_timeout_ms"],
                                 heartbeat_ms=g["heartbeat_ms"]).start()
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

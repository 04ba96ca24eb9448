"""Gate test kit (imported by the tests; fixtures in conftest.py): a real pty pair (PtyLink), the gate
simulator on it, and the actuator opened on its path."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from inspector.config import GateConfig
from inspector.gate.actuator import GateActuator, GateResult
from inspector.gate.sim import GateSimulator, PtyLink
from inspector.records import Part, Verdict

FRAME_NS = 33_000_000  # one frame interval at 30 fps: the required firing accuracy

# 400 ms of belt travel; a dead link is noticed within 300 ms; every timeout short so tests stay quick, with
# room for a shared, loaded test machine
FAST = dict(
    camera_to_gate_mm=80.0,
    belt_speed_mm_s=200.0,
    worst_latency_ms=50.0,
    heartbeat_ms=50.0,
    link_timeout_ms=300.0,
    ack_timeout_ms=30.0,
    pulse_ms=20.0,
)


class Results:
    """GateResult callback target; wait on a count with a timeout (no sleep-then-assert)."""

    def __init__(self) -> None:
        self.by_part: dict[int, GateResult] = {}
        self._cond = threading.Condition()

    def __call__(self, r: GateResult) -> None:
        with self._cond:
            self.by_part[r.part_id] = r
            self._cond.notify_all()

    def wait(self, n: int, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: len(self.by_part) >= n, timeout)


def make_part(i: int, defect: bool, latency_ms: float = 20.0, crop: bool = False) -> Part:
    now = time.monotonic_ns()
    img = np.full((48, 48, 3), 100 + (i % 100), np.uint8) if crop else None
    return Part(
        i,
        i,
        now - int(latency_ms * 1e6),
        (0, 0, 48, 48),
        Verdict.DEFECT if defect else Verdict.OK,
        0.9 if defect else 0.1,
        "defect" if defect else "ok",
        t_infer_start_ns=now - 5_000_000,
        t_verdict_ns=now,
        crop=img,
    )


class Line:
    def __init__(self, tmp_path: Path, **overrides: object) -> None:
        self.cfg = GateConfig(**{**FAST, **overrides})
        self.link = PtyLink(tmp_path / "ttyGATE")
        self.sim = GateSimulator(
            self.link,
            record=tmp_path / "gate.jsonl",
            link_timeout_ms=self.cfg.link_timeout_ms,
            heartbeat_ms=self.cfg.heartbeat_ms,
        ).start()
        self.results = Results()
        self.extra_sinks: list = []
        self.actuator = GateActuator(self.cfg, self.link.port, self._result, reconnect_max_s=0.1)

    def _result(self, r: GateResult) -> None:
        self.results(r)
        for cb in self.extra_sinks:
            cb(r)

    def wait_running(self, timeout: float = 3.0) -> None:
        assert self.actuator.running.wait(timeout), f"controller never reached RUN: {self.sim.events[-5:]}"

    def close(self) -> None:
        self.actuator.close(drain_s=0.0)
        self.sim.close()
        self.link.close()


class SimProcess:
    """`inspector gate-sim` in its own process (no GIL shared with the inspector, like a real controller)."""

    def __init__(self, tmp_path: Path) -> None:
        self.port = str(tmp_path / "ttyGATEPROC")
        self.record = tmp_path / "gate-proc.jsonl"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "inspector",
                "gate-sim",
                "--port",
                self.port,
                "--record",
                str(self.record),
                "--duration",
                "60",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        first = self.proc.stdout.readline()  # blocks until it is listening (or exits)
        assert "listening on" in first, (first, self.proc.stderr.read() if self.proc.poll() is not None else "")

    def events(self) -> list[dict]:
        return [json.loads(line) for line in self.record.read_text().splitlines() if line.strip()]

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)

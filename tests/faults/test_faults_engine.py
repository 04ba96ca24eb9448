"""Engine faults: inference that raises, inference slower than the part's time to the gate.

The engine is the real ONNX model with the fault added around one call (the only fake here: it stands for a
GPU that errors or a CPU that is starved). Everything downstream is real: gate actuator over a pty to the
simulated controller, SQLite defect log.
"""

from __future__ import annotations

import time
from pathlib import Path

from faults_kit import Line, check_fail_safe, line_video

from engines.base import load_engine
from inspector.records import Verdict

PARTS = [(0, False), (14, False), (28, False), (42, False)]  # all OK for this model at threshold 0.99


class FaultyEngine:
    """The real engine; call number ``n`` (1-based) raises or sleeps first."""

    def __init__(
        self, path: Path, *, raise_on: int | None = None, sleep_on: int | None = None, sleep_s: float = 0.0
    ) -> None:
        self.engine = load_engine(path)
        self.meta, self.path, self.backend = self.engine.meta, self.engine.path, self.engine.backend
        self.raise_on, self.sleep_on, self.sleep_s = raise_on, sleep_on, sleep_s
        self.calls = 0
        self.last_maps = None

    def infer(self, batch):
        self.calls += 1
        if self.calls == self.raise_on:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        if self.calls == self.sleep_on:
            time.sleep(self.sleep_s)
        return self.engine.infer(batch)

    def close(self) -> None:
        self.engine.close()


def test_engine_that_raises_rejects_that_batch_and_the_line_goes_on(kit, tmp_path: Path) -> None:
    """The second inference call raises.

    Expected: the part in that batch gets NO_VERDICT "inference failed: CUDA error: ...", is sent to the gate
    as a reject and fired, and logged with the reason; the other three parts are judged OK and pass the gate;
    the run is not stopped by the error."""
    engine = FaultyEngine(kit.onnx, raise_on=2)
    video = line_video(tmp_path / "line.avi", PARTS, 95)
    line = Line(tmp_path, kit, str(video), engine=engine)
    line.run()
    verdicts = [(p.verdict, p.reason) for p in line.parts.parts]
    reason = "inference failed: CUDA error: an illegal memory access was encountered"
    assert verdicts == [(Verdict.OK, None), (Verdict.NO_VERDICT, reason), (Verdict.OK, None), (Verdict.OK, None)]
    rows = check_fail_safe(line)
    failed = line.parts.parts[1].part_id
    assert rows[failed]["gate_status"] == "fired", rows[failed]
    assert [r["gate_status"] for i, r in sorted(rows.items()) if i != failed] == ["passed"] * 3


def test_inference_slower_than_the_belt_fires_the_gate_at_once(kit, tmp_path: Path) -> None:
    """Inference for the second part takes 0.45 s; the part reaches the gate 0.3 s after capture.

    Expected: the part is judged OK, but its verdict is too late to let it pass safely: the gate rejects it at
    once (late_policy reject): row verdict ok, gate_status fired, reject_sent 1, gate_reason "verdict ... too
    late", latency over 300 ms. Parts judged in time pass. Nothing is lost."""
    engine = FaultyEngine(kit.onnx, sleep_on=2, sleep_s=0.45)
    video = line_video(tmp_path / "line.avi", PARTS, 95)
    line = Line(tmp_path, kit, str(video), engine=engine, source={"realtime": True})
    line.run()
    parts = line.parts.parts
    assert [p.verdict for p in parts] == [Verdict.OK] * 4, parts
    slow = parts[1]
    assert slow.latency_ms > 300, slow.latency_ms
    rows = check_fail_safe(line)
    r = rows[slow.part_id]
    assert (r["verdict"], r["gate_status"], r["reject_sent"]) == ("ok", "fired", 1), r
    assert r["gate_reason"].startswith("verdict") and r["gate_reason"].endswith("too late"), r
    in_time = [rows[p.part_id]["gate_status"] for p in parts if p.latency_ms < 250]
    assert in_time and set(in_time) == {"passed"}, rows

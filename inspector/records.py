"""The records that flow through the line: capture -> preprocess -> infer -> decide -> actuate -> log.

Timestamps are ``time.monotonic_ns()``; a part's record is also its latency breakdown.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

import numpy as np


class Verdict(str, Enum):
    OK = "ok"
    DEFECT = "defect"
    NO_VERDICT = "no_verdict"  # rejected at the gate, with a reason


@dataclass(slots=True)
class Frame:
    seq: int  # sequence number from the source, 0-based, gaps = dropped frames
    t_capture_ns: int  # monotonic time the frame was captured (or read from a file)
    image: np.ndarray  # BGR uint8
    pos_ms: float | None = None  # position in a recorded file


@dataclass(slots=True)
class Part:
    """One part, from the frame its verdict was made in to the gate and the log."""

    part_id: int
    frame_index: int
    t_capture_ns: int
    bbox: tuple[int, int, int, int]  # x, y, w, h in full-frame px
    verdict: Verdict = Verdict.NO_VERDICT
    score: float | None = None  # P(defect)
    cls: str | None = None
    reason: str | None = None  # why no_verdict, or why rejected
    t_infer_start_ns: int | None = None
    t_verdict_ns: int | None = None
    crop: np.ndarray | None = None
    sharpness: float | None = None  # variance of the Laplacian of the model's view of the crop (None: not judged)
    timings: dict[str, float] = field(default_factory=dict)  # extra stage timings, ms
    anomaly_map: np.ndarray | None = None  # anomaly models: scores in [0, 1] over the model's view (56 x 56 at most)

    @property
    def rejected(self) -> bool:
        """Defects and parts without a verdict leave the line."""
        return self.verdict is not Verdict.OK

    @property
    def latency_ms(self) -> float | None:
        if self.t_verdict_ns is None:
            return None
        return (self.t_verdict_ns - self.t_capture_ns) / 1e6


class PartSink(Protocol):
    """Anything downstream of the decision: the gate actuator, the defect log, the events file.

    ``on_part`` is called on the inspection thread and must not block; ``close`` flushes and stops.
    Optional: ``on_line_state(ok: bool, reason: str)``, called (non-blocking) when the source stalls (False,
    "SOURCE_STALL") and when frames flow again (True): parts pass the camera unseen meanwhile, so the gate
    actuator holds the controller in fail-safe. Sinks without it need nothing.
    """

    def on_part(self, part: Part) -> None: ...

    def close(self) -> None: ...

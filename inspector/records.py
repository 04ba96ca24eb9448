"""The records that flow through the line: capture -> preprocess -> infer -> decide -> actuate -> log.

Timestamps are ``time.monotonic_ns()`` (one unit everywhere); a part's record is also its latency breakdown.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

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
class GateResult:
    """What the gate did with one part, stamped by the gate actuator into :attr:`Part.gate` and reported once
    (to the defect log), pulse_ms + link_timeout_ms after its gate time. Stamps are ``time.monotonic_ns()``."""

    part_id: int
    rejected: bool  # a reject was wanted (defect, no verdict, or a late verdict under late_policy=reject)
    status: str  # passed | fired | failsafe | unconfirmed | missed
    gate_ns: int  # when the part reaches the gate (monotonic)
    t_capture_ns: int = 0
    sent_ns: int | None = None  # first REJ written
    acked_ns: int | None = None
    fired_ns: int | None = None  # FIRED echo received
    fire_late_ms: int | None = None  # as the controller reported it
    late_verdict: bool = False
    retries: int = 0
    nacks: int = 0
    reason: str | None = None


@dataclass(slots=True)
class Part:
    """One part, camera to log: each stage stamps this one record, and :meth:`to_row` is its one serialisation
    (the events file, the defect log and MQTT all start from it).

    Every stamp is ``time.monotonic_ns()``; durations are derived from them (``*_ms`` properties), never stored.
    The gate stamps its outcome (sent / acked / fired) into ``gate`` on the same record.
    """

    part_id: int
    frame_index: int
    t_capture_ns: int  # its frame was captured (or read from a file)
    bbox: tuple[int, int, int, int]  # x, y, w, h in full-frame px
    verdict: Verdict = Verdict.NO_VERDICT
    score: float | None = None  # P(defect)
    cls: str | None = None
    reason: str | None = None  # why no_verdict, or why rejected
    t_infer_start_ns: int | None = None  # its batch's preprocessing began
    t_verdict_ns: int | None = None  # the verdict was made
    crop: np.ndarray | None = None
    sharpness: float | None = None  # variance of the Laplacian of the model's view of the crop (None: not judged)
    t_detect_ns: int | None = None  # segmentation + tracking of the frame that triggered it were done
    t_engine_start_ns: int | None = None  # the engine call for its batch began
    t_engine_end_ns: int | None = None  # ... and returned
    batch_size: int | None = None  # parts in its batch
    gate: GateResult | None = None  # the gate's outcome (sent_ns, acked_ns, fired_ns), once known
    anomaly_map: np.ndarray | None = None  # anomaly models: scores in [0, 1] over the model's view (56 x 56 at most)

    @property
    def rejected(self) -> bool:
        """Defects and parts without a verdict leave the line."""
        return self.verdict is not Verdict.OK

    @property
    def latency_ms(self) -> float | None:
        """Capture to verdict."""
        return _ms(self.t_capture_ns, self.t_verdict_ns)

    @property
    def infer_ms(self) -> float | None:
        """Preprocessing + engine + decision for its batch (the defect log's ``infer_ms``)."""
        return _ms(self.t_infer_start_ns, self.t_verdict_ns)

    @property
    def engine_ms(self) -> float | None:
        """The engine call alone, for its whole batch (the metrics' inference histogram)."""
        return _ms(self.t_engine_start_ns, self.t_engine_end_ns)

    def stage_ms(self) -> dict[str, float]:
        """The latency breakdown in ms, stage by stage, for the stamps this part has."""
        out = {
            "capture_to_detect_ms": _ms(self.t_capture_ns, self.t_detect_ns),
            "preprocess_ms": _ms(self.t_infer_start_ns, self.t_engine_start_ns),
            "engine_ms": self.engine_ms,
            "engine_to_verdict_ms": _ms(self.t_engine_end_ns, self.t_verdict_ns),
        }
        return {k: round(v, 3) for k, v in out.items() if v is not None}

    def to_row(self) -> dict[str, Any]:
        """The part as one flat record: the JSONL event, the MQTT payload and the defect log row all use it.

        part_id, frame_index, t_capture (monotonic s), verdict, score (P(defect)), class, latency_ms (capture to
        verdict), bbox (x, y, w, h), reason (why no verdict, else null), sharpness (null when never cropped).
        """
        score = None if self.score is None or not math.isfinite(self.score) else round(float(self.score), 6)
        lat = self.latency_ms
        return {
            "part_id": self.part_id,
            "frame_index": self.frame_index,
            "t_capture": round(self.t_capture_ns / 1e9, 6),
            "verdict": self.verdict.value,
            "score": score,
            "class": self.cls,
            "latency_ms": None if lat is None else round(lat, 3),
            "bbox": [int(v) for v in self.bbox],
            "reason": self.reason,
            "sharpness": None if self.sharpness is None else round(self.sharpness, 1),
        }


def _ms(start_ns: int | None, end_ns: int | None) -> float | None:
    return None if start_ns is None or end_ns is None else (end_ns - start_ns) / 1e6


class PartSink(Protocol):
    """Anything downstream of the decision: the gate actuator, the defect log, the events file.

    ``on_part`` is called on the inspection thread and must not block; ``close`` flushes and stops.
    Optional: ``on_line_state(ok: bool, reason: str)``, called (non-blocking) when the source stalls (False,
    "SOURCE_STALL") and when frames flow again (True): parts pass the camera unseen meanwhile, so the gate
    actuator holds the controller in fail-safe. Sinks without it need nothing.
    """

    def on_part(self, part: Part) -> None: ...

    def close(self) -> None: ...

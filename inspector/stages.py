"""The typed interfaces between the line's stages, so that the pipeline and the views name what they need
instead of probing objects with ``getattr``.

- :class:`Capture`: where the inspection loop gets its frames (the capture thread; a scripted one in tests).
- :class:`Sink`: anything downstream of the decision (gate, events, defect log, summary, metrics, MQTT).
- :class:`LineObserver`: a sink that must know when the camera stops seeing the line (the gate holds).
- :class:`GateMonitor`: what monitoring reads from a gate (its :meth:`state`).
- :class:`Undistorter`: the lens correction applied to each frame before anything else.
"""

from __future__ import annotations

import threading
from typing import Any, Protocol, runtime_checkable

import numpy as np

from inspector.records import Frame, PartSink

#: anything downstream of the decision: ``on_part`` (inspection thread, never blocks) and ``close``
Sink = PartSink


class CaptureCounters(Protocol):
    """A capture's running totals (:class:`inspector.capture.CaptureStats`)."""

    frames: int
    dropped: int
    stalls: int
    reopens: int
    corrupt: int


class Capture(Protocol):
    """The inspection loop's source of frames."""

    ended: threading.Event  # set once the source has ended (a file's end, a live source given up)
    live: bool  # a camera or stream (not a recording)
    stats: CaptureCounters

    @property
    def stall_count(self) -> int: ...

    def get(self, timeout: float) -> Frame | None: ...


@runtime_checkable
class LineObserver(Protocol):
    """Told (non-blocking) when the source stalls (False, "SOURCE_STALL") and when frames flow again (True)."""

    def on_line_state(self, ok: bool, reason: str) -> None: ...


class GateMonitor(Protocol):
    """The gate as monitoring reads it, from any thread: :meth:`GateActuator.state`."""

    def state(self) -> dict[str, Any]: ...


class Undistorter(Protocol):
    def apply(self, frame: np.ndarray) -> np.ndarray: ...

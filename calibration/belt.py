"""Belt speed from tracked parts, its spread, and the gate delay it implies.

Pure arithmetic on tracks, each a list of (t_seconds, x_px, y_px) centre positions of one part: the runtime's
own detector and tracker produce them (``inspector calibrate belt``), so the speed is measured on exactly
what the line will see. Each track's speed is the least-squares slope of its position along the belt
direction over time; the belt speed is the median over parts, with the spread reported.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ground.errors import UserError

_AXIS = {"right": (0, 1.0), "left": (0, -1.0), "down": (1, 1.0), "up": (1, -1.0)}


@dataclass(frozen=True)
class BeltMeasurement:
    parts: int  # tracks used
    speed_px_s: float  # median over parts
    std_px_s: float
    min_px_s: float
    max_px_s: float
    px_per_mm: float | None = None
    camera_to_gate_mm: float | None = None

    @property
    def speed_mm_s(self) -> float | None:
        return None if self.px_per_mm is None else self.speed_px_s / self.px_per_mm

    @property
    def spread_pct(self) -> float:
        """Standard deviation across parts, as a percentage of the speed."""
        return 100.0 * self.std_px_s / self.speed_px_s

    @property
    def gate_delay_ms(self) -> float | None:
        """Time from the trigger line to the gate: camera_to_gate_mm / belt speed."""
        mm_s = self.speed_mm_s
        if mm_s is None or self.camera_to_gate_mm is None:
            return None
        return 1000.0 * self.camera_to_gate_mm / mm_s

    def to_dict(self) -> dict[str, float | int | None]:
        return {
            "parts": self.parts,
            "speed_px_s": self.speed_px_s,
            "std_px_s": self.std_px_s,
            "min_px_s": self.min_px_s,
            "max_px_s": self.max_px_s,
            "spread_pct": self.spread_pct,
            "px_per_mm": self.px_per_mm,
            "speed_mm_s": self.speed_mm_s,
            "camera_to_gate_mm": self.camera_to_gate_mm,
            "gate_delay_ms": self.gate_delay_ms,
        }


def track_speed(points: Sequence[tuple[float, float, float]], direction: str) -> float:
    """Least-squares speed along the belt direction (px/s, positive = with the belt) of one track."""
    arr = np.asarray(points, dtype=np.float64)
    axis, sign = _AXIS[direction]
    t = arr[:, 0] - arr[:, 0].mean()
    if not np.any(t):
        raise ValueError("all points at one time")
    pos = sign * arr[:, 1 + axis]
    return float(np.dot(t, pos - pos.mean()) / np.dot(t, t))


def measure_belt(
    tracks: Mapping[object, Sequence[tuple[float, float, float]]],
    direction: str = "right",
    *,
    px_per_mm: float | None = None,
    camera_to_gate_mm: float | None = None,
    min_points: int = 5,
) -> BeltMeasurement:
    """Speed over parts seen in at least ``min_points`` frames; a clear error when there are none."""
    if direction not in _AXIS:
        raise UserError(f"belt direction {direction!r}: expected one of {', '.join(_AXIS)}")
    speeds = [track_speed(pts, direction) for pts in tracks.values() if len(pts) >= min_points]
    speeds = [s for s in speeds if s > 0]  # a part moving against the belt is not a belt measurement
    if not speeds:
        raise UserError(
            f"no part was tracked across {min_points} or more frames moving {direction}; check the video, the "
            "ROI/direction and the detection settings (a part must stand out from the belt)"
        )
    s = np.asarray(speeds)
    return BeltMeasurement(
        parts=len(s),
        speed_px_s=float(np.median(s)),
        std_px_s=float(s.std(ddof=1)) if len(s) > 1 else 0.0,
        min_px_s=float(s.min()),
        max_px_s=float(s.max()),
        px_per_mm=px_per_mm,
        camera_to_gate_mm=camera_to_gate_mm,
    )

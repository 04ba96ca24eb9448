"""Region of interest, trigger line, belt direction and scale (px/mm): the ROI artefact and its geometry.

Made with ``inspector calibrate roi`` (a window, or numeric flags when headless) and read by the runtime
through ``roi.file`` in the configuration. The artefact records the frame size; another resolution is refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from calibration.artefact import Artefact, check_frame_size, load_artefact, save_artefact
from ground.errors import UserError

Direction = Literal["left", "right", "up", "down"]
DIRECTIONS: tuple[str, ...] = ("right", "down", "left", "up")


class Reference(BaseModel):
    """Two image points a known distance apart on the belt plane: the scale."""

    model_config = ConfigDict(extra="forbid")

    p1: tuple[float, float] = Field(description="first end, px (x, y)")
    p2: tuple[float, float] = Field(description="second end, px (x, y)")
    mm: float = Field(gt=0, description="real distance between the two points")

    @property
    def px(self) -> float:
        return math.dist(self.p1, self.p2)


class RoiCalibration(Artefact):
    """The ROI artefact (``roi.yaml``); field names match the runtime's ``roi`` section."""

    kind: Literal["roi"] = "roi"
    x: int = Field(ge=0, description="ROI left edge, px")
    y: int = Field(ge=0, description="ROI top edge, px")
    width: int = Field(gt=0, description="ROI width, px")
    height: int = Field(gt=0, description="ROI height, px")
    direction: Direction = Field(description="belt travel in the image")
    trigger: float = Field(gt=0, lt=1, description="trigger line as a fraction of the ROI along the direction")
    px_per_mm: float | None = Field(None, gt=0, description="image scale on the belt plane")
    reference: Reference | None = Field(None, description="the measurement px_per_mm came from")

    @model_validator(mode="after")
    def _inside(self) -> RoiCalibration:
        if (problem := outside_frame(self.x, self.y, self.width, self.height, self.frame_size)) is not None:
            raise ValueError(problem)
        if self.reference is not None and self.reference.px <= 0:
            raise ValueError("reference points coincide; mark two distinct points")
        return self

    def trigger_line(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """The trigger line's two end points in frame px (for drawing)."""
        return trigger_line(self.x, self.y, self.width, self.height, self.direction, self.trigger)


def outside_frame(x: int, y: int, w: int | None, h: int | None, frame_size: tuple[int, int]) -> str | None:
    """The one rule for an ROI (`inspector calibrate roi` and `inspector run` alike): it lies inside the frame.

    ``w``/``h`` None means "to the frame's edge" (a start past the edge leaves no area: the caller says so).
    Clipping it silently instead would move the trigger line, which is a fraction of the ROI: parts would be
    judged at another place than the one calibrated."""
    fw, fh = frame_size
    over = []
    if w is not None and x + w > fw:
        over.append(f"its right edge is at x={x + w}")
    if h is not None and y + h > fh:
        over.append(f"its bottom edge is at y={y + h}")
    if not over:
        return None
    return (
        f"ROI x={x} y={y} width={w} height={h} reaches outside the {fw}x{fh} frame ({' and '.join(over)}); "
        "make it fit the frame (`inspector calibrate roi` draws one on a live frame)"
    )


def trigger_line(
    x: int, y: int, w: int, h: int, direction: str, trigger: float
) -> tuple[tuple[int, int], tuple[int, int]]:
    """End points of the trigger line: across the belt, ``trigger`` of the way along the travel direction."""
    if direction in ("right", "left"):
        f = trigger if direction == "right" else 1 - trigger
        lx = int(round(x + f * w))
        return (lx, y), (lx, y + h)
    f = trigger if direction == "down" else 1 - trigger
    ly = int(round(y + f * h))
    return (x, ly), (x + w, ly)


def trigger_from_point(x: int, y: int, w: int, h: int, direction: str, point: tuple[float, float]) -> float:
    """The trigger fraction for a clicked point (the inverse of :func:`trigger_line`), kept inside (0, 1)."""
    if direction in ("right", "left"):
        f = (point[0] - x) / w
        f = f if direction == "right" else 1 - f
    else:
        f = (point[1] - y) / h
        f = f if direction == "down" else 1 - f
    return min(max(f, 0.01), 0.99)


def rect_from_drag(p0: tuple[float, float], p1: tuple[float, float], frame_size: tuple[int, int]) -> tuple[int, ...]:
    """Normalised (x, y, w, h) from a drag in any direction, clipped to the frame."""
    fw, fh = frame_size
    x0, x1 = sorted((min(max(p0[0], 0), fw), min(max(p1[0], 0), fw)))
    y0, y1 = sorted((min(max(p0[1], 0), fh), min(max(p1[1], 0), fh)))
    return int(round(x0)), int(round(y0)), int(round(x1 - x0)), int(round(y1 - y0))


def parse_rect(text: str) -> tuple[int, int, int, int]:
    """'x,y,w,h' -> ints; a clear error otherwise."""
    try:
        x, y, w, h = (int(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"--roi {text!r}: expected x,y,w,h in px, e.g. 0,100,640,280") from None
    if w <= 0 or h <= 0 or x < 0 or y < 0:
        raise UserError(f"--roi {text!r}: x, y must be >= 0 and w, h > 0")
    return x, y, w, h


def make_roi(
    frame_size: tuple[int, int],
    rect: tuple[int, int, int, int],
    direction: str = "right",
    trigger: float = 0.5,
    ref_px: float | None = None,
    ref_mm: float | None = None,
    reference: Reference | None = None,
) -> RoiCalibration:
    """Build and validate an ROI artefact; a reference (points or a px length) with its mm gives px/mm."""
    if (ref_px is None) != (ref_mm is None) and reference is None:
        raise UserError("--ref-px and --ref-mm go together: a length in px on the image and the same length in mm")
    px_per_mm = None
    if reference is not None:
        px_per_mm = reference.px / reference.mm
    elif ref_px is not None and ref_mm is not None:
        if ref_px <= 0 or ref_mm <= 0:
            raise UserError(f"--ref-px {ref_px} / --ref-mm {ref_mm}: both must be positive")
        px_per_mm = ref_px / ref_mm
    try:
        return RoiCalibration(
            frame_size=tuple(frame_size),
            x=rect[0],
            y=rect[1],
            width=rect[2],
            height=rect[3],
            direction=direction,
            trigger=trigger,
            px_per_mm=px_per_mm,
            reference=reference,
        )
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        first = exc.errors()[0] if hasattr(exc, "errors") else {"loc": (), "msg": str(exc)}
        msg = str(first["msg"]).removeprefix("Value error, ")
        if not first["loc"]:  # the whole ROI (outside the frame): the message names it
            raise UserError(msg) from None
        raise UserError(f"ROI: {'.'.join(str(v) for v in first['loc'])}: {msg}") from None


def save_roi(roi: RoiCalibration, path: str | Path) -> Path:
    return save_artefact(roi, path, "ROI, trigger line and scale from `inspector calibrate roi`")


def load_roi(path: str | Path, frame_size: tuple[int, int] | None = None) -> RoiCalibration:
    """For the runtime (``roi.file``): validated, and refused when made for another frame size."""
    roi = load_artefact(RoiCalibration, path)
    check_frame_size(roi, frame_size, path, "the ROI calibration")
    return roi


@dataclass
class EditorState:
    """What the ROI window has marked so far (pure state, so the editing logic is testable without a window)."""

    frame_size: tuple[int, int]
    rect: tuple[int, int, int, int]
    direction: str = "right"
    trigger: float = 0.5
    ref_points: tuple[tuple[float, float], ...] = ()
    mode: str = "roi"  # roi: drag the box; trigger: click the line; ref: click two points
    _drag_from: tuple[float, float] | None = None
    _trigger_at: tuple[float, float] | None = None  # where the trigger was clicked: it stays there

    def mouse(self, event: str, x: float, y: float) -> None:
        """event: 'down', 'move' (button held) or 'up', in frame px."""
        if self.mode == "roi":
            if event == "down":
                self._drag_from = (x, y)
            elif event in ("move", "up") and self._drag_from is not None:
                rect = rect_from_drag(self._drag_from, (x, y), self.frame_size)
                if rect[2] >= 4 and rect[3] >= 4:
                    self.rect = rect
                if event == "up":
                    self._drag_from = None
        elif event == "up" and self.mode == "trigger":
            self._trigger_at = (x, y)
            self.trigger = trigger_from_point(*self.rect, self.direction, (x, y))
        elif event == "up" and self.mode == "ref":
            pts = self.ref_points if len(self.ref_points) < 2 else ()
            self.ref_points = (*pts, (x, y))

    def key(self, ch: str) -> str | None:
        """Keys: r/t/m pick the mode, d cycles the direction; Enter or s confirms, Esc or q cancels."""
        if ch in ("r", "t", "m"):
            self.mode = {"r": "roi", "t": "trigger", "m": "ref"}[ch]
        elif ch == "d":
            self.direction = DIRECTIONS[(DIRECTIONS.index(self.direction) + 1) % len(DIRECTIONS)]
            if self._trigger_at is not None:  # keep the line through the clicked point
                self.trigger = trigger_from_point(*self.rect, self.direction, self._trigger_at)
        elif ch in ("\r", "\n", "s"):
            return "confirm"
        elif ch in ("\x1b", "q"):
            return "cancel"
        return None

    def result(self, ref_mm: float | None) -> RoiCalibration:
        ref = None
        if len(self.ref_points) == 2:
            if ref_mm is None:
                raise UserError("a reference was marked but --ref-mm (its real length) was not given")
            ref = Reference(p1=self.ref_points[0], p2=self.ref_points[1], mm=ref_mm)
        return make_roi(self.frame_size, self.rect, self.direction, self.trigger, reference=ref)

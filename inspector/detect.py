"""Finding parts on the belt: the ROI geometry and the per-frame segmentation (the hot path).

Three ways to tell a part from the belt, chosen in the configuration's ``detection`` section:

- ``threshold``: brightness, fixed or Otsu (``invert`` for parts darker than the belt);
- ``background``: difference from a learned belt image (the median of the first frames, then a slow running
  average over belt pixels only, so a part that stops is not absorbed into the background);
- ``color``: distance from the belt colour (configured, or the ROI's median colour of the first frame).

Everything works on the ROI only, into buffers allocated once, and returns boxes and centroids in full-frame
pixels.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from engines.errors import UserError
from inspector.config import DetectionConfig, RoiConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Roi:
    """The inspected rectangle in full-frame pixels, the belt direction and the trigger line."""

    x: int
    y: int
    w: int
    h: int
    direction: str = "right"
    trigger: float = 0.5  # fraction of the ROI along the belt direction

    @classmethod
    def from_config(cls, cfg: RoiConfig, frame_size: tuple[int, int]) -> Roi:
        """Clip the configured ROI to the frame; an ROI outside the frame is a configuration error."""
        fw, fh = frame_size
        values = cfg
        if cfg.file:
            values = _load_roi_file(cfg.file, frame_size)
        x, y = int(values.x), int(values.y)
        w = int(values.width) if values.width else fw - x
        h = int(values.height) if values.height else fh - y
        w, h = min(w, fw - x), min(h, fh - y)
        if w < 8 or h < 8:
            raise UserError(
                f"roi: x={x} y={y} width={values.width} height={values.height} leaves no usable area in a "
                f"{fw}x{fh} frame; fix the 'roi' section or run `inspector calibrate roi`"
            )
        return cls(x, y, w, h, str(values.direction), float(values.trigger))

    @property
    def horizontal(self) -> bool:
        return self.direction in ("left", "right")

    @property
    def length(self) -> int:
        """ROI extent along the belt, px."""
        return self.w if self.horizontal else self.h

    @property
    def trigger_px(self) -> float:
        """Trigger line position along the belt, px from the ROI's entry edge."""
        return self.trigger * self.length

    def along(self, cx: float, cy: float) -> float:
        """Full-frame point -> distance travelled along the belt from the ROI's entry edge, px."""
        if self.direction == "right":
            return cx - self.x
        if self.direction == "left":
            return self.x + self.w - cx
        if self.direction == "down":
            return cy - self.y
        return self.y + self.h - cy

    def across(self, cx: float, cy: float) -> float:
        return cy if self.horizontal else cx

    def trigger_segment(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """The trigger line's two end points in full-frame px (for drawing)."""
        t = int(round(self.trigger_px))
        if self.direction == "right":
            p = self.x + t
            return (p, self.y), (p, self.y + self.h - 1)
        if self.direction == "left":
            p = self.x + self.w - t
            return (p, self.y), (p, self.y + self.h - 1)
        if self.direction == "down":
            p = self.y + t
            return (self.x, p), (self.x + self.w - 1, p)
        p = self.y + self.h - t
        return (self.x, p), (self.x + self.w - 1, p)


def _load_roi_file(path: str, frame_size: tuple[int, int]):
    try:
        from calibration.roi import load_roi
    except ImportError:
        raise UserError(
            f"roi.file {path}: the calibration package's ROI loader is not available in this install; "
            "remove roi.file and set x/y/width/height instead"
        ) from None
    return load_roi(path, frame_size)


@dataclass(slots=True)
class Detection:
    bbox: tuple[int, int, int, int]  # x, y, w, h in full-frame px
    centroid: tuple[float, float]  # full-frame px
    area: int  # foreground px
    clipped: bool  # touches the ROI edge: the part may not be fully in view


class Detector:
    """Segment parts inside the ROI of each frame; call :meth:`detect` once per frame, in order."""

    def __init__(self, cfg: DetectionConfig, roi: Roi) -> None:
        self.cfg = cfg
        self.roi = roi
        k = cfg.blur if cfg.blur % 2 == 1 else cfg.blur + 1
        self._blur = (k, k) if cfg.blur > 0 else None
        m = max(1, int(cfg.morph))
        self._kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (m, m)) if cfg.morph > 1 else None
        self._gray = np.empty((roi.h, roi.w), np.uint8)
        self._work = np.empty((roi.h, roi.w), np.uint8)
        self._mask = np.empty((roi.h, roi.w), np.uint8)
        self._diff = np.empty((roi.h, roi.w, 3), np.float32) if cfg.method == "color" else None
        self._background: np.ndarray | None = None  # float32 (h, w), method 'background'
        self._learn: list[np.ndarray] = []
        self._belt: np.ndarray | None = (
            np.asarray(cfg.belt_color, np.float32) if cfg.belt_color is not None else None
        )
        self.frames = 0

    @property
    def ready(self) -> bool:
        """False while the background method is still learning the empty belt."""
        return self.cfg.method != "background" or self._background is not None

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Full frame (BGR or gray uint8) -> the parts in the ROI, in full-frame coordinates."""
        r = self.roi
        roi = image[r.y : r.y + r.h, r.x : r.x + r.w]
        self.frames += 1
        method = self.cfg.method
        if method == "color":
            mask = self._color_mask(roi)
        else:
            gray = self._to_gray(roi)
            if self._blur is not None:
                cv2.GaussianBlur(gray, self._blur, 0, dst=self._work)
                gray = self._work
            if method == "threshold":
                mask = self._threshold(gray, self.cfg.invert)
            else:
                mask = self._background_mask(gray)
                if mask is None:
                    return []
        if self._kernel is not None:
            cv2.morphologyEx(mask, cv2.MORPH_OPEN, self._kernel, dst=mask)
            cv2.morphologyEx(mask, cv2.MORPH_CLOSE, self._kernel, dst=mask)
        return self._blobs(mask)

    # --- segmentation ---------------------------------------------------------------------------------
    def _to_gray(self, roi: np.ndarray) -> np.ndarray:
        if roi.ndim == 2:
            np.copyto(self._gray, roi)
        elif roi.shape[2] == 1:
            np.copyto(self._gray, roi[:, :, 0])
        else:
            cv2.cvtColor(roi, cv2.COLOR_BGR2GRAY, dst=self._gray)
        return self._gray

    def _threshold(self, gray: np.ndarray, invert: bool) -> np.ndarray:
        mode = cv2.THRESH_BINARY_INV if invert else cv2.THRESH_BINARY
        t = self.cfg.threshold
        if t == "otsu":
            cv2.threshold(gray, 0, 255, mode | cv2.THRESH_OTSU, dst=self._mask)
        else:
            cv2.threshold(gray, int(t), 255, mode, dst=self._mask)
        return self._mask

    def _background_mask(self, gray: np.ndarray) -> np.ndarray | None:
        cfg = self.cfg
        if self._background is None:
            self._learn.append(gray.copy())
            if len(self._learn) < cfg.background_frames:
                return None
            self._background = np.median(np.stack(self._learn), axis=0).astype(np.float32)
            self._learn = []
            log.info("background learned from %d frames", cfg.background_frames)
        bg8 = cv2.convertScaleAbs(self._background)
        cv2.absdiff(gray, bg8, dst=self._work)
        mask = self._threshold(self._work, False)
        if cfg.background_rate > 0:
            # Learn the belt only where there is no part, so a part that stops stays a part.
            cv2.accumulateWeighted(gray, self._background, cfg.background_rate, mask=cv2.bitwise_not(mask))
        return mask

    def _color_mask(self, roi: np.ndarray) -> np.ndarray:
        if roi.ndim == 2 or roi.shape[2] == 1:
            raise UserError("detection.method 'color' needs a colour source; use 'threshold' or 'background'")
        if self._belt is None:
            self._belt = np.median(roi.reshape(-1, 3), axis=0).astype(np.float32)
            log.info("belt colour taken from the first frame: BGR %s", self._belt.round().tolist())
        src = roi
        if self._blur is not None:
            src = cv2.GaussianBlur(roi, self._blur, 0)
        diff = self._diff
        np.subtract(src, self._belt, out=diff, casting="unsafe")
        np.multiply(diff, diff, out=diff)
        dist2 = diff.sum(axis=2)
        np.greater(dist2, self.cfg.color_distance**2, out=self._mask.view(bool))
        self._mask *= 255
        return self._mask

    def _blobs(self, mask: np.ndarray) -> list[Detection]:
        n, _, stats, cents = cv2.connectedComponentsWithStats(mask, connectivity=8)
        r, cfg = self.roi, self.cfg
        out: list[Detection] = []
        for i in range(1, n):
            x, y, w, h, area = (int(v) for v in stats[i])
            if area < cfg.min_area or (cfg.max_area is not None and area > cfg.max_area):
                continue
            clipped = x <= 0 or y <= 0 or x + w >= r.w or y + h >= r.h
            cx, cy = cents[i]
            out.append(Detection((x + r.x, y + r.y, w, h), (float(cx) + r.x, float(cy) + r.y), area, clipped))
        return out

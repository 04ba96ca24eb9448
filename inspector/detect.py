"""Finding parts on the belt: the ROI geometry and the per-frame segmentation (the hot path).

Four ways to tell a part from the belt, chosen in the configuration's ``detection`` section:

- ``threshold``: brightness, fixed or Otsu (``invert`` for parts darker than the belt);
- ``background``: difference from a learned belt image (the median of the first frames, then a slow running
  average over belt pixels only, so a part that stops is not absorbed into the background);
- ``color``: distance from the belt colour (configured, or the ROI's median colour of the first frame);
- ``hue``: a range of hue, saturation and value (OpenCV HSV), for a part told apart by its own colour where
  neither brightness nor one belt colour separates it (touching transparent bottles, by their caps).

Everything works on the ROI only, into buffers allocated once, and returns boxes and centroids in full-frame
pixels.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from ground.errors import UserError
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
        """The configured ROI in this frame; one reaching outside the frame is refused (never clipped: that would
        move the trigger line), by the same rule as `inspector calibrate roi`."""
        from calibration.roi import outside_frame

        fw, fh = frame_size
        values = cfg
        if cfg.file:
            values = _load_roi_file(cfg.file, frame_size)
        x, y = int(values.x), int(values.y)
        if (problem := outside_frame(x, y, values.width, values.height, frame_size)) is not None:
            raise UserError(f"roi: {problem}")
        w = int(values.width) if values.width else fw - x
        h = int(values.height) if values.height else fh - y
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

    def point(self, along: float, across: float) -> tuple[float, float]:
        """Inverse of :meth:`along`/:meth:`across`: full-frame (x, y)."""
        if self.direction == "right":
            return self.x + along, across
        if self.direction == "left":
            return self.x + self.w - along, across
        if self.direction == "down":
            return across, self.y + along
        return across, self.y + self.h - along

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
    from calibration.roi import load_roi  # the same distribution: only loaded when roi.file is set

    return load_roi(path, frame_size)


@dataclass(slots=True)
class Detection:
    bbox: tuple[int, int, int, int]  # x, y, w, h in full-frame px
    centroid: tuple[float, float]  # full-frame px
    area: int  # foreground px
    clipped: bool  # touches the ROI edge: the part may not be fully in view


def segment_scale(cfg: DetectionConfig) -> int:
    """``downscale``, or for 'auto' the largest of 1, 2, 4 that keeps the smallest part >= 16 px across."""
    if cfg.downscale != "auto":
        return int(cfg.downscale)
    side = cfg.min_area**0.5
    return 4 if side >= 64 else 2 if side >= 32 else 1


class Detector:
    """Segment parts inside the ROI of each frame; call :meth:`detect` once per frame, in order.

    Segmentation runs at ``1/downscale`` resolution (2x: an area average, itself a blur; 4x and more: one pixel
    sampled per block, which reads a fraction of the frame; everything after costs 1/N^2) and finds blobs by
    their outer contours, which is far cheaper than labelling every pixel; holes inside a part (a casting's
    bore) do not split it.
    """

    def __init__(self, cfg: DetectionConfig, roi: Roi) -> None:
        self.cfg = cfg
        self.roi = roi
        s = self.scale = segment_scale(cfg)
        self.w, self.h = max(1, roi.w // s), max(1, roi.h // s)
        k = int(round(cfg.blur / s)) | 1 if cfg.blur > 0 else 0
        self._blur = (k, k) if k >= 3 else None
        m = int(round(cfg.morph / s)) | 1 if cfg.morph >= 2 else 0  # odd: an even kernel shifts the mask
        m = max(m, 3) if cfg.morph >= 2 else 0
        self._kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (m, m)) if m >= 3 else None
        shape = (self.h, self.w)
        colour = cfg.method in ("color", "hue")  # per-pixel colour tests: shrink the BGR ROI, not a grey one
        self._small = np.empty((*shape, 3), np.uint8) if s >= 4 or (s > 1 and colour) else None
        self._gray_full = np.empty((roi.h, roi.w), np.uint8) if s > 1 else None
        self._gray = np.empty(shape, np.uint8)
        self._work = np.empty(shape, np.uint8)
        self._mask = np.empty(shape, np.uint8)
        self._diff = np.empty((*shape, 3), np.uint8) if cfg.method == "color" else None
        self._hsv = np.empty((*shape, 3), np.uint8) if cfg.method == "hue" else None
        self._smooth = np.empty((*shape, 3), np.uint8) if cfg.method == "hue" and self._blur is not None else None
        k = cfg.color_distance**2 / 100.0
        self._sq_lut = np.clip(np.round(np.arange(256, dtype=np.float64) ** 2 / k), 0, 255).astype(np.uint8)
        self._ones = np.ones((1, 3), np.float32)
        self._background: np.ndarray | None = None  # float32 (h, w), method 'background'
        self._bg8 = np.empty(shape, np.uint8) if cfg.method == "background" else None
        self._absdiff = np.empty(shape, np.uint8) if cfg.method == "background" else None
        self._learn: list[np.ndarray] = []
        self._belt: np.ndarray | None = np.asarray(cfg.belt_color, np.float32) if cfg.belt_color is not None else None
        self._min_area = cfg.min_area / (s * s)
        self._max_area = cfg.max_area / (s * s) if cfg.max_area is not None else None
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
        if method in ("color", "hue"):
            if self.scale > 1 and roi.ndim == 3:
                # 4x and more: sampling (reads 1/16 of the pixels) beats averaging; the colour test is per pixel
                interp = cv2.INTER_NEAREST if self.scale >= 4 else cv2.INTER_AREA
                roi = cv2.resize(roi, (self.w, self.h), dst=self._small, interpolation=interp)
            mask = self._color_mask(roi) if method == "color" else self._hue_mask(roi)
        else:
            # Grey first, then shrink: converting the full ROI and area-resizing one channel is cheaper than
            # resizing three channels of a strided ROI view.
            if self.scale >= 4 and roi.ndim == 3 and roi.shape[2] == 3:
                # sample 1 pixel in 16, then grey: cheaper than converting every pixel first
                small = cv2.resize(roi, (self.w, self.h), dst=self._small, interpolation=cv2.INTER_NEAREST)
                gray = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY, dst=self._gray)
            elif self.scale > 1:
                full = roi if roi.ndim == 2 else cv2.cvtColor(roi, cv2.COLOR_BGR2GRAY, dst=self._gray_full)
                gray = cv2.resize(full, (self.w, self.h), dst=self._gray, interpolation=cv2.INTER_AREA)
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
            # Otsu always splits the histogram, even of an empty belt's noise: require real contrast.
            n_fg = cv2.countNonZero(self._mask)
            n = self._mask.size
            if 0 < n_fg < n:
                fg = cv2.mean(gray, mask=self._mask)[0]
                bg = (cv2.mean(gray)[0] * n - fg * n_fg) / (n - n_fg)
                if abs(fg - bg) < self.cfg.otsu_min_contrast:
                    self._mask[:] = 0
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
        cv2.convertScaleAbs(self._background, dst=self._bg8)
        cv2.absdiff(gray, self._bg8, dst=self._absdiff)
        mask = self._threshold(self._absdiff, False)
        if cfg.background_rate > 0:
            # Learn the belt only where there is no part, so a part that stops stays a part.
            cv2.accumulateWeighted(gray, self._background, cfg.background_rate, mask=cv2.bitwise_not(mask))
        return mask

    def _color_mask(self, roi: np.ndarray) -> np.ndarray:
        """Euclidean BGR distance from the belt colour > ``color_distance``, all in uint8 OpenCV calls.

        Per channel, a lookup table maps |difference| to difference^2 scaled so that the threshold lands at 100
        (saturating at 255, where that channel alone is already past it); the three are summed and compared.
        """
        if roi.ndim == 2 or roi.shape[2] == 1:
            raise UserError("detection.method 'color' needs a colour source; use 'threshold' or 'background'")
        if self._belt is None:
            self._belt = np.median(roi.reshape(-1, 3), axis=0).astype(np.float32)
            log.info("belt colour taken from the first frame: BGR %s", self._belt.round().tolist())
        cv2.absdiff(roi, (*self._belt.tolist(), 0.0), dst=self._diff)
        cv2.LUT(self._diff, self._sq_lut, dst=self._diff)
        cv2.transform(self._diff, self._ones, dst=self._work)
        if self._blur is not None:
            cv2.GaussianBlur(self._work, self._blur, 0, dst=self._work)
        cv2.threshold(self._work, 100, 255, cv2.THRESH_BINARY, dst=self._mask)
        return self._mask

    def _hue_mask(self, roi: np.ndarray) -> np.ndarray:
        """Pixels whose HSV lies in [hsv_lower, hsv_upper]; a lower hue above the upper one wraps past 179 (red).

        The BGR ROI is blurred first, so that noise in the hue of dark or grey pixels does not speckle the mask.
        """
        if roi.ndim == 2 or roi.shape[2] == 1:
            raise UserError("detection.method 'hue' needs a colour source; use 'threshold' or 'background'")
        if self._smooth is not None:
            roi = cv2.GaussianBlur(roi, self._blur, 0, dst=self._smooth)
        hsv = cv2.cvtColor(roi, cv2.COLOR_BGR2HSV, dst=self._hsv)
        (h0, s0, v0), (h1, s1, v1) = self.cfg.hsv_lower, self.cfg.hsv_upper
        if h0 <= h1:
            cv2.inRange(hsv, (h0, s0, v0), (h1, s1, v1), dst=self._mask)
        else:
            cv2.inRange(hsv, (h0, s0, v0), (179, s1, v1), dst=self._mask)
            cv2.inRange(hsv, (0, s0, v0), (h1, s1, v1), dst=self._work)
            cv2.bitwise_or(self._mask, self._work, dst=self._mask)
        return self._mask

    def _blobs(self, mask: np.ndarray) -> list[Detection]:
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        r, s = self.roi, self.scale
        out: list[Detection] = []
        for c in contours:
            mo = cv2.moments(c)
            if mo["m00"] <= 0:
                continue
            # The contour runs through boundary pixel centres: add half its perimeter for the pixel count.
            area = mo["m00"] + 0.5 * cv2.arcLength(c, True) + 1.0
            if area < self._min_area or (self._max_area is not None and area > self._max_area):
                continue
            x, y, w, h = cv2.boundingRect(c)
            clipped = x <= 0 or y <= 0 or x + w >= self.w or y + h >= self.h
            cx = (mo["m10"] / mo["m00"] + 0.5) * s - 0.5 + r.x
            cy = (mo["m01"] / mo["m00"] + 0.5) * s - 0.5 + r.y
            bbox = (x * s + r.x, y * s + r.y, min(w * s, r.w - x * s), min(h * s, r.h - y * s))
            out.append(Detection(bbox, (float(cx), float(cy)), int(area * s * s), clipped))
        return out

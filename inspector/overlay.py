"""The live overlay: what the line engineer watches. OpenCV window, on the MAIN thread only.

:func:`render_overlay` draws one frame (pure: a copy of the frame in, the annotated image out) so it can be
tested pixel by pixel; :class:`Window` shows it, at most ``max_fps`` times a second so a flat-out replay is
not slowed down by drawing, and handles the keys: q (or Esc) quit, p pause/resume, s snapshot (PNG).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from engines.heatmap import overlay_heatmap
from inspector.pipeline import FrameView, LoopStats
from inspector.records import Part, Verdict

log = logging.getLogger(__name__)

# BGR colours; tests look for them.
ROI_COLOR = (0, 255, 255)  # yellow
TRIGGER_COLOR = (255, 0, 255)  # magenta
PENDING_COLOR = (255, 200, 0)  # light blue: tracked, not decided yet
VERDICT_COLORS = {
    Verdict.OK: (0, 200, 0),
    Verdict.DEFECT: (0, 0, 255),
    Verdict.NO_VERDICT: (0, 140, 255),  # orange: rejected without a verdict
}
THUMB = 112  # last defect's thumbnail, px


def render_overlay(view: FrameView, stats: LoopStats, *, paused: bool = False) -> np.ndarray:
    """ROI, trigger line, tracked parts coloured by verdict, frames/s, latency, counts, yield, last defect."""
    img = view.image
    out = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR) if img.ndim == 2 else img.copy()
    r = view.roi
    cv2.rectangle(out, (r.x, r.y), (r.x + r.w - 1, r.y + r.h - 1), ROI_COLOR, 2)
    a, b = r.trigger_segment()
    cv2.line(out, a, b, TRIGGER_COLOR, 2)

    summary = stats.summary
    decided: dict[int, Part] = {p.part_id: p for p in view.parts}
    recent = summary.recent if summary is not None else {}
    for t in view.tracks:
        part = decided.get(t.track_id) or recent.get(t.track_id)
        color = VERDICT_COLORS[part.verdict] if part is not None else PENDING_COLOR
        x, y, w, h = t.det.bbox
        cv2.rectangle(out, (x, y), (x + w - 1, y + h - 1), color, 2)
        label = f"#{t.track_id}"
        if part is not None:
            label += f" {part.verdict.value}" + (f" {part.score:.2f}" if part.score is not None else "")
        _text(out, label, (x, max(12, y - 5)), color, 0.45)
    for p in view.parts:  # decided now, already gone from the tracks (no-verdicts at exit)
        if p.part_id not in {t.track_id for t in view.tracks}:
            x, y, w, h = p.bbox
            cv2.rectangle(out, (x, y), (x + w - 1, y + h - 1), VERDICT_COLORS[p.verdict], 2)

    _panel(out, stats, paused)
    last = summary.last_defect if summary is not None else None
    if last is not None and last.crop is not None and last.crop.size:
        _thumbnail(out, last)
    return out


def _panel(out: np.ndarray, stats: LoopStats, paused: bool) -> None:
    s = stats.summary
    counts = s.counts if s is not None else {}
    ok, bad, nv = (counts.get(v, 0) for v in (Verdict.OK, Verdict.DEFECT, Verdict.NO_VERDICT))
    parts = ok + bad + nv
    lat = stats.last_latency_ms
    lines = [
        f"{stats.fps:5.1f} frames/s" + ("  PAUSED" if paused else ""),
        f"latency {lat:6.1f} ms" if lat is not None else "latency    - ms",
        f"parts {parts}  ok {ok}  defect {bad}  no verdict {nv}",
        f"yield {100.0 * ok / parts:5.1f} %" if parts else "yield     - %",
    ]
    h = 18 * len(lines) + 8
    y0 = out.shape[0] - h
    region = out[y0:, : min(out.shape[1], 330)]
    region[:] = (region * 0.35).astype(np.uint8)
    for i, line in enumerate(lines):
        _text(out, line, (6, y0 + 18 * (i + 1)), (255, 255, 255), 0.5)


def _thumbnail(out: np.ndarray, part: Part) -> None:
    crop = part.crop
    if crop.ndim == 2:
        crop = cv2.cvtColor(crop, cv2.COLOR_GRAY2BGR)
    H, W = out.shape[:2]
    size = min(THUMB, H // 3, W // 4)
    if size < 16:
        return
    thumb = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
    x0, y0 = W - size - 6, 6
    out[y0 : y0 + size, x0 : x0 + size] = thumb
    cv2.rectangle(out, (x0 - 2, y0 - 2), (x0 + size + 1, y0 + size + 1), VERDICT_COLORS[Verdict.DEFECT], 2)
    amap = getattr(part, "anomaly_map", None)
    if amap is not None and x0 - size - 8 >= 0:  # anomaly models: where the part differs from good ones
        xm = x0 - size - 8
        out[y0 : y0 + size, xm : xm + size] = overlay_heatmap(thumb, amap)
        cv2.rectangle(out, (xm - 2, y0 - 2), (xm + size + 1, y0 + size + 1), VERDICT_COLORS[Verdict.DEFECT], 2)
    _text(out, f"last defect #{part.part_id}", (max(0, x0 - 10), y0 + size + 16), (255, 255, 255), 0.45)


def _text(img: np.ndarray, s: str, org: tuple[int, int], color, scale: float) -> None:
    cv2.putText(img, s, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(img, s, org, cv2.FONT_HERSHEY_SIMPLEX, scale, color, 1, cv2.LINE_AA)


_PROBE = "import cv2; cv2.namedWindow('inspector-probe'); cv2.waitKey(1); cv2.destroyAllWindows(); print('ok')"


def display_available(timeout_s: float = 15.0) -> bool:
    """A display is set and OpenCV's highgui can open a window on it.

    Probed in a child process: Qt aborts the whole process (no exception) when it cannot reach the display.
    """
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False
    try:
        out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired):
        return False
    if out.returncode != 0 or "ok" not in out.stdout:
        if not opencv_has_gui():
            log.warning(
                "a display is set but this OpenCV has no GUI (the opencv-python-headless build, e.g. pulled in by "
                "the train extra's grad-cam, replaced opencv-python's files); running headless. Restore the "
                "window with: pip install --force-reinstall --no-deps opencv-python"
            )
        else:
            log.warning("a display is set but OpenCV cannot open a window on it; running headless")
        return False
    return True


def opencv_has_gui() -> bool:
    """False for the headless OpenCV builds (no highgui backend compiled in)."""
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GUI:"):
            return line.split(":", 1)[1].strip().upper() != "NONE"
    return True


class Window:
    """The OpenCV window. Create, update and close it on the main thread."""

    title = "inspector"

    def __init__(self, *, scale: float = 1.0, snapshot_dir: str | Path = ".", max_fps: float = 30.0) -> None:
        self.scale = scale
        self.snapshot_dir = Path(snapshot_dir)
        self.min_interval = 1.0 / max_fps if max_fps > 0 else 0.0
        self.paused = False
        self.snapshots: list[Path] = []
        self.last_image: np.ndarray | None = None
        self._last_view: FrameView | None = None
        self._t_last = 0.0
        cv2.namedWindow(self.title, cv2.WINDOW_AUTOSIZE)

    def update(self, view: FrameView | None, stats: LoopStats) -> bool:
        """Draw (rate-limited) and poll the keys; False = quit."""
        now = time.monotonic()
        if view is not None:
            self._last_view = view
        due = now - self._t_last >= self.min_interval or (view is not None and view.parts)
        if self._last_view is not None and (due or view is None):
            img = render_overlay(self._last_view, stats, paused=self.paused)
            if self.scale != 1.0:
                img = cv2.resize(img, None, fx=self.scale, fy=self.scale, interpolation=cv2.INTER_AREA)
            self.last_image = img
            cv2.imshow(self.title, img)
            self._t_last = now
        return self._key(cv2.waitKey(1) & 0xFF)

    def _key(self, key: int) -> bool:
        if key in (ord("q"), 27):
            return False
        if key == ord("p"):
            self.paused = not self.paused
            log.info("paused" if self.paused else "resumed")
        elif key == ord("s"):
            self.snapshot()
        return True

    def snapshot(self) -> Path | None:
        """Save what the window shows now as a PNG in ``snapshot_dir``."""
        if self.last_image is None:
            return None
        self.snapshot_dir.mkdir(parents=True, exist_ok=True)
        path = self.snapshot_dir / time.strftime("inspector_%Y%m%d_%H%M%S.png")
        n = 1
        while path.exists():
            path = path.with_name(f"{path.stem.split('-')[0]}-{n}.png")
            n += 1
        cv2.imwrite(str(path), self.last_image)
        self.snapshots.append(path)
        log.warning("snapshot saved: %s", path)
        return path

    def close(self) -> None:
        try:
            cv2.destroyWindow(self.title)
            cv2.waitKey(1)
        except cv2.error:
            pass

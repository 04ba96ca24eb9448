"""The interactive ROI window: drag the ROI, click the trigger line, click two ends of a known length.

A thin OpenCV loop around :class:`calibration.roi.EditorState`; runs on the main thread (``cv2.imshow``).
"""

from __future__ import annotations

import logging
import os
import sys

import cv2
import numpy as np

from calibration.roi import EditorState, RoiCalibration, trigger_line
from ground.errors import UserError
from ground.qtfonts import quiet_qt_fonts

log = logging.getLogger(__name__)

WINDOW = "inspector calibrate roi"
HELP = "r: drag ROI  t: click trigger  m: click 2 ref points  d: direction  Enter/s: save  Esc/q: cancel"
_EVENTS = {cv2.EVENT_LBUTTONDOWN: "down", cv2.EVENT_LBUTTONUP: "up", cv2.EVENT_MOUSEMOVE: "move"}


def draw(frame: np.ndarray, st: EditorState, ref_mm: float | None) -> np.ndarray:
    """The frame with the current ROI (green), trigger line (red), direction and reference (yellow)."""
    img = frame.copy() if frame.ndim == 3 else cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    x, y, w, h = st.rect
    cv2.rectangle(img, (x, y), (x + w, y + h), (0, 255, 0), 2)
    p, q = trigger_line(x, y, w, h, st.direction, st.trigger)
    cv2.line(img, p, q, (0, 0, 255), 2)
    cx, cy = x + w // 2, y + h // 2
    step = {"right": (40, 0), "left": (-40, 0), "down": (0, 40), "up": (0, -40)}[st.direction]
    cv2.arrowedLine(img, (cx - step[0], cy - step[1]), (cx + step[0], cy + step[1]), (255, 200, 0), 2)
    for pt in st.ref_points:
        cv2.circle(img, (int(pt[0]), int(pt[1])), 4, (0, 255, 255), -1)
    if len(st.ref_points) == 2:
        a, b = ((int(v[0]), int(v[1])) for v in st.ref_points)
        cv2.line(img, a, b, (0, 255, 255), 1)
        px = float(np.hypot(b[0] - a[0], b[1] - a[1]))
        label = f"{px:.1f} px" + (f" = {ref_mm:g} mm -> {px / ref_mm:.3f} px/mm" if ref_mm else " (give --ref-mm)")
        cv2.putText(img, label, (a[0], a[1] - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 255, 255), 1, cv2.LINE_AA)
    cv2.putText(
        img,
        f"mode: {st.mode}  direction: {st.direction}",
        (8, 18),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.5,
        (255, 255, 255),
        1,
        cv2.LINE_AA,
    )
    cv2.putText(img, HELP, (8, img.shape[0] - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return img


def edit_roi(
    frame: np.ndarray, st: EditorState, ref_mm: float | None, timeout_s: float | None = None
) -> RoiCalibration:
    """Show the window until the user confirms (-> artefact) or cancels / closes it (-> UserError)."""
    import time

    def on_mouse(event: int, x: int, y: int, flags: int, _param: object) -> None:
        name = _EVENTS.get(event)
        if name == "move" and not flags & cv2.EVENT_FLAG_LBUTTON:
            return
        if name is not None:
            st.mouse(name, float(x), float(y))

    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        # Qt would abort the whole process without a display; say what to do instead
        raise UserError(
            "no display for the ROI window (DISPLAY unset); give the numbers instead: "
            "--roi x,y,w,h --trigger F --direction D --ref-px N --ref-mm M"
        )
    quiet_qt_fonts()
    try:
        cv2.namedWindow(WINDOW, cv2.WINDOW_AUTOSIZE | cv2.WINDOW_GUI_NORMAL)
    except cv2.error as exc:
        raise UserError(
            f"cannot open a window ({str(exc).strip().splitlines()[-1][:80]}); "
            "without a display give the numbers: --roi x,y,w,h --trigger F --direction D --ref-px N --ref-mm M"
        ) from None
    cv2.setMouseCallback(WINDOW, on_mouse)
    start = time.monotonic()
    title = ""
    try:
        while True:
            cv2.imshow(WINDOW, draw(frame, st, ref_mm))
            k = cv2.waitKey(30)
            now = f"{WINDOW} - mode: {st.mode}, direction: {st.direction}, reference points: {len(st.ref_points)}"
            if now != title:  # the title says what the next click does (and tells tests the key was taken)
                cv2.setWindowTitle(WINDOW, now)
                title = now
            if k != -1:
                action = st.key(chr(k & 0xFF))
                if action == "confirm":
                    return st.result(ref_mm)
                if action == "cancel":
                    raise UserError("ROI calibration cancelled; nothing written")
            if cv2.getWindowProperty(WINDOW, cv2.WND_PROP_VISIBLE) < 1:
                raise UserError("ROI window closed; nothing written")
            if timeout_s is not None and time.monotonic() - start > timeout_s:
                raise UserError(f"ROI window: no confirmation within {timeout_s:g} s; nothing written")
    finally:
        cv2.destroyWindow(WINDOW)
        cv2.waitKey(1)

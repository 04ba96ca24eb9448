"""What every frame source is: :class:`FrameSource` (the interface), :class:`CvSource` (an OpenCV capture behind
it) and :func:`redact` for the names they print. A module of its own so that the concrete sources
(:mod:`~inspector.capture.sources`) and the GStreamer ones (:mod:`~inspector.capture.gst`) both build on it
without importing each other.
"""

from __future__ import annotations

import re

import cv2
import numpy as np


class FrameSource:
    """One open input. ``read()`` gives the next BGR frame, or None at the end of the stream or on a failure.

    ``corrupt`` counts frames that could not be decoded and were skipped (never replaced by a fake frame);
    ``pos_ms`` is the position of the last frame read in a recording (None for live sources).
    """

    live: bool = False
    name: str = "source"

    def __init__(self) -> None:
        self.fps: float | None = None
        self.size: tuple[int, int] | None = None
        self.corrupt = 0
        self.pos_ms: float | None = None

    def read(self) -> np.ndarray | None:
        raise NotImplementedError

    def abort(self) -> None:
        """Wake a ``read()`` blocked on another thread, where the source can (a subprocess can be stopped).

        OpenCV captures cannot: releasing one while another thread reads from it is unsafe, so they rely on
        their backend's read timeout instead.
        """

    def close(self) -> None:
        """Release the input; safe to call twice."""

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name})"


def redact(uri: str) -> str:
    """Hide credentials in stream URLs before they reach a log or an error message."""
    return re.sub(r"://[^/@]*@", "://***@", uri)


def _fps(value: float) -> float | None:
    return float(value) if 0 < value < 1000 else None  # OpenCV reports 0 or nonsense when it does not know


class CvSource(FrameSource):
    """An OpenCV ``VideoCapture``; the subclasses only differ in how they open it."""

    def __init__(self, cap: cv2.VideoCapture, name: str) -> None:
        super().__init__()
        self._cap: cv2.VideoCapture | None = cap
        self.name = name
        self.fps = _fps(cap.get(cv2.CAP_PROP_FPS))
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self.size = (w, h) if w > 0 and h > 0 else None

    def read(self) -> np.ndarray | None:
        if self._cap is None:
            return None
        ok, img = self._cap.read()
        return img if ok and img is not None else None

    def close(self) -> None:
        cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()

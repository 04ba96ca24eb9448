"""Frame capture: open any input (camera, recording, image folder, stream, GStreamer) and read it on its own
thread. `open_source` for one source, `CaptureThread` for the runtime."""

from inspector.capture.sources import FrameSource, open_source
from inspector.capture.thread import CaptureStats, CaptureThread

__all__ = ["CaptureStats", "CaptureThread", "FrameSource", "open_source"]

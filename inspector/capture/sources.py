"""Frame sources: one small class per kind of input, all behind :class:`~inspector.capture.base.FrameSource`.

`open_source` turns what the operator typed (a camera index, a file, a folder, a stream URL, a GStreamer
pipeline) into an open source, or raises one :class:`UserError` line that says what to do. Sources are
not thread-safe; :class:`~inspector.capture.thread.CaptureThread` owns one at a time.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from pathlib import Path

import cv2
import numpy as np

from ground.errors import UserError
from inspector.capture.base import CvSource, FrameSource, redact
from inspector.config import SourceConfig

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm"})
MAX_BAD_READS = 8  # consecutive undecodable frames before a video file counts as ended
STREAM_OPEN_TIMEOUT_MS = 5000
# Low latency for network streams: TCP (no lost UDP packets smearing frames), no demuxer buffering.
FFMPEG_STREAM_OPTIONS = "rtsp_transport;tcp|fflags;nobuffer|flags;low_delay"
FFMPEG_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
_ENV_LOCK = threading.Lock()


class CameraSource(CvSource):
    """A USB/V4L2 camera through OpenCV's V4L2 backend: MJPG, the configured size and rate, one buffer."""

    live = True

    def __init__(self, device: str, cfg: SourceConfig) -> None:
        path = f"/dev/video{device}" if device.isdigit() else device
        cap = cv2.VideoCapture(int(device) if device.isdigit() else device, cv2.CAP_V4L2)
        if not cap.isOpened():
            why = "no such device" if not os.path.exists(path) else "busy, or not a capture device"
            raise UserError(
                f"camera {device}: cannot open {path} ({why}); list the cameras with `ls /dev/video*` or "
                "`v4l2-ctl --list-devices` and pass that index to --camera"
            )
        if cfg.fourcc:
            if len(cfg.fourcc) != 4:
                cap.release()
                raise UserError(f"source.fourcc {cfg.fourcc!r}: a pixel format is 4 characters, e.g. MJPG or YUYV")
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*cfg.fourcc))
        if cfg.width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, cfg.width)
        if cfg.height:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, cfg.height)
        if cfg.fps:
            cap.set(cv2.CAP_PROP_FPS, cfg.fps)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # the newest frame, not one from a stale driver queue
        # Bound a read on a silent camera where the backend honours it (else its own select() timeout).
        cap.set(cv2.CAP_PROP_READ_TIMEOUT_MSEC, max(cfg.stall_timeout_s, 0.5) * 1000)
        super().__init__(cap, path)
        want = (cfg.width, cfg.height)
        if all(want) and self.size != want:
            log.warning("camera %s: asked for %dx%d, the driver gave %s", path, *want, self.size)


class StreamSource(CvSource):
    """A network stream (rtsp://, http://...) through OpenCV's FFmpeg backend, tuned for low latency."""

    live = True

    def __init__(self, uri: str, cfg: SourceConfig) -> None:
        read_ms = int(max(cfg.stall_timeout_s, 0.5) * 1000)
        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
            STREAM_OPEN_TIMEOUT_MS,
            cv2.CAP_PROP_READ_TIMEOUT_MSEC,
            read_ms,
        ]
        # OpenCV reads these options from the environment at open; set them for this open only (left set,
        # they would also change how recordings decode: low_delay loses a file's last frame). An operator's
        # own setting wins.
        with _ENV_LOCK:
            own = os.environ.get(FFMPEG_ENV)
            os.environ[FFMPEG_ENV] = own or FFMPEG_STREAM_OPTIONS
            try:
                cap = cv2.VideoCapture(uri, cv2.CAP_FFMPEG, params)
            finally:
                if own is None:
                    del os.environ[FFMPEG_ENV]
        if not cap.isOpened():
            raise UserError(
                f"stream {redact(uri)}: cannot open it within {STREAM_OPEN_TIMEOUT_MS / 1000:.0f} s; "
                "check the address, port, path and credentials (try it with `ffplay` or VLC)"
            )
        super().__init__(cap, redact(uri))


class VideoFileSource(CvSource):
    """A recorded video. Undecodable frames are skipped and counted; the first frame must decode."""

    def __init__(self, path: Path) -> None:
        cap = cv2.VideoCapture(str(path))
        if not cap.isOpened():
            raise UserError(
                f"source {path}: not a video OpenCV can read (unknown container or codec); give a video file "
                "(.mp4, .avi, .mkv), an image folder, a camera index or gst:PIPELINE"
            )
        super().__init__(cap, str(path))
        self._pending = self._decode()
        if self._pending is None:
            self.close()
            raise UserError(f"source {path}: no frame could be decoded; the file is empty or corrupt")
        h, w = self._pending.shape[:2]
        self.size = (w, h)

    def _decode(self) -> np.ndarray | None:
        for failed in range(MAX_BAD_READS):
            img = super().read()
            if img is not None:
                if failed:
                    self.corrupt += failed
                    log.warning("%s: skipped %d undecodable frame(s)", self.name, failed)
                self.pos_ms = self._cap.get(cv2.CAP_PROP_POS_MSEC) if self._cap is not None else None
                return img
            if self._cap is None:
                return None
        return None  # end of file (or a run of corrupt frames too long to be worth skipping)

    def read(self) -> np.ndarray | None:
        if self._pending is not None:
            img, self._pending = self._pending, None  # pos_ms was set when it was decoded
            return img
        return self._decode()


def _natural_key(p: Path) -> list:
    """frame_2 before frame_10, as a person numbering files expects."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", p.name)]


class ImageFolderSource(FrameSource):
    """Still images in name order (numbers as numbers); other files skipped, unreadable ones counted."""

    def __init__(self, files: list[Path], cfg: SourceConfig, name: str) -> None:
        super().__init__()
        self.name = name
        self._files = files
        self._next = 0
        self._index = -1
        self.fps = cfg.fps  # pacing with --realtime needs a rate; stills have none of their own
        self._pending = self._decode()
        if self._pending is None:
            raise UserError(f"source {name}: none of its {len(files)} image(s) could be decoded")
        h, w = self._pending.shape[:2]
        self.size = (w, h)

    def _decode(self) -> np.ndarray | None:
        while self._next < len(self._files):
            path = self._files[self._next]
            self._next += 1
            img = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if img is not None:
                self._index += 1
                self.pos_ms = self._index * 1000.0 / self.fps if self.fps else None
                return img
            self.corrupt += 1
            log.warning("%s: skipped %s, not a readable image", self.name, path.name)
        return None

    def read(self) -> np.ndarray | None:
        if self._pending is not None:
            img, self._pending = self._pending, None
            return img
        return self._decode()


def _open_path(uri: str, cfg: SourceConfig) -> FrameSource:
    path = Path(uri).expanduser()
    if not path.exists():
        hint = " ('demo' is rendered by `inspector demo`)" if uri == "demo" else ""
        raise UserError(
            f"source {uri}: no such file or folder{hint}; give a video file, an image folder, a camera index "
            "(0), rtsp://... or gst:PIPELINE"
        )
    if not os.access(path, os.R_OK):
        raise UserError(f"source {path}: permission denied; make it readable by this user")
    if path.is_dir():
        files = sorted(
            (p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
            key=_natural_key,
        )
        if not files:
            raise UserError(f"source {path}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in this folder")
        return ImageFolderSource(files, cfg, str(path))
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return ImageFolderSource([path], cfg, str(path))
    return VideoFileSource(path)


def open_source(uri: str, cfg: SourceConfig) -> FrameSource:
    """Open what ``uri`` names: '0' or /dev/videoN, a video file, an image folder, a URL, 'gst:PIPELINE'."""
    uri = uri.strip()
    if uri.startswith("gst:"):
        from inspector.capture.gst import open_gst

        return open_gst(uri[4:].strip(), cfg)
    if uri.isdigit() or uri.startswith("/dev/video"):
        return CameraSource(uri, cfg)
    if "://" in uri:
        return StreamSource(uri, cfg)
    return _open_path(uri, cfg)

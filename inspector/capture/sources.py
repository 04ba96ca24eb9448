"""Frame sources: one small class per kind of input, all behind :class:`~inspector.capture.base.FrameSource`.

`open_source` turns what the operator typed (a camera index, a file, a folder, a stream URL, a GStreamer
pipeline) into an open source, or raises one :class:`UserError` line that says what to do. Sources are
not thread-safe; :class:`~inspector.capture.thread.CaptureThread` owns one at a time.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
import socket
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

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
#: the network schemes OpenCV's FFmpeg backend reads, and their usual TCP ports (for the failure probe)
STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "rtp", "srt", "tcp")
DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322, "rtmp": 1935, "rtmps": 443, "http": 80, "https": 443}
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
        t0 = time.monotonic()
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
                f"stream {redact(uri)}: cannot open it: {stream_failure(uri, time.monotonic() - t0)}; "
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


def stream_failure(uri: str, elapsed_s: float) -> str:
    """Why a stream did not open, in words: OpenCV only says it did not. A TCP probe of the stream's host and
    port tells a refused connection, an unknown host and a silent one apart (a few ms, at most the open timeout)."""
    parts = urlsplit(uri)
    host, scheme = parts.hostname, parts.scheme.lower()
    try:
        port = parts.port or DEFAULT_PORTS.get(scheme)
    except ValueError:
        return f"the port in the address is not a number (gave up after {elapsed_s:.1f} s)"
    if not host or port is None or scheme in ("udp", "rtp", "srt"):  # no TCP handshake to probe
        return f"cannot open it (gave up after {elapsed_s:.1f} s)"
    where = f"{host}:{port}"
    try:
        with socket.create_connection((host, port), timeout=STREAM_OPEN_TIMEOUT_MS / 1000):
            pass
    except ConnectionRefusedError:
        return f"connection refused by {where} after {elapsed_s:.1f} s (nothing listens on that port)"
    except socket.gaierror:
        return f"unknown host {host!r} (the name does not resolve)"
    except TimeoutError:
        return f"no answer from {where} within {STREAM_OPEN_TIMEOUT_MS / 1000:.0f} s (wrong address, or a firewall)"
    except OSError as exc:
        return f"cannot reach {where} ({exc.strerror or exc})"
    return f"{where} answers, but the stream did not open after {elapsed_s:.1f} s (wrong path or credentials?)"


def camera_index_problem(uri: str) -> str | None:
    """A negative number is not a camera (indexes start at 0), and not a file either."""
    u = uri.strip()
    if u.startswith("-") and u[1:].isdigit():
        return (
            f"camera {u}: camera indexes start at 0; list the cameras with `ls /dev/video*` or "
            "`v4l2-ctl --list-devices` and pass that index to --camera"
        )
    return None


def scheme_problem(uri: str) -> str | None:
    """A URL whose scheme no stream reader knows (``rtps://`` for ``rtsp://``) is named as that, with a guess."""
    scheme = uri.split("://", 1)[0].strip().lower()
    if scheme in STREAM_SCHEMES:
        return None
    swapped = [k for k in STREAM_SCHEMES if sorted(k) == sorted(scheme)]  # two letters transposed: rtps, rstp
    near = swapped or difflib.get_close_matches(scheme, STREAM_SCHEMES, n=1, cutoff=0.5)
    guess = f" (did you mean {near[0]}://?)" if near else ""
    return (
        f"source {redact(uri)}: unknown stream scheme '{scheme}'{guess}; use one of "
        f"{', '.join(s + '://' for s in STREAM_SCHEMES)}, or gst:PIPELINE"
    )


def open_source(uri: str, cfg: SourceConfig) -> FrameSource:
    """Open what ``uri`` names: '0' or /dev/videoN, a video file, an image folder, a URL, 'gst:PIPELINE'."""
    uri = uri.strip()
    if uri.startswith("gst:"):
        from inspector.capture.gst import open_gst

        return open_gst(uri[4:].strip(), cfg)
    if (problem := camera_index_problem(uri)) is not None:
        raise UserError(problem)
    if uri.isdigit() or uri.startswith("/dev/video"):
        return CameraSource(uri, cfg)
    if "://" in uri:
        if (problem := scheme_problem(uri)) is not None:
            raise UserError(problem)
        return StreamSource(uri, cfg)
    return _open_path(uri, cfg)

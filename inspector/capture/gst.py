"""GStreamer sources: through OpenCV when it was built with GStreamer, else through `gst-launch-1.0`.

OpenCV from PyPI has no GStreamer, so the usual path runs ``gst-launch-1.0 PIPELINE ! ... ! y4menc ! fdsink
fd=1`` (see TAIL) as a subprocess (no shell) and reads YUV4MPEG2 from its stdout: the stream describes itself
(size, rate), so nothing has to be parsed from gst's log. A subprocess can also be stopped from another
thread, which is how a stalled pipeline is woken up and reopened. Pipelines whose first element is not
file-like (FILE_LIKE) count as live. Not counted: frames a gst decoder drops as corrupt (it skips them
silently).
"""

from __future__ import annotations

import functools
import logging
import os
import re
import select
import shlex
import shutil
import signal
import subprocess
import tempfile
import time

import cv2
import numpy as np

from ground.errors import UserError
from inspector.capture.base import CvSource, FrameSource, redact
from inspector.config import SourceConfig

log = logging.getLogger(__name__)

GST_INSTALL = (
    "install GStreamer: `sudo apt-get install gstreamer1.0-tools gstreamer1.0-plugins-base "
    "gstreamer1.0-plugins-good gstreamer1.0-libav` (on a Jetson it comes with JetPack)"
)
# Through RGB first: GStreamer 1.22's videoconvert copies YUV to YUV without converting the range, so a
# full-range source (jpegdec) would reach us as if it were the limited-range BT.601 that OpenCV's I420
# conversion expects.
TAIL = (
    "! videoconvert ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=I420,colorimetry=bt601 "
    "! y4menc ! fdsink fd=1".split()
)
# Sources that produce frames as fast as they are read (recordings, test patterns): every frame counts.
FILE_LIKE = frozenset({"filesrc", "multifilesrc", "videotestsrc", "appsrc"})
OPEN_TIMEOUT_S = 10.0  # first frame; a CSI camera's ISP takes a few seconds to start
READ_TIMEOUT_S = 10.0  # backstop only: the capture watchdog stops a stalled pipeline much sooner
STOP_TIMEOUT_S = 2.0  # for gst-launch-1.0 to stop cleanly on close
ABORT_GRACE_S = 0.5  # a stalled pipeline gets less: it is probably stuck, and frames are waited for


@functools.cache
def opencv_has_gstreamer() -> bool:
    info = cv2.getBuildInformation()
    return any(line.strip().startswith("GStreamer:") and "YES" in line for line in info.splitlines())


def is_live(pipeline: str) -> bool:
    """Cameras and network sources are live (latest frame wins); file-like sources hand over every frame."""
    words = pipeline.split()
    return not words or words[0] not in FILE_LIKE or "is-live=true" in pipeline.replace(" ", "")


def open_gst(pipeline: str, cfg: SourceConfig) -> FrameSource:
    if not pipeline:
        raise UserError("source 'gst:': empty pipeline; write it after 'gst:', e.g. gst:videotestsrc ! videoconvert")
    if opencv_has_gstreamer() and os.environ.get("INSPECTOR_GST") != "launch":
        return CvGstSource(pipeline)
    return GstLaunchSource(pipeline)


class CvGstSource(CvSource):
    """OpenCV's own GStreamer backend; appsink keeps only the newest buffer for live pipelines."""

    def __init__(self, pipeline: str) -> None:
        self.live = is_live(pipeline)
        sink = "appsink drop=true max-buffers=1 sync=false" if self.live else "appsink sync=false"
        cap = cv2.VideoCapture(f"{pipeline} ! videoconvert ! video/x-raw,format=BGR ! {sink}", cv2.CAP_GSTREAMER)
        if not cap.isOpened():
            raise UserError(
                f"gst: pipeline failed to start: {redact(pipeline)}; try it with `gst-launch-1.0 {redact(pipeline)} "
                "! fakesink` to see GStreamer's message"
            )
        super().__init__(cap, f"gst:{redact(pipeline)}")


def _round_up(v: int, n: int) -> int:
    return (v + n - 1) // n * n


def _first_error(lines: list[str]) -> str:
    """The first ERROR/WARNING line of gst-launch's log, with its human-readable debug detail if any."""
    for i, line in enumerate(lines):
        if line.startswith(("ERROR", "WARNING")):
            msg = re.sub(r"from element /GstPipeline:\w+/", "", line.strip())
            rest = lines[i + 1 : i + 5]
            if rest and rest[0].startswith("Additional debug info"):
                detail = [ln.strip() for ln in rest[1:] if ln.strip() and ".c(" not in ln and ":" not in ln[:8]]
                if detail and not detail[0].startswith("ERROR"):
                    msg += f" ({detail[0]})"
            return redact(msg)  # gst echoes stream URLs, credentials included
    return redact(lines[-1].strip()) if lines else "no message"


class GstLaunchSource(FrameSource):
    """``gst-launch-1.0`` as a subprocess; frames are parsed from the YUV4MPEG2 stream on its stdout."""

    def __init__(self, pipeline: str, open_timeout_s: float = OPEN_TIMEOUT_S) -> None:
        super().__init__()
        exe = shutil.which("gst-launch-1.0")
        if exe is None:
            raise UserError(f"gst: sources need gst-launch-1.0, which is not on PATH; {GST_INSTALL}")
        try:
            args = shlex.split(pipeline)
        except ValueError as e:
            raise UserError(f"gst: cannot split the pipeline ({e}); check its quotes: {redact(pipeline)}") from None
        self.name = f"gst:{redact(pipeline)}"  # stream credentials stay out of logs and errors
        self.live = is_live(pipeline)
        self._pipeline = pipeline
        self._buf = bytearray()
        self._index = -1
        self._err = tempfile.TemporaryFile()
        # Own session: a Ctrl-C meant for us must not kill the camera pipeline before we close it cleanly.
        self._proc: subprocess.Popen | None = subprocess.Popen(
            [exe, "-q", *args, *TAIL],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._err,
            start_new_session=True,
        )
        self._fd = self._proc.stdout.fileno()
        try:
            self._parse_header(self._line(time.monotonic() + open_timeout_s), open_timeout_s)
        except BaseException:
            self.close()
            raise
        self._frame_size: int | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    # --- reading bytes with a deadline -------------------------------------------------------------------
    def _fill(self, n: int, deadline: float) -> bool:
        """Buffer at least n bytes; False at end of stream or when the deadline passes."""
        while len(self._buf) < n:
            left = deadline - time.monotonic()
            if self._proc is None or left <= 0 or not select.select([self._fd], [], [], left)[0]:
                return False
            chunk = os.read(self._fd, max(n - len(self._buf), 1 << 16))
            if not chunk:
                return False
            self._buf += chunk
        return True

    def _line(self, deadline: float) -> bytes | None:
        while (end := self._buf.find(b"\n")) < 0:
            if len(self._buf) > 4096 or not self._fill(len(self._buf) + 1, deadline):
                return None
        line = bytes(self._buf[:end])
        del self._buf[: end + 1]
        return line

    # --- the stream ---------------------------------------------------------------------------------------
    def _parse_header(self, line: bytes | None, timeout_s: float) -> None:
        if line is None or not line.startswith(b"YUV4MPEG2 "):
            raise UserError(f"gst: {self._failure(timeout_s)}; pipeline: {redact(self._pipeline)}")
        tags = {t[:1]: t[1:] for t in line.decode("ascii", "replace").split()[1:]}
        self.w, self.h = int(tags["W"]), int(tags["H"])
        self.size = (self.w, self.h)
        num, _, den = tags.get("F", "0:1").partition(":")
        self.fps = int(num) / int(den) if int(num) > 0 and den.isdigit() and int(den) > 0 else None
        if not tags.get("C", "420").startswith("420"):
            raise UserError(
                f"gst: unexpected colour format C{tags['C']} from y4menc; pipeline: {redact(self._pipeline)}"
            )
        # Plane layouts: tightly packed, or GStreamer's default strides (rows padded to 4 bytes, height to 2),
        # which some y4menc versions write as they are. The first frame tells which one this one uses.
        w, h, cw, ch = self.w, self.h, (self.w + 1) // 2, (self.h + 1) // 2
        s0, s1, h2 = _round_up(w, 4), _round_up(_round_up(w, 2) // 2, 4), _round_up(h, 2)
        self._layouts = {
            w * h + 2 * cw * ch: (w, cw, w * h, w * h + cw * ch),
            s0 * h2 + 2 * s1 * (h2 // 2): (s0, s1, s0 * h2, s0 * h2 + s1 * (h2 // 2)),
        }

    def _failure(self, timeout_s: float) -> str:
        """gst-launch's own error lines when it died, else a timeout message."""
        proc = self._proc
        try:
            rc = proc.wait(timeout=STOP_TIMEOUT_S) if proc is not None else None
        except subprocess.TimeoutExpired:
            return (
                f"the pipeline gave no frame within {timeout_s:.0f} s (is the camera connected and free? the first "
                "GStreamer run after installing plugins scans them all first: if so, run it once more)"
            )
        self._err.seek(0)
        lines = self._err.read().decode("utf-8", "replace").splitlines()
        return f"pipeline failed (gst-launch-1.0 exit code {rc}): {_first_error(lines)}"

    def _detect_size(self, deadline: float) -> int | None:
        """The frame size whose end is followed by the next FRAME header (or by the end of the stream)."""
        for size in sorted(self._layouts):
            more = self._fill(size + 5, deadline)
            if (more and self._buf[size : size + 5] == b"FRAME") or (not more and len(self._buf) == size):
                return size
        return None

    def read(self) -> np.ndarray | None:
        deadline = time.monotonic() + READ_TIMEOUT_S
        head = self._line(deadline)
        if head is None:
            self._why_ended()
            return None
        if not head.startswith(b"FRAME"):
            log.error("%s: lost the frame boundary in the YUV4MPEG2 stream", self.name)
            return None
        if self._frame_size is None:
            self._frame_size = self._detect_size(deadline)
            if self._frame_size is None:
                log.error("%s: cannot tell the frame layout of %dx%d", self.name, self.w, self.h)
                return None
        size = self._frame_size
        if not self._fill(size, deadline):
            self._why_ended()
            return None
        data = np.frombuffer(self._buf, np.uint8, count=size).copy()  # the temporary view dies here
        del self._buf[:size]
        self._index += 1
        if not self.live and self.fps:
            self.pos_ms = self._index * 1000.0 / self.fps  # lets --realtime pace a file-like pipeline
        return self._to_bgr(data, *self._layouts[size])

    def _why_ended(self) -> None:
        """Log gst's own error when the pipeline died, or that it went silent; a clean end says nothing."""
        proc = self._proc
        if proc is None:
            return
        try:
            rc = proc.wait(timeout=0.2)
        except subprocess.TimeoutExpired:
            log.error("%s: no data for %.0f s; giving up on this read", self.name, READ_TIMEOUT_S)
            return
        if rc not in (0, -signal.SIGINT, -signal.SIGKILL):
            self._err.seek(0)
            lines = self._err.read().decode("utf-8", "replace").splitlines()
            log.error("%s: gst-launch-1.0 exited with code %d: %s", self.name, rc, _first_error(lines))

    def _to_bgr(self, data: np.ndarray, s0: int, s1: int, off1: int, off2: int) -> np.ndarray:
        w, h, cw, ch = self.w, self.h, (self.w + 1) // 2, (self.h + 1) // 2
        if (s0, s1, off1) == (w, cw, w * h) and w % 2 == 0 and h % 2 == 0:  # packed: convert in place
            return cv2.cvtColor(data[: w * h * 3 // 2].reshape(h * 3 // 2, w), cv2.COLOR_YUV2BGR_I420)
        y = data[: s0 * h].reshape(h, s0)[:, :w]
        u = data[off1 : off1 + s1 * ch].reshape(ch, s1)[:, :cw]
        v = data[off2 : off2 + s1 * ch].reshape(ch, s1)[:, :cw]
        if (w % 2, h % 2) != (0, 0):  # OpenCV's I420 conversion needs even sizes: pad, convert, crop
            y = np.pad(y, ((0, 2 * ch - h), (0, 2 * cw - w)), mode="edge")
        i420 = np.concatenate([y.reshape(-1), u.reshape(-1), v.reshape(-1)]).reshape(3 * ch, 2 * cw)
        bgr = cv2.cvtColor(i420, cv2.COLOR_YUV2BGR_I420)
        return bgr if bgr.shape[:2] == (h, w) else np.ascontiguousarray(bgr[:h, :w])

    # --- stopping -----------------------------------------------------------------------------------------
    def abort(self) -> None:
        """Stop the pipeline so a blocked read() sees the end of its stream: SIGINT lets gst-launch shut
        the camera down cleanly (nvarguscamerasrc dislikes SIGKILL); SIGKILL if it does not go."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        try:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=ABORT_GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()  # also ends a stopped (SIGSTOP) process
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                log.error("%s: gst-launch-1.0 (pid %d) did not exit after SIGKILL", self.name, proc.pid)
        except ProcessLookupError:
            pass

    def close(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGINT)
            except ProcessLookupError:
                pass
            self._drain(time.monotonic() + STOP_TIMEOUT_S)  # a writer blocked on a full pipe can then stop
        self.abort()
        self._proc = None
        if proc.stdout is not None:
            proc.stdout.close()
        self._err.close()

    def _drain(self, deadline: float) -> None:
        """Read and discard until gst-launch closes its end (it exits) or the deadline passes."""
        while (left := deadline - time.monotonic()) > 0 and select.select([self._fd], [], [], left)[0]:
            if not os.read(self._fd, 1 << 20):
                return

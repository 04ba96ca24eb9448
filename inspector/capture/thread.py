"""The capture thread: reads one source on its own thread so inspection never waits on a camera.

Live sources fill a one-frame slot (the newest frame wins; the frames it replaces are counted as dropped).
Recordings go through a small bounded queue (the reader waits, so every frame is inspected), flat out or paced
at the recorded rate. A watchdog thread notices a live source that gives no frame for ``stall_timeout_s``,
counts it in ``stall_count`` (the pipeline rejects the parts in flight), stops the source and reopens it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass

from ground.errors import UserError
from inspector.capture.base import FrameSource, redact
from inspector.capture.sources import open_source
from inspector.config import SourceConfig
from inspector.records import Frame

log = logging.getLogger(__name__)

FILE_QUEUE = 4  # frames a recording may read ahead of inspection
BACKOFF_S = (0.2, 5.0)  # first and longest wait between failed reopen attempts
FIRST_FRAME_S = 5.0  # a camera may take this long to give its first frame after opening (USB, CSI ISP)


@dataclass
class CaptureStats:
    frames: int = 0  # frames read from the source (seq numbers handed out)
    dropped: int = 0  # live frames replaced by a newer one before inspection took them
    stalls: int = 0  # times the source gave no frame for stall_timeout_s, or failed
    reopens: int = 0  # successful reopens after a stall
    corrupt: int = 0  # undecodable frames skipped

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


class CaptureThread:
    """Owns one source and its reader thread; ``get()`` hands frames to the inspection thread."""

    def __init__(
        self,
        cfg: SourceConfig,
        uri: str | None = None,
        *,
        join_timeout_s: float = 3.0,
        on_frame: Callable[[], None] | None = None,
    ) -> None:
        self.cfg = cfg
        # called on the reader thread for every frame the source delivers (the service watchdog's frame clock:
        # it must be cheap, and it must not wait for inspection, or a hung inference would look like a dead camera)
        self.on_frame = on_frame
        self.uri = uri if uri is not None else cfg.uri
        self.stats = CaptureStats()
        self.ended = threading.Event()  # no more frames will come, and all were handed out
        self.error: str | None = None  # why a live source was given up, or what crashed the reader
        self.source: FrameSource | None = None  # the open source, replaced on every reopen
        self.live = False
        self.fps: float | None = None
        self.size: tuple[int, int] | None = None
        self._join_timeout_s = join_timeout_s
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._frames: deque[Frame] = deque()
        self._capacity = FILE_QUEUE
        self._exhausted = False
        self._stalled: FrameSource | None = None  # the source the watchdog has given up on
        self._last_ns = 0  # last frame (or open) of the current source
        self._seen_frame = False  # the current source has given a frame (the first may be slow)
        self._attempts = 0  # reopen attempts so far, against cfg.max_reopen
        self._streak = 0  # reopens in a row that gave no frame: sets the back-off
        self._threads: list[threading.Thread] = []
        self._closed = False

    @property
    def stall_count(self) -> int:
        return self.stats.stalls

    def start(self) -> CaptureThread:
        """Open the source here, so bad input raises UserError on the caller's thread, then start reading."""
        if self._threads:
            raise RuntimeError("CaptureThread.start() called twice")
        src = open_source(self.uri, self.cfg)
        self.source, self.live, self.fps, self.size = src, src.live, src.fps, src.size
        self._capacity = 1 if src.live else FILE_QUEUE
        self._last_ns = time.monotonic_ns()
        self._threads = [threading.Thread(target=self._read_loop, name="capture", daemon=True)]
        if src.live:
            self._threads.append(threading.Thread(target=self._watch, name="capture-watchdog", daemon=True))
        for t in self._threads:
            t.start()
        log.info("capture: %s (%s, %s fps, %s)", src.name, "live" if src.live else "file", src.fps, src.size)
        return self

    def get(self, timeout: float) -> Frame | None:
        """The next frame, or None when none came within ``timeout`` s or the source has ended."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._frames:
                if self._exhausted:
                    self.ended.set()
                    return None
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)
            frame = self._frames.popleft()
            self._cond.notify_all()
            return frame

    # --- reader thread ------------------------------------------------------------------------------------
    def _read_loop(self) -> None:
        src, seq, corrupt_seen, t0 = self.source, 0, 0, None
        try:
            while not self._stop.is_set():
                if src is None:
                    src, corrupt_seen, t0 = self._reopen(), 0, None
                    if src is None:
                        break
                img = src.read()
                self.stats.corrupt += src.corrupt - corrupt_seen
                corrupt_seen = src.corrupt
                if self._stop.is_set():
                    break
                if self._stalled is src or (img is None and src.live):
                    if self._stalled is not src:
                        self._count_stall(src, "the source ended or failed")
                    src.close()  # a frame arriving after the stall is stale: reopen anyway
                    src = None
                    continue
                if img is None:
                    if not self.cfg.loop:
                        log.info("capture: %s ended after %d frame(s)", src.name, self.stats.frames)
                        break
                    src.close()
                    src, corrupt_seen, t0 = open_source(self.uri, self.cfg), 0, None
                    self.source = src
                    continue
                if self.cfg.realtime and not src.live and src.pos_ms is not None:
                    t0 = self._pace(src.pos_ms / 1000.0, t0)
                t = time.monotonic_ns()
                self._last_ns, self._seen_frame = t, True
                self._put(Frame(seq, t, img, None if src.live else src.pos_ms), src.live)
                seq += 1
        except UserError as e:  # a looped file that went away
            self.error = str(e)
            log.error("capture: %s", e)
        except Exception as e:  # the reader must report, not die silently
            self.error = f"capture failed: {e}"
            log.exception("capture: reader stopped on an error")
        finally:
            if src is not None:
                src.close()
            with self._cond:
                self._exhausted = True
                if not self._frames:
                    self.ended.set()
                self._cond.notify_all()

    def _pace(self, pos_s: float, t0: float | None) -> float:
        """Hold a recorded frame until its time comes; t0 is the monotonic time of position 0."""
        now = time.monotonic()
        if t0 is None:
            return now - pos_s
        if (delay := t0 + pos_s - now) > 0:
            self._stop.wait(delay)
        return t0

    def _put(self, frame: Frame, live: bool) -> None:
        if self.on_frame is not None:
            self.on_frame()
        with self._cond:
            self.stats.frames += 1
            if live:
                while len(self._frames) >= self._capacity:
                    self._frames.popleft()
                    self.stats.dropped += 1
            else:
                while len(self._frames) >= self._capacity and not self._stop.is_set():
                    self._cond.wait(0.1)
            self._frames.append(frame)
            self._cond.notify_all()

    def _reopen(self) -> FrameSource | None:
        """Reopen a live source until it opens, ``cfg.max_reopen`` attempts are used up, or stop.

        Waits grow (0.2 s doubling to 5 s) while opens fail or reopened sources give no frame at all, so a
        camera that opens but never delivers is not hammered in a tight loop.
        """
        self.source = None
        self._streak = 0 if self._seen_frame else self._streak + 1
        while not self._stop.is_set():
            if 0 <= self.cfg.max_reopen <= self._attempts:
                self.error = f"capture: gave up on {redact(self.uri)} after {self._attempts} reopen attempt(s)"
                log.error(self.error)
                return None
            if self._streak and self._stop.wait(min(BACKOFF_S[0] * 2 ** (self._streak - 1), BACKOFF_S[1])):
                break
            self._attempts += 1
            try:
                src = open_source(self.uri, self.cfg)
            except UserError as e:
                log.warning("capture: reopen attempt %d failed: %s", self._attempts, e)
                self._streak += 1
                continue
            self.stats.reopens += 1
            self._last_ns, self._seen_frame = time.monotonic_ns(), False
            self.source = src
            log.info("capture: reopened %s (reopen %d)", src.name, self.stats.reopens)
            return src
        return None

    def _count_stall(self, src: FrameSource, why: str) -> None:
        with self._cond:
            if self._stalled is src:
                return
            self._stalled = src
            self.stats.stalls += 1
        log.warning("capture: %s: %s (stall %d); reopening", src.name, why, self.stats.stalls)

    # --- watchdog thread ----------------------------------------------------------------------------------
    def _watch(self) -> None:
        """Notice a live source that stopped giving frames, and wake its reader so it can reopen it."""
        timeout_ns = int(self.cfg.stall_timeout_s * 1e9)
        period = min(0.1, self.cfg.stall_timeout_s / 5)
        while not self._stop.wait(period):
            src = self.source
            if src is None or self._stalled is src:
                continue
            idle_ns = time.monotonic_ns() - self._last_ns
            if idle_ns > (timeout_ns if self._seen_frame else max(timeout_ns, int(FIRST_FRAME_S * 1e9))):
                self._count_stall(src, f"no frame for {idle_ns / 1e9:.1f} s")
                src.abort()

    # --- shutdown -----------------------------------------------------------------------------------------
    def close(self) -> list[str]:
        """Stop reading and release the source; returns (and logs) the names of threads still alive."""
        if self._closed:
            return [t.name for t in self._threads if t.is_alive()]
        self._closed = True
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        src = self.source
        if src is not None:
            src.abort()  # wake a read blocked on a silent source
        alive = []
        for t in reversed(self._threads):
            t.join(self._join_timeout_s)
            if t.is_alive():
                alive.append(t.name)
                log.error(
                    "capture: thread %r still alive %.1f s after stop (blocked in %s.read())",
                    t.name,
                    self._join_timeout_s,
                    type(src).__name__,
                )
        log.info("capture: closed; %s", self.stats.to_dict())
        return alive

    def __enter__(self) -> CaptureThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

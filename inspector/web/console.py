"""The live console's state, apart from HTTP: what the inspection thread hands over and what the pages read.

Three hooks into the line, none of which waits on a client:

- :class:`ConsoleSink` (a PartSink): each part goes into bounded rings (recent defects with their crops, recent
  scores) under a lock held for a few appends;
- :class:`StreamView` (wraps the line's view): only while a stream client watches and a stream frame is due
  (``web.stream_fps``), a snapshot of what the overlay reads (:func:`snapshot`: a few list and dict copies, the
  frame itself shared) is dropped into a latest-frame slot; the console's encoder thread renders the overlay from
  it and encodes the JPEG, so neither drawing nor encoding nor a slow or absent client slows inspection;
- :meth:`WebConsole.apply_pending`: a supervisor's threshold change, queued by a request, is applied between
  two frames on the inspection thread (the same :meth:`Pipeline.set_live` a configuration reload uses).
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from itertools import islice
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from engines.heatmap import overlay_heatmap
from inspector.records import Part, Verdict

if TYPE_CHECKING:
    from inspector.config import WebConfig
    from inspector.line import Line
    from inspector.pipeline import FrameView, LoopStats, View

log = logging.getLogger(__name__)

HIST_BINS = 20  # score histogram: bins of 0.05 over [0, 1]
SNAP_LATENCIES = 500  # latencies and sharpness values a stream frame's snapshot carries
THUMB_PX = 160  # thumbnails are at most this many px on a side (the full crop is served too)


@dataclass
class DefectEntry:
    """One rejected part the page can show: its record and, encoded on first request, its images."""

    part: Part
    wall: float  # wall clock (s) it was decided
    jpeg: dict[str, bytes] = field(default_factory=dict)  # "crop", "thumb", "map": encoded once, on demand

    def info(self) -> dict[str, Any]:
        p = self.part
        score = None if p.score is None or not np.isfinite(p.score) else round(float(p.score), 4)
        return {
            "id": p.part_id,
            "verdict": p.verdict.value,
            "score": score,
            "class": p.cls,
            "reason": p.reason,
            "time": round(self.wall, 3),
            "frame": p.frame_index,
            "has_crop": p.crop is not None and p.crop.size > 0,
            "has_map": p.anomaly_map is not None,
        }


@dataclass
class ThresholdChange:
    """A supervisor's request; the inspection thread fills ``old`` and sets ``done`` when it is applied."""

    new: float
    who: str
    address: str
    reason: str
    old: float | None = None
    applied_at: float | None = None  # wall clock
    done: threading.Event = field(default_factory=threading.Event)


def snapshot(view: FrameView, stats: LoopStats) -> tuple[FrameView, LoopStats]:
    """What the overlay reads, copied on the inspection thread so the encoder thread can draw it while the line
    moves on: the frame (never written again after inspection, so shared), the lists of the frame's detections,
    tracks (each copied) and parts, the loop's counters and the summary's counts, recent parts and last latencies."""
    from inspector.pipeline import FrameView

    v = FrameView(
        view.image, view.seq, view.roi, list(view.detections), [copy.copy(t) for t in view.tracks], list(view.parts)
    )
    st = copy.copy(stats)
    st._win = []  # noqa: SLF001 - the fps window; the snapshot keeps the fps already computed
    src = stats.summary
    if src is not None:
        sm = copy.copy(src)
        sm.counts = dict(src.counts)
        sm.recent = dict(src.recent)
        for name in ("latencies", "sharpness"):  # the last few hundred are plenty for a drawn figure
            d = getattr(src, name, None)
            if isinstance(d, deque):
                setattr(sm, name, deque(reversed(list(islice(reversed(d), SNAP_LATENCIES))), maxlen=d.maxlen))
        st.summary = sm
    return v, st


class ConsoleSink:
    """The console's PartSink: appends to bounded rings under a short lock, never waits."""

    def __init__(self, console: WebConsole) -> None:
        self.console = console

    def on_part(self, part: Part) -> None:
        self.console.record(part)

    def close(self) -> None:
        """Nothing to flush: the console closes with the line (it may linger for a last look)."""


class StreamView:
    """The line's view with the stream tapped off it; ``paused`` and ``update``'s answer are the wrapped view's."""

    def __init__(self, inner: View, console: WebConsole) -> None:
        self.inner = inner
        self.console = console

    @property
    def paused(self) -> bool:
        return bool(getattr(self.inner, "paused", False))

    def update(self, view: FrameView | None, stats: LoopStats) -> bool:
        if view is not None:
            self.console.offer_frame(view, stats)
        return self.inner.update(view, stats)

    def close(self) -> None:
        """The wrapped view is a stage of its own and closed by the line."""


class WebConsole:
    """State shared by the line (inspection thread) and the HTTP server (its own threads); see the module doc."""

    def __init__(self, cfg: WebConfig, line: Line) -> None:
        self.cfg = cfg
        self.line = line
        self._lock = threading.Lock()
        self._defects: deque[DefectEntry] = deque(maxlen=cfg.recent_defects)
        self._scores: deque[tuple[bool, float]] = deque(maxlen=cfg.score_window)  # (defect?, P(defect))
        self._latency: deque[float] = deque(maxlen=cfg.score_window)
        self.parts_seen = 0
        # the stream: a latest-frame slot filled by the inspection thread, emptied by the encoder thread
        self.clients = 0  # stream clients connected now (the HTTP side counts them)
        self._slot: tuple[FrameView, LoopStats] | None = None
        self._slot_ready = threading.Event()
        self._next_frame_t = 0.0
        self.frames_offered = 0  # snapshots the inspection thread handed over
        self.frames_replaced = 0  # ... that the encoder had not taken yet when a newer one came
        self.handoff_s = 0.0  # inspection-thread time spent taking those snapshots (s, summed)
        self.render_s = 0.0  # encoder-thread time rendering + encoding (s, summed)
        self._render_errors = 0
        self._jpeg: bytes | None = None
        self.jpeg_seq = 0
        self._jpeg_cond = threading.Condition()
        # threshold changes
        self._pending: ThresholdChange | None = None
        self._change_lock = threading.Lock()  # one change at a time, request to audit row
        self.ended = threading.Event()  # the line stopped inspecting
        self.closing = threading.Event()
        self._encoder = threading.Thread(target=self._encode_loop, name="web-encoder", daemon=True)
        self._encoder.start()

    # --- inspection thread -----------------------------------------------------------------------------
    def record(self, part: Part) -> None:
        """A part decided: into the rings (the sink's one job)."""
        entry = DefectEntry(part, time.time()) if part.verdict is not Verdict.OK else None
        score = part.score if part.verdict is not Verdict.NO_VERDICT and part.score is not None else None
        with self._lock:
            self.parts_seen += 1
            if entry is not None:
                self._defects.append(entry)
            if score is not None and np.isfinite(score):
                self._scores.append((part.verdict is Verdict.DEFECT, float(score)))
            if part.verdict is not Verdict.NO_VERDICT and part.latency_ms is not None:
                self._latency.append(part.latency_ms)

    def offer_frame(self, view: FrameView, stats: LoopStats) -> None:
        """Called every frame: only when a client watches and a stream frame is due, a snapshot of what the
        overlay draws goes into the slot (the encoder thread renders and encodes it)."""
        if self.clients <= 0:
            return
        now = time.monotonic()
        if now < self._next_frame_t:
            return
        period = 1.0 / self.cfg.stream_fps
        # on schedule (a late frame does not shift the next one), but never a burst after a pause or at the start
        self._next_frame_t = max(self._next_frame_t + period, now + period / 2)
        t0 = time.perf_counter()
        snap = snapshot(view, stats)
        self.handoff_s += time.perf_counter() - t0
        self.frames_offered += 1
        if self._slot is not None:
            self.frames_replaced += 1
        self._slot = snap  # one reference: the encoder takes the latest, an older one is simply replaced
        self._slot_ready.set()

    @property
    def pending(self) -> ThresholdChange | None:
        """A threshold change waiting for the next frame boundary (one attribute read per frame)."""
        return self._pending

    def apply_pending(self, line: Line) -> None:
        """Between two frames, on the inspection thread: the new threshold replaces the running one."""
        with self._lock:
            change, self._pending = self._pending, None
        if change is None or line.pipeline is None:
            return
        cfg = line.cfg.model_copy(deep=True)
        cfg.model.threshold = change.new
        change.old = float(line.pipeline.threshold)
        line.pipeline.set_live(cfg, change.new, None)  # no ROI change: no part in flight is lost
        line.cfg = cfg
        if line.reloader is not None:  # a later SIGHUP compares the file with what is in force now
            line.reloader.running = cfg
        change.applied_at = time.time()
        change.done.set()
        log.warning(
            "threshold %.4f -> %.4f by %s from %s (web console): %s",
            change.old,
            change.new,
            change.who,
            change.address,
            change.reason,
        )

    # --- HTTP side ---------------------------------------------------------------------------------------
    def request_threshold(self, change: ThresholdChange, timeout_s: float = 5.0) -> bool:
        """Queue ``change`` for the inspection thread and wait until it is applied (True) or ``timeout_s`` has
        passed (False: withdrawn, never applied later). The caller holds :attr:`change_lock`."""
        with self._lock:
            self._pending = change
        if change.done.wait(timeout_s):
            return True
        with self._lock:
            if self._pending is change:  # not taken yet: withdraw it
                self._pending = None
                return False
        return change.done.wait(timeout_s)  # taken just now: the apply is a few lines

    @property
    def change_lock(self) -> threading.Lock:
        return self._change_lock

    def threshold(self) -> float | None:
        p = self.line.pipeline
        return None if p is None else float(p.threshold)

    def defects(self) -> list[dict[str, Any]]:
        with self._lock:
            entries = list(self._defects)
        return [e.info() for e in reversed(entries)]  # newest first

    def defect_image(self, part_id: int, kind: str) -> bytes | None:
        """The JPEG of a recent defect's crop, thumbnail or anomaly map (None: no such part or image)."""
        with self._lock:
            entry = next((e for e in self._defects if e.part.part_id == part_id), None)
        if entry is None:
            return None
        if kind in entry.jpeg:
            return entry.jpeg[kind]
        crop = entry.part.crop
        if crop is None or crop.size == 0:
            return None
        if kind == "crop":
            img = crop
        elif kind == "thumb":
            s = THUMB_PX / max(crop.shape[:2])
            img = cv2.resize(crop, None, fx=s, fy=s, interpolation=cv2.INTER_AREA) if s < 1 else crop
        elif kind == "map":
            if entry.part.anomaly_map is None:
                return None
            img = overlay_heatmap(crop, entry.part.anomaly_map)
        else:
            return None
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, self.cfg.jpeg_quality])
        if not ok:
            return None
        entry.jpeg[kind] = data = buf.tobytes()
        return data

    def histogram(self) -> dict[str, Any]:
        with self._lock:
            scores = list(self._scores)
        edges = np.linspace(0.0, 1.0, HIST_BINS + 1)
        ok = np.array([s for d, s in scores if not d], dtype=np.float64)
        bad = np.array([s for d, s in scores if d], dtype=np.float64)
        return {
            "edges": [round(float(e), 4) for e in edges],
            "ok": np.histogram(np.clip(ok, 0, 1), edges)[0].tolist(),
            "defect": np.histogram(np.clip(bad, 0, 1), edges)[0].tolist(),
            "threshold": self.threshold(),
            "n": len(scores),
        }

    def state(self) -> dict[str, Any]:
        """Counts, rates, latency and the line's state (the health snapshot), for the page's live panel."""
        h = self.line.health()
        counts = h.parts.as_dict()
        parts = sum(counts.values())
        with self._lock:
            lat = np.array(self._latency, dtype=np.float64)
        stats = self.line.stats
        return {
            "running": not self.ended.is_set(),
            "health": h.as_dict(),
            "parts": parts,
            "counts": counts,
            "yield_pct": round(100.0 * counts["ok"] / parts, 2) if parts else None,
            "fps": round(float(h.inspection.fps), 2),
            "latency_ms": {
                "last": None if stats.last_latency_ms is None else round(stats.last_latency_ms, 2),
                "p50": round(float(np.percentile(lat, 50)), 2) if lat.size else None,
                "p99": round(float(np.percentile(lat, 99)), 2) if lat.size else None,
            },
            "threshold": self.threshold(),
            "model": self.line.model_label,
            "stream": {
                "clients": self.clients,
                "max_fps": self.cfg.stream_fps,
                "frames": self.jpeg_seq,
                "render_errors": self._render_errors,
            },
        }

    def latest_jpeg(self, after: int, timeout_s: float) -> tuple[int, bytes | None]:
        """The newest stream JPEG newer than sequence ``after``, waiting up to ``timeout_s`` (any thread)."""
        with self._jpeg_cond:
            self._jpeg_cond.wait_for(lambda: self.jpeg_seq > after or self.closing.is_set(), timeout_s)
            return self.jpeg_seq, self._jpeg

    # --- the encoder thread ------------------------------------------------------------------------------
    def _encode_loop(self) -> None:
        from inspector.overlay import render_overlay

        params = [cv2.IMWRITE_JPEG_QUALITY, self.cfg.jpeg_quality]
        while not self.closing.is_set():
            if not self._slot_ready.wait(0.2):
                continue
            self._slot_ready.clear()
            snap, self._slot = self._slot, None
            if snap is None:
                continue
            t0 = time.perf_counter()
            try:
                img = render_overlay(*snap, health=self.line.health())
                if img.shape[1] > self.cfg.stream_width:
                    s = self.cfg.stream_width / img.shape[1]
                    img = cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
                ok, buf = cv2.imencode(".jpg", img, params)
            except Exception as exc:  # noqa: BLE001 - a frame that cannot be drawn must not end the stream
                self._render_errors += 1
                if self._render_errors in (1, 10, 100) or self._render_errors % 1000 == 0:
                    log.error("stream frame not rendered (%d so far): %s", self._render_errors, exc)
                continue
            self.render_s += time.perf_counter() - t0
            if ok:
                with self._jpeg_cond:
                    self._jpeg = buf.tobytes()
                    self.jpeg_seq += 1
                    self._jpeg_cond.notify_all()

    def close(self, timeout_s: float = 2.0) -> None:
        self.closing.set()
        with self._jpeg_cond:
            self._jpeg_cond.notify_all()
        self._encoder.join(timeout_s)
        if self._encoder.is_alive():
            log.warning("web console: encoder thread still alive after %.1f s", timeout_s)

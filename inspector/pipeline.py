"""The inspection loop: frame -> (undistort) -> ROI -> segment -> track -> crop -> ONE batch -> verdict -> sinks.

:class:`Pipeline` is the per-frame logic (no threads, easy to test with drawn frames and a fake engine).
:func:`run_loop` pulls frames from a capture (``get(timeout)``, ``ended``, ``stall_count``, ``stats``), feeds
the pipeline and a view (window, terminal dashboard or nothing) on the calling thread, which must be the main
thread when the view is an OpenCV window. Parts in flight when the source stalls or ends get a no-verdict with
the reason, so they are rejected, never passed; parts that pass the camera unseen while it is stalled are the
gate's to divert: sinks with an optional ``on_line_state(ok, reason)`` (the gate actuator) are told when the
source stalls and when frames flow again.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from engines.base import Engine
from engines.heatmap import compact
from engines.preprocess import combine_views, model_views, normalize
from ground.errors import UserError
from inspector.config import InspectorConfig
from inspector.detect import Detection, Detector, Roi
from inspector.events import Summary
from inspector.records import Frame, Part, Verdict
from inspector.sharpness import blurred_reason, sharpness
from inspector.stages import Capture, LineObserver, Sink, Undistorter
from inspector.track import Track, Tracker, unclassified_reason

log = logging.getLogger(__name__)

MAX_FAILURES_IN_A_ROW = 10  # frames; then the error stops the run


@dataclass(slots=True)
class FrameView:
    """What the overlay draws for one frame."""

    image: np.ndarray
    seq: int
    roi: Roi
    detections: list[Detection]
    tracks: list[Track]
    parts: list[Part]  # verdicts made on this frame


class Pipeline:
    def __init__(
        self,
        cfg: InspectorConfig,
        engine: Engine,
        sinks: list[Sink],
        *,
        undistorter: Undistorter | None = None,
        keep_crops: bool = True,
    ) -> None:
        self.cfg = cfg
        self.engine = engine
        self.meta = engine.meta
        self.sinks = list(sinks)
        self.threshold = cfg.model.threshold if cfg.model.threshold is not None else float(self.meta.threshold)
        self.min_sharpness = cfg.model.min_sharpness
        self.undistorter = undistorter
        self.keep_crops = keep_crops
        self.roi: Roi | None = None
        self.detector: Detector | None = None
        self.tracker: Tracker | None = None
        self._frame_size: tuple[int, int] | None = None
        self._centre = cfg.tracking.classify_at == "centre"
        self._prev_views: dict[int, tuple[np.ndarray, int, int, tuple[int, int, int, int]]] = {}
        self.last: FrameView | None = None
        self.frames = 0
        self._sink_failed: set[int] = set()
        self._last_capture_ns: int | None = None
        self._intervals: deque[int] = deque(maxlen=15)  # recent capture intervals: a lost part's time to trigger

    # --- per frame --------------------------------------------------------------------------------------
    def process(self, frame: Frame) -> list[Part]:
        """One frame in, the parts decided on it out (also handed to every sink)."""
        image = frame.image
        if self.undistorter is not None:
            image = self.undistorter.apply(image)
        self._ensure_geometry(image)
        if self._last_capture_ns is not None and 0 < (dt := frame.t_capture_ns - self._last_capture_ns) < 10**9:
            self._intervals.append(dt)
        self._last_capture_ns = frame.t_capture_ns
        dets = self.detector.detect(image)
        update = self.tracker.update(dets, frame.seq)
        t_detect = time.monotonic_ns()

        todo: list[tuple[Part, np.ndarray]] = []
        for trig in update.triggered:
            t = trig.track
            if trig.use_previous and t.track_id in self._prev_views:
                crop, seq, t_cap, bbox = self._prev_views[t.track_id]
            else:
                crop, seq, t_cap, bbox = self._crop(image, t.det.bbox), frame.seq, frame.t_capture_ns, t.det.bbox
            part = Part(t.track_id, seq, t_cap, bbox, t_detect_ns=t_detect)
            todo.append((part, crop))
        parts = [p for p, _ in todo]
        if todo:
            self._classify(todo)
        for t in update.ended_unclassified:
            parts.append(self._no_verdict(t, frame, unclassified_reason(t, self.roi)))
        self._emit(parts)  # first: the tracks are marked judged, so these parts must reach the gate
        if self._centre:
            self._remember_views(image, frame)
        self.frames += 1
        self.last = FrameView(image, frame.seq, self.roi, dets, list(self.tracker.tracks), parts)
        return parts

    def flush(self, reason: str, frame: Frame | None = None) -> list[Part]:
        """Source stalled or ended: every part in flight gets a no-verdict (rejected) with ``reason``."""
        if self.tracker is None:
            return []
        pending = self.tracker.flush()
        self._prev_views.clear()
        parts = [self._no_verdict(t, frame, reason) for t in pending]
        self._emit(parts)
        return parts

    @property
    def frame_size(self) -> tuple[int, int] | None:
        """(width, height) of the frames being inspected; None before the first."""
        return self._frame_size

    def set_live(self, cfg: InspectorConfig, threshold: float, roi: Roi | None = None) -> list[Part]:
        """A configuration reload, applied between two frames (on this thread): the threshold, the sharpness
        floor, and with ``roi`` a new ROI (validated against :attr:`frame_size` by the caller). The parts tracked
        under the old ROI get a no-verdict (rejected) and are returned: their positions mean nothing in the new
        one. Every other section of ``cfg`` must equal the running one (a restart changes those)."""
        self.cfg, self.threshold, self.min_sharpness = cfg, threshold, cfg.model.min_sharpness
        if roi is None or roi == self.roi or self._frame_size is None:  # no frame yet: the first builds the ROI
            return []
        lost = self.flush("ROI changed by a configuration reload; part in flight rejected")
        next_id = self.tracker.next_id if self.tracker is not None else 1
        self.roi = roi
        self.detector = Detector(self.cfg.detection, roi)
        self.tracker = Tracker(self.cfg.tracking, roi, first_id=next_id)
        log.info("ROI %s in a %dx%d frame (reloaded)", roi, *self._frame_size)
        return lost

    # --- helpers ----------------------------------------------------------------------------------------
    def _ensure_geometry(self, image: np.ndarray) -> None:
        size = (image.shape[1], image.shape[0])
        if size == self._frame_size:
            return
        if self._frame_size is not None:
            log.warning("frame size changed from %s to %s; tracking restarts", self._frame_size, size)
            self.flush(f"frame size changed to {size[0]}x{size[1]}")
        self._frame_size = size
        self.roi = Roi.from_config(self.cfg.roi, size)
        self.detector = Detector(self.cfg.detection, self.roi)
        next_id = self.tracker.next_id if self.tracker is not None else 1  # part ids stay unique in a run
        self.tracker = Tracker(self.cfg.tracking, self.roi, first_id=next_id)
        log.info("ROI %s in a %dx%d frame", self.roi, *size)

    def _crop(self, image: np.ndarray, bbox: tuple[int, int, int, int]) -> np.ndarray:
        m = self.cfg.detection.margin
        x, y, w, h = bbox
        H, W = image.shape[:2]
        return image[max(0, y - m) : min(H, y + h + m), max(0, x - m) : min(W, x + w + m)].copy()

    def _remember_views(self, image: np.ndarray, frame: Frame) -> None:
        """classify_at centre: keep each pending part's current view in case the previous frame wins."""
        views = {}
        for t in self.tracker.tracks:
            if not t.classified and t.last_frame == frame.seq and not t.det.clipped:
                views[t.track_id] = (self._crop(image, t.det.bbox), frame.seq, frame.t_capture_ns, t.det.bbox)
        self._prev_views = views

    def _classify(self, todo: list[tuple[Part, np.ndarray]]) -> None:
        """All parts due on this frame go through the engine as ONE batch."""
        meta = self.meta
        t0 = time.monotonic_ns()
        for p, _ in todo:
            p.t_infer_start_ns = t0
        try:
            per_crop = [model_views(c, meta) for _, c in todo]  # engines.preprocess: one view, or one per tile
            counts = [len(v) for v in per_crop]
            sharp = [sharpness(v[0]) for v in per_crop]
            batch = normalize(np.stack([v for vs in per_crop for v in vs]), meta)
            t1 = time.monotonic_ns()
            probs = combine_views(np.asarray(self.engine.infer(batch)), counts, meta)  # a part: its worst tile
            t2 = time.monotonic_ns()
            maps = self.engine.last_maps  # anomaly models only (engines.anomaly)
            scores = meta.defect_scores(probs)
            classes = meta.predicted_classes(probs, self.threshold)
        except Exception as exc:  # noqa: BLE001 - any engine failure rejects these parts, never stops the line
            log.error("inference failed for %d part(s): %s", len(todo), exc)
            now = time.monotonic_ns()
            for p, crop in todo:
                p.verdict, p.reason, p.t_verdict_ns = Verdict.NO_VERDICT, f"inference failed: {exc}", now
                p.crop = crop if self.keep_crops else None
            return
        now = time.monotonic_ns()
        first = np.cumsum([0, *counts[:-1]])  # index of each part's first view in the batch
        for i, (p, crop) in enumerate(todo):
            s = float(scores[i])
            p.cls = classes[i]
            p.score = s if math.isfinite(s) else None
            p.t_verdict_ns = now
            p.crop = crop if self.keep_crops else None
            if maps is not None and self.keep_crops:  # the map of the part's first view (anomaly models: one)
                p.anomaly_map = compact(maps[first[i], 0])
            p.sharpness = sharp[i]
            p.t_engine_start_ns, p.t_engine_end_ns, p.batch_size = t1, t2, len(todo)
            if meta.binary:
                ok = s < self.threshold
            elif meta.ok_class is not None:
                ok = p.cls == meta.ok_class
            else:
                p.verdict, p.reason = Verdict.NO_VERDICT, "the model has no OK class; cannot pass a part"
                continue
            if not np.all(np.isfinite(probs[i])):
                p.verdict, p.reason = Verdict.NO_VERDICT, "model output is not a number"
            elif self.min_sharpness is not None and sharp[i] < self.min_sharpness:
                p.verdict, p.reason = Verdict.NO_VERDICT, blurred_reason(sharp[i], self.min_sharpness)
            else:
                p.verdict = Verdict.OK if ok else Verdict.DEFECT

    def _no_verdict(self, t: Track, frame: Frame | None, reason: str) -> Part:
        now = time.monotonic_ns()
        seq = frame.seq if frame is not None else t.last_frame
        t_cap = frame.t_capture_ns if frame is not None else now
        t_cap += self._to_trigger_ns(t)
        return Part(t.track_id, seq, t_cap, t.det.bbox, Verdict.NO_VERDICT, reason=reason, t_verdict_ns=now)

    def _to_trigger_ns(self, t: Track) -> int:
        """A part lost short of the trigger line reaches it (and so the gate) later than its last sighting: the
        gate's fire time (capture time + camera-to-gate travel) must aim at the part, not at where it was."""
        roi = self.roi
        if roi is None or not self._intervals or t.pos >= roi.trigger_px:
            return 0
        frame_ns = float(np.median(self._intervals))
        v = t.velocity[0] if roi.horizontal else t.velocity[1]
        v = -v if roi.direction in ("left", "up") else v
        if v <= 0.5:  # not moving along the belt (px/frame): no estimate
            return 0
        return int((roi.trigger_px - t.pos) / v * frame_ns)

    def line_state(self, ok: bool, reason: str) -> None:
        """Tell the sinks that care (``on_line_state``, optional) whether the camera sees the line."""
        for sink in self.sinks:
            if not isinstance(sink, LineObserver):
                continue
            try:
                sink.on_line_state(ok, reason)
            except Exception:  # noqa: BLE001 - one failing sink must not stop inspection
                log.exception("sink %s failed on line state %s (%s)", sink, ok, reason)

    def _emit(self, parts: list[Part]) -> None:
        for p in parts:
            for i, sink in enumerate(self.sinks):
                try:
                    sink.on_part(p)
                except Exception:  # noqa: BLE001 - one failing sink must not stop inspection
                    if i not in self._sink_failed:
                        log.exception("sink %s failed on part %d (further failures logged once)", sink, p.part_id)
                        self._sink_failed.add(i)


# --- the loop ---------------------------------------------------------------------------------------------
class View(Protocol):
    """Window, terminal dashboard or nothing: told about each frame, says whether to keep going."""

    paused: bool

    def update(self, view: FrameView | None, stats: LoopStats) -> bool: ...

    def close(self) -> None: ...


@dataclass
class LoopStats:
    frames: int = 0
    t_start: float = field(default_factory=time.monotonic)
    fps: float = 0.0  # recent frames/s
    last_latency_ms: float | None = None
    dropped: int = 0
    stalls: int = 0
    errors: int = 0  # frames that could not be inspected (parts in flight rejected)
    stalled: bool = False  # the source is stalled now (set when it stalls, cleared when frames flow again)
    summary: Summary | None = None  # the run's counts, last defect and recent parts (the views read it)
    last_seq: int | None = None  # the source's number of the last frame inspected (what a scorecard could see)
    _win: list[float] = field(default_factory=list)

    def tick(self) -> None:
        self.frames += 1
        now = time.monotonic()
        self._win.append(now)
        while self._win and now - self._win[0] > 1.0:
            self._win.pop(0)
        span = now - self._win[0] if len(self._win) > 1 else 0.0
        self.fps = (len(self._win) - 1) / span if span > 0 else 0.0

    t_end: float | None = None  # when the loop ended (shutdown time is not inspection time)

    @property
    def elapsed(self) -> float:
        return (self.t_end if self.t_end is not None else time.monotonic()) - self.t_start


class NullView:
    paused = False

    def update(self, view: FrameView | None, stats: LoopStats) -> bool:
        return True

    def close(self) -> None:
        pass


def run_loop(
    pipeline: Pipeline,
    capture: Capture,
    *,
    view: View | None = None,
    stats: LoopStats | None = None,
    stop: threading.Event | None = None,
    max_frames: int | None = None,
    poll_s: float = 0.05,
    progress: Callable[[], None] | None = None,
) -> LoopStats:
    """Pull frames until the source ends, ``stop`` is set, the view says quit, or ``max_frames``.

    ``progress`` is called on this thread after each frame is handled (its parts handed to the sinks) and on each
    paused turn, never on an empty wait: the service watchdog's progress clock, and the point between two frames
    where a configuration reload is applied."""
    view = view or NullView()
    stats = stats or LoopStats()
    stop = stop or threading.Event()
    seen_stalls = capture.stall_count
    stalled = False  # parts pass the camera unseen: the gate holds until frames flow again
    last_frame: Frame | None = None
    end_reason = "run stopped before the part was classified"
    failures = 0
    while not stop.is_set():
        if view.paused:
            if progress is not None:
                progress()  # the operator paused the window: not a hang
            if not view.update(None, stats):
                break
            time.sleep(poll_s)
            continue
        frame = capture.get(timeout=poll_s)
        stalls = capture.stall_count
        if stalls != seen_stalls:
            seen_stalls = stalls
            stats.stalls = stalls
            lost = pipeline.flush("source stalled; part in flight rejected", last_frame)
            log.warning("source stalled (%d so far); %d part(s) in flight rejected", stalls, len(lost))
            if not stalled:
                stalled = stats.stalled = True
                pipeline.line_state(False, "SOURCE_STALL")
        if frame is None:
            if capture.ended.is_set():
                frame = capture.get(timeout=0)
                if frame is None:
                    end_reason = "source ended before the part was classified"
                    break
            else:
                if not view.update(None, stats):
                    break
                continue
        if stalled:
            stalled = stats.stalled = False
            log.warning("source back after a stall: frames flow again")
            pipeline.line_state(True, "SOURCE_STALL")
        try:
            pipeline.process(frame)
            failures = 0
        except UserError:
            raise
        except Exception as exc:  # noqa: BLE001 - one bad frame must not stop the line; many in a row do
            failures += 1
            stats.errors += 1
            log.exception("frame %d could not be inspected", frame.seq)
            pipeline.flush(f"inspection error on frame {frame.seq}: {exc}", frame)
            if failures >= MAX_FAILURES_IN_A_ROW:
                raise
        last_frame = frame
        stats.last_seq = frame.seq
        if progress is not None:
            progress()
        stats.tick()
        stats.dropped = int(capture.stats.dropped)
        if pipeline.last is not None:
            for p in pipeline.last.parts:
                if p.latency_ms is not None and p.verdict is not Verdict.NO_VERDICT:
                    stats.last_latency_ms = p.latency_ms
        if not view.update(pipeline.last, stats):
            break
        if max_frames is not None and stats.frames >= max_frames:
            end_reason = "run stopped (--max-frames) before the part was classified"
            break
    pipeline.flush(end_reason, last_frame)
    stats.t_end = time.monotonic()
    return stats

"""Following each part along the belt, so it is classified exactly once.

Association is greedy nearest-neighbour on the predicted position (constant velocity, smoothed), gated by a
largest jump and by the belt direction: a part never moves backwards by more than a little jitter. A new track
starts with the belt's current velocity, which keeps parts that follow each other closely apart. A small blob
overlapping a part matched in the same frame is a fragment of it, not a new part. A track that is not seen
coasts along its velocity for ``max_missed_frames`` (parts that touch and merge for a few frames), then ends.

A track is due for classification once: the first frame its centre is at or past the trigger line, it has been
seen ``min_hits`` times and its box does not touch the ROI edge (a clipped part is never judged on half a
view). With ``classify_at: centre`` the frame before the crossing is used instead when its centre was closer
to the line. A track that ends without having been classified is reported so that it is rejected.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from inspector.config import TrackingConfig
from inspector.detect import Detection, Roi


@dataclass(slots=True)
class Track:
    track_id: int  # = the part id
    det: Detection  # latest detection
    pos: float  # along the belt from the ROI entry edge, px (coasted while missed)
    centroid: tuple[float, float]  # full-frame px (coasted while missed)
    velocity: tuple[float, float] = (0.0, 0.0)  # px per frame, smoothed
    first_frame: int = 0
    last_frame: int = 0
    hits: int = 1
    missed: int = 0
    classified: bool = False
    ever_unclipped: bool = False
    prev_offset: float | None = None  # |pos - trigger| in the previous seen frame (classify_at centre)
    prev_frame: int | None = None


@dataclass(slots=True)
class Trigger:
    """A track due for classification; ``use_previous`` = classify the previous frame's view of it."""

    track: Track
    use_previous: bool = False


@dataclass(slots=True)
class TrackUpdate:
    triggered: list[Trigger] = field(default_factory=list)
    ended_unclassified: list[Track] = field(default_factory=list)


class Tracker:
    def __init__(self, cfg: TrackingConfig, roi: Roi) -> None:
        self.cfg = cfg
        self.roi = roi
        self.tracks: list[Track] = []
        self._next_id = 1
        self._alpha = 0.5  # velocity smoothing

    def update(self, detections: list[Detection], frame_index: int) -> TrackUpdate:
        """Associate this frame's detections; return the tracks due for classification and those that ended."""
        cfg, roi = self.cfg, self.roi
        out = TrackUpdate()
        pairs: list[tuple[float, int, int]] = []
        for ti, t in enumerate(self.tracks):
            dt = max(1, frame_index - t.last_frame)
            px = t.centroid[0] + t.velocity[0] * (dt if t.missed == 0 else 1)
            py = t.centroid[1] + t.velocity[1] * (dt if t.missed == 0 else 1)
            for di, d in enumerate(detections):
                cx, cy = d.centroid
                cost = ((cx - px) ** 2 + (cy - py) ** 2) ** 0.5
                if cost > cfg.max_distance_px:
                    continue
                if roi.along(cx, cy) < t.pos - cfg.max_backtrack_px:
                    continue
                pairs.append((cost, ti, di))
        pairs.sort()
        track_for: dict[int, int] = {}
        det_taken: set[int] = set()
        for _, ti, di in pairs:
            if ti in track_for or di in det_taken:
                continue
            track_for[ti] = di
            det_taken.add(di)

        matched_boxes = []
        for ti, di in track_for.items():
            t, d = self.tracks[ti], detections[di]
            dt = max(1, frame_index - t.last_frame)
            vx = (d.centroid[0] - t.centroid[0]) / dt if t.missed == 0 else t.velocity[0]
            vy = (d.centroid[1] - t.centroid[1]) / dt if t.missed == 0 else t.velocity[1]
            a = self._alpha if t.hits > 1 else 1.0
            t.velocity = (a * vx + (1 - a) * t.velocity[0], a * vy + (1 - a) * t.velocity[1])
            if t.hits > 0:
                t.prev_offset = abs(t.pos - roi.trigger_px)
                t.prev_frame = t.last_frame
            t.det, t.centroid = d, d.centroid
            t.pos = roi.along(*d.centroid)
            t.last_frame = frame_index
            t.hits += 1
            t.missed = 0
            t.ever_unclipped |= not d.clipped
            matched_boxes.append(d.bbox)

        belt_v = self._belt_velocity()
        for di, d in enumerate(detections):
            if di in det_taken or _is_fragment(d, matched_boxes):
                continue
            t = Track(
                self._next_id, d, roi.along(*d.centroid), d.centroid, belt_v, frame_index, frame_index,
                ever_unclipped=not d.clipped,
            )
            self._next_id += 1
            self.tracks.append(t)

        alive: list[Track] = []
        for ti, t in enumerate(self.tracks):
            if t.last_frame != frame_index:  # not seen this frame: coast
                t.missed += 1
                t.centroid = (t.centroid[0] + t.velocity[0], t.centroid[1] + t.velocity[1])
                t.pos = roi.along(*t.centroid)
                if t.missed > cfg.max_missed_frames:
                    if not t.classified and t.hits >= cfg.min_hits:
                        out.ended_unclassified.append(t)
                    continue
            alive.append(t)
            if ti in track_for and self._due(t):
                t.classified = True
                use_prev = (
                    cfg.classify_at == "centre"
                    and t.prev_offset is not None
                    and t.prev_frame is not None
                    and t.prev_offset < abs(t.pos - roi.trigger_px)
                )
                out.triggered.append(Trigger(t, use_prev))
        self.tracks = alive
        return out

    def flush(self) -> list[Track]:
        """End every track (source ended or stalled); -> those never classified, for a no-verdict."""
        pending = [t for t in self.tracks if not t.classified and t.hits >= self.cfg.min_hits]
        self.tracks = []
        return pending

    def _due(self, t: Track) -> bool:
        return (
            not t.classified
            and t.hits >= self.cfg.min_hits
            and not t.det.clipped
            and t.pos >= self.roi.trigger_px
        )

    def _belt_velocity(self) -> tuple[float, float]:
        """Mean velocity of established tracks: a new part moves with the belt."""
        vs = [t.velocity for t in self.tracks if t.hits >= 3 and t.missed == 0]
        if not vs:
            return (0.0, 0.0)
        return (sum(v[0] for v in vs) / len(vs), sum(v[1] for v in vs) / len(vs))


def unclassified_reason(t: Track, roi: Roi) -> str:
    """Why a track ended without a verdict, in words for the events file and the defect log."""
    if not t.ever_unclipped:
        return "never fully inside the ROI (clipped by its edge)"
    if t.pos < roi.trigger_px:
        return "lost before reaching the trigger line"
    return "left the ROI without a verdict"


def _is_fragment(d: Detection, boxes: list[tuple[int, int, int, int]]) -> bool:
    """Most of ``d`` lies inside a box already matched this frame: a piece of that part."""
    x, y, w, h = d.bbox
    for bx, by, bw, bh in boxes:
        ix = max(0, min(x + w, bx + bw) - max(x, bx))
        iy = max(0, min(y + h, by + bh) - max(y, by))
        if ix * iy >= 0.5 * w * h:
            return True
    return False

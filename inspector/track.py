"""Following each part along the belt, so it is classified exactly once.

Association is greedy nearest-neighbour on the predicted position (constant velocity, smoothed), gated by a
largest jump and by the belt direction: a part never moves backwards by more than a little jitter. A new track
starts with the belt's current velocity, which keeps parts that follow each other closely apart. A small blob
overlapping a part matched in the same frame is a fragment of it, not a new part. Touching parts that merge
into one blob (two or more tracks predicted inside its box) stay themselves: the leading one is placed at the
blob's leading edge and the trailing one at its trailing edge, each with its own size, so they come apart as
themselves (and are cropped at those estimated boxes if due meanwhile). A track that is not seen coasts along
its velocity for ``max_missed_frames``, then ends.

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
    merged: bool = False  # last seen inside a blob shared with another part (position estimated)


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
    def __init__(self, cfg: TrackingConfig, roi: Roi, first_id: int = 1) -> None:
        self.cfg = cfg
        self.roi = roi
        self.tracks: list[Track] = []
        self._next_id = first_id
        self._alpha = 0.5  # velocity smoothing

    def update(self, detections: list[Detection], frame_index: int) -> TrackUpdate:
        """Associate this frame's detections; return the tracks due for classification and those that ended."""
        cfg, roi = self.cfg, self.roi
        out = TrackUpdate()
        pred = [self._predict(t, frame_index) for t in self.tracks]

        # Touching parts segmented as one blob: every track predicted inside the blob's box stays itself.
        merged: dict[int, int] = {}  # track index -> detection index
        for di, d in enumerate(detections):
            inside = [
                ti
                for ti, pt in enumerate(pred)
                if ti not in merged and self.tracks[ti].missed == 0 and _contains(d.bbox, pt)
            ]
            if len(inside) >= 2:
                merged.update({ti: di for ti in inside})

        pairs: list[tuple[float, int, int]] = []
        merged_dets = set(merged.values())
        for ti, t in enumerate(self.tracks):
            if ti in merged:
                continue
            px, py = pred[ti]
            for di, d in enumerate(detections):
                if di in merged_dets:
                    continue
                cx, cy = d.centroid
                cost = ((cx - px) ** 2 + (cy - py) ** 2) ** 0.5
                if cost > cfg.max_distance_px or roi.along(cx, cy) < t.pos - cfg.max_backtrack_px:
                    continue
                pairs.append((cost, ti, di))
        pairs.sort()
        track_for: dict[int, int] = {}
        det_taken: set[int] = set(merged_dets)
        for _, ti, di in pairs:
            if ti in track_for or di in det_taken:
                continue
            track_for[ti] = di
            det_taken.add(di)

        # A piece of a part (a dark band split its blob) lies where the whole part should be now: join it to
        # the part instead of starting a new one.
        expected = {}
        for ti in track_for:
            t = self.tracks[ti]
            x, y, w, h = t.det.bbox
            expected[ti] = (int(x + pred[ti][0] - t.centroid[0]), int(y + pred[ti][1] - t.centroid[1]), w, h)
        pieces: dict[int, list[Detection]] = {ti: [detections[di]] for ti, di in track_for.items()}
        for di, d in enumerate(detections):
            if di in det_taken:
                continue
            for ti, box in expected.items():
                if _overlap_fraction(d.bbox, box) >= 0.5:
                    pieces[ti].append(d)
                    det_taken.add(di)
                    break
        matched_boxes = [detections[di].bbox for di in merged_dets]
        for ti, ds in pieces.items():
            d = ds[0] if len(ds) == 1 else _join(ds)
            self._observe(self.tracks[ti], d, frame_index)
            matched_boxes.append(d.bbox)
        for di in merged_dets:
            self._place_merged([self.tracks[ti] for ti, d in merged.items() if d == di], detections[di], frame_index)

        belt_v = self._belt_velocity()
        for di, d in enumerate(detections):
            if di in det_taken or _is_fragment(d, matched_boxes):
                continue
            t = Track(
                self._next_id,
                d,
                roi.along(*d.centroid),
                d.centroid,
                belt_v,
                frame_index,
                frame_index,
                ever_unclipped=not d.clipped,
            )
            self._next_id += 1
            self.tracks.append(t)

        alive: list[Track] = []
        for t in self.tracks:
            if t.last_frame != frame_index:  # not seen this frame: coast
                t.missed += 1
                t.centroid = (t.centroid[0] + t.velocity[0], t.centroid[1] + t.velocity[1])
                t.pos = roi.along(*t.centroid)
                if t.missed > cfg.max_missed_frames:
                    if not t.classified and t.hits >= cfg.min_hits:
                        out.ended_unclassified.append(t)
                    continue
            alive.append(t)
            if t.last_frame == frame_index and self._due(t):
                t.classified = True
                use_prev = (
                    cfg.classify_at == "centre"
                    and not t.merged
                    and t.prev_offset is not None
                    and t.prev_frame is not None
                    and t.prev_offset < abs(t.pos - roi.trigger_px)
                )
                out.triggered.append(Trigger(t, use_prev))
        self.tracks = alive
        return out

    def _predict(self, t: Track, frame_index: int) -> tuple[float, float]:
        dt = max(1, frame_index - t.last_frame) if t.missed == 0 else 1
        return (t.centroid[0] + t.velocity[0] * dt, t.centroid[1] + t.velocity[1] * dt)

    def _observe(self, t: Track, d: Detection, frame_index: int, *, merged: bool = False) -> None:
        """``d`` is where ``t`` is now: update its velocity (smoothed), position and counters."""
        dt = max(1, frame_index - t.last_frame)
        vx = (d.centroid[0] - t.centroid[0]) / dt if t.missed == 0 else t.velocity[0]
        vy = (d.centroid[1] - t.centroid[1]) / dt if t.missed == 0 else t.velocity[1]
        a = self._alpha if t.hits > 1 else 1.0
        t.velocity = (a * vx + (1 - a) * t.velocity[0], a * vy + (1 - a) * t.velocity[1])
        t.prev_offset = abs(t.pos - self.roi.trigger_px)
        t.prev_frame = t.last_frame
        t.det, t.centroid = d, d.centroid
        t.pos = self.roi.along(*d.centroid)
        t.last_frame = frame_index
        t.hits += 1
        t.missed = 0
        t.merged = merged
        t.ever_unclipped |= not d.clipped

    def _place_merged(self, group: list[Track], blob: Detection, frame_index: int) -> None:
        """Tracks hidden in one blob: the leading one at the blob's leading edge, the trailing one at its
        trailing edge (each by its own last size), any between coasting; each gets an estimated box."""
        roi = self.roi
        x, y, w, h = blob.bbox
        ends = (roi.along(x, y), roi.along(x + w, y + h))
        lo, hi = min(ends), max(ends)
        group.sort(key=lambda t: t.pos)
        for i, t in enumerate(group):
            bw, bh = t.det.bbox[2], t.det.bbox[3]
            half = (bw if roi.horizontal else bh) / 2
            if i == len(group) - 1:
                pos = hi - half
            elif i == 0:
                pos = lo + half
            else:
                pos = min(max(t.pos + (t.velocity[0] if roi.horizontal else t.velocity[1]), lo + half), hi - half)
            cx, cy = roi.point(pos, roi.across(*t.centroid))
            box = (int(round(cx - bw / 2)), int(round(cy - bh / 2)), bw, bh)
            clipped = blob.clipped and not _contains_box(blob.bbox, box, inset=2)
            self._observe(t, Detection(box, (cx, cy), int(bw * bh), clipped), frame_index, merged=True)

    @property
    def next_id(self) -> int:
        return self._next_id

    def flush(self) -> list[Track]:
        """End every track (source ended or stalled); -> those never classified, for a no-verdict."""
        pending = [t for t in self.tracks if not t.classified and t.hits >= self.cfg.min_hits]
        self.tracks = []
        return pending

    def _due(self, t: Track) -> bool:
        return not t.classified and t.hits >= self.cfg.min_hits and not t.det.clipped and t.pos >= self.roi.trigger_px

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


def _contains(box: tuple[int, int, int, int], p: tuple[float, float]) -> bool:
    bx, by, bw, bh = box
    return bx <= p[0] <= bx + bw and by <= p[1] <= by + bh


def _contains_box(outer: tuple[int, int, int, int], inner: tuple[int, int, int, int], inset: int = 0) -> bool:
    ox, oy, ow, oh = outer
    x, y, w, h = inner
    return x >= ox + inset and y >= oy + inset and x + w <= ox + ow - inset and y + h <= oy + oh - inset


def _overlap_fraction(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """Share of box ``a`` that lies inside box ``b``."""
    x, y, w, h = a
    bx, by, bw, bh = b
    ix = max(0, min(x + w, bx + bw) - max(x, bx))
    iy = max(0, min(y + h, by + bh) - max(y, by))
    return ix * iy / max(1, w * h)


def _join(ds: list[Detection]) -> Detection:
    """Pieces of one part -> one detection: union box, area-weighted centre."""
    x0 = min(d.bbox[0] for d in ds)
    y0 = min(d.bbox[1] for d in ds)
    x1 = max(d.bbox[0] + d.bbox[2] for d in ds)
    y1 = max(d.bbox[1] + d.bbox[3] for d in ds)
    area = sum(d.area for d in ds)
    cx = sum(d.centroid[0] * d.area for d in ds) / max(1, area)
    cy = sum(d.centroid[1] * d.area for d in ds) / max(1, area)
    return Detection((x0, y0, x1 - x0, y1 - y0), (cx, cy), area, any(d.clipped for d in ds))


def _is_fragment(d: Detection, boxes: list[tuple[int, int, int, int]]) -> bool:
    """Most of ``d`` lies inside a box already matched this frame: a piece of that part."""
    x, y, w, h = d.bbox
    for bx, by, bw, bh in boxes:
        ix = max(0, min(x + w, bx + bw) - max(x, bx))
        iy = max(0, min(y + h, by + bh) - max(y, by))
        if ix * iy >= 0.5 * w * h:
            return True
    return False

"""One typed health snapshot of a running line - camera, inspection, parts, gate, log, model - that every view
reads (Prometheus metrics, MQTT stats, the overlay window's panel and the terminal dashboard), so that they
cannot disagree and none of them probes the stages itself.

:class:`HealthProbe` holds the live stages and builds a :class:`Health` on demand (from any thread: it only
reads counters and the gate's own thread-safe :meth:`state`).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from itertools import islice
from typing import TYPE_CHECKING, Any

import numpy as np

from inspector.records import Part, Verdict
from inspector.stages import Capture, GateMonitor

if TYPE_CHECKING:
    from inspector.defectlog.writer import DefectLog
    from inspector.events import Summary
    from inspector.pipeline import LoopStats


@dataclass(frozen=True, slots=True)
class CameraHealth:
    live: bool = False  # a camera or stream (not a recording)
    frames: int = 0  # frames read from the source
    dropped: int = 0  # live frames replaced by a newer one before inspection took them
    corrupt: int = 0  # undecodable frames skipped
    stalls: int = 0  # times the source gave no frame for stall_timeout_s
    reopens: int = 0  # successful reopens after a stall
    stalled: bool = False  # stalled now: parts pass the camera unseen


@dataclass(frozen=True, slots=True)
class InspectionHealth:
    frames: int = 0  # frames the inspection loop processed
    fps: float = 0.0  # recent frames/s
    errors: int = 0  # frames that could not be inspected
    t_start: float | None = None  # monotonic s the loop started
    dropped: int = 0  # the capture's dropped frames as of the last frame inspected
    stalls: int = 0  # source stalls the loop has seen (parts in flight rejected)
    latency_ms: float | None = None  # capture to verdict of the last part judged
    latency_p50_ms: float | None = None  # over the last RECENT_LATENCIES parts judged
    latency_p99_ms: float | None = None


@dataclass(frozen=True, slots=True)
class PartCounts:
    ok: int = 0
    defect: int = 0
    no_verdict: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"ok": self.ok, "defect": self.defect, "no_verdict": self.no_verdict}


@dataclass(frozen=True, slots=True)
class GateHealth:
    connected: bool
    link_down: bool
    running: bool
    held: bool
    hold_reasons: tuple[str, ...]
    rejects_unacked: int
    in_flight: int
    queue: int
    events: dict[str, int]


@dataclass(frozen=True, slots=True)
class LogHealth:
    queue: int  # rows and gate outcomes waiting for the writer
    images_waiting: int
    counters: dict[str, int]  # DefectLog.stats


@dataclass(frozen=True, slots=True)
class ModelHealth:
    name: str
    backend: str


@dataclass(frozen=True, slots=True)
class RecentParts:
    """What the operator's views show beside the counts: the last verdict and the last defects (with crops)."""

    last: Part | None = None  # the last part decided (any verdict)
    defects: tuple[Part, ...] = ()  # the last few defects, newest first
    by_id: dict[int, Part] = field(default_factory=dict)  # the last few parts of any verdict (box colours)


@dataclass(frozen=True, slots=True)
class Health:
    time: float  # wall clock (s) the snapshot was taken
    camera: CameraHealth
    inspection: InspectionHealth
    parts: PartCounts
    gate: GateHealth | None = None
    log: LogHealth | None = None
    model: ModelHealth | None = None
    recent: RecentParts = field(default_factory=RecentParts)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: every field as plain values, the recent parts (with their crops) as part ids only."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = asdict(v) if is_dataclass(v) and f.name != "recent" else v
        r = self.recent
        out["recent"] = {"last": r.last.part_id if r.last else None, "defects": [p.part_id for p in r.defects]}
        return out


@dataclass
class HealthProbe:
    """The line's stages, as monitoring reads them; :meth:`snapshot` any time, from any thread."""

    stats: LoopStats | None = None
    capture: Capture | None = None
    gate: GateMonitor | None = None
    dlog: DefectLog | None = None
    model: ModelHealth | None = None
    _keep: dict = field(default_factory=dict, repr=False)

    def attach(self, *, stats: Any = None, capture: Any = None, gate: Any = None, dlog: Any = None) -> None:
        """Set the stages that exist (None: leave as is)."""
        for name, obj in (("stats", stats), ("capture", capture), ("gate", gate), ("dlog", dlog)):
            if obj is not None:
                setattr(self, name, obj)

    def snapshot(self) -> Health:
        s, cap = self.stats, self.capture
        cs = cap.stats if cap is not None else None
        camera = CameraHealth(
            live=bool(cap.live) if cap is not None else False,
            frames=int(cs.frames) if cs is not None else 0,
            dropped=int(cs.dropped) if cs is not None else 0,
            corrupt=int(cs.corrupt) if cs is not None else 0,
            stalls=int(cs.stalls) if cs is not None else 0,
            reopens=int(cs.reopens) if cs is not None else 0,
            stalled=bool(s.stalled) if s is not None else False,
        )
        summary = s.summary if s is not None else None
        p50, p99 = _recent_latency(summary)
        inspection = (
            InspectionHealth(
                s.frames, float(s.fps), s.errors, s.t_start, s.dropped, s.stalls, s.last_latency_ms, p50, p99
            )
            if s is not None
            else InspectionHealth()
        )
        counts = summary.counts if summary is not None else {}
        parts = PartCounts(counts.get(Verdict.OK, 0), counts.get(Verdict.DEFECT, 0), counts.get(Verdict.NO_VERDICT, 0))
        recent = (
            RecentParts(summary.last, tuple(reversed(summary.defects)), dict(summary.recent))
            if summary is not None
            else RecentParts()
        )
        return Health(time.time(), camera, inspection, parts, self._gate(), self._log(), self.model, recent)

    def _gate(self) -> GateHealth | None:
        if self.gate is None:
            return None
        st = self.gate.state()
        return GateHealth(
            bool(st["connected"]),
            bool(st["link_down"]),
            bool(st["running"]),
            bool(st["held"]),
            tuple(st["hold_reasons"]),
            int(st["rejects_unacked"]),
            int(st["in_flight"]),
            int(st["queue"]),
            dict(st["events"]),
        )

    def _log(self) -> LogHealth | None:
        d = self.dlog
        if d is None:
            return None
        return LogHealth(int(d.queue_depth), int(d.images_waiting), dict(d.stats))


RECENT_LATENCIES = 1000  # the views' p50/p99: recent parts, cheap enough for every snapshot


def _recent_latency(summary: Summary | None) -> tuple[float | None, float | None]:
    if summary is None or not summary.latencies:
        return None, None
    recent = np.fromiter(islice(reversed(summary.latencies), RECENT_LATENCIES), dtype=np.float64)
    p50, p99 = np.percentile(recent, (50, 99))
    return float(p50), float(p99)

"""Per-part events (JSONL) and the run summary: the two sinks every `inspector run` has.

One JSON object per line, one line per part, written as the verdict is made: part_id, frame_index (the frame
the verdict was made on), t_capture (monotonic seconds), verdict, score (P(defect)), class, latency_ms
(capture to verdict), bbox (x, y, w, h in frame px), reason (why no verdict, else null) and sharpness (variance
of the Laplacian of the crop at the model's input size; null for a part never cropped, e.g. lost or in flight).
"""

from __future__ import annotations

import json
import logging
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ground.errors import UserError
from inspector.records import Part, Verdict

if TYPE_CHECKING:
    from rich.table import Table

log = logging.getLogger(__name__)

MAX_LATENCIES = 100_000  # latency percentiles over the last this many parts
LAST_DEFECTS = 6  # defects (with their crops) kept for the views' strip of thumbnails


def part_event(part: Part) -> dict[str, Any]:
    """The part's event line: :meth:`Part.to_row` (kept under this name for callers of the events module)."""
    return part.to_row()


class MemoryEvents:
    """No events file: the events kept in memory, for the run's scorecard only."""

    def __init__(self) -> None:
        self.events: list[dict] = []

    def on_part(self, part: Part) -> None:
        self.events.append(part.to_row())

    def close(self) -> None:
        pass


class EventsFile:
    """JSONL sink. Line-buffered writes of ~200 bytes: cheap enough for the inspection thread."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._f = self.path.open("w", encoding="utf-8", buffering=1)
        except OSError as exc:
            raise UserError(f"--events {self.path}: cannot write there ({exc.strerror}); pick another path") from None

    def on_part(self, part: Part) -> None:
        self._f.write(json.dumps(part.to_row(), separators=(",", ":")) + "\n")

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()


def read_events(path: str | Path) -> list[dict[str, Any]]:
    with Path(path).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


class Summary:
    """Counts and latencies over the run; a sink, so it sees exactly what the gate sees."""

    def __init__(self) -> None:
        self.counts = {v: 0 for v in Verdict}
        self.latencies: deque[float] = deque(maxlen=MAX_LATENCIES)  # the most recent parts
        self.sharpness: deque[float] = deque(maxlen=MAX_LATENCIES)  # the judged crops' sharpness, same window
        self.defects: deque[Part] = deque(maxlen=LAST_DEFECTS)  # the last few defects, oldest first
        self.last: Part | None = None  # the last part decided, any verdict (the views' banner)
        self.recent: dict[int, Part] = {}  # part_id -> part, the last few (overlay colours)

    def on_part(self, part: Part) -> None:
        self.counts[part.verdict] += 1
        if part.verdict is not Verdict.NO_VERDICT and part.latency_ms is not None:
            self.latencies.append(part.latency_ms)
        if part.sharpness is not None:
            self.sharpness.append(part.sharpness)
        if part.verdict is Verdict.DEFECT:
            self.defects.append(part)
        self.last = part
        self.recent[part.part_id] = part
        if len(self.recent) > 64:
            del self.recent[next(iter(self.recent))]

    def close(self) -> None:
        pass

    @property
    def last_defect(self) -> Part | None:
        return self.defects[-1] if self.defects else None

    @last_defect.setter
    def last_defect(self, part: Part) -> None:
        self.defects.append(part)

    @property
    def parts(self) -> int:
        return sum(self.counts.values())

    @property
    def yield_pct(self) -> float | None:
        return 100.0 * self.counts[Verdict.OK] / self.parts if self.parts else None

    def latency_pct(self, q: float) -> float | None:
        return float(np.percentile(self.latencies, q)) if self.latencies else None

    def sharpness_pct(self, q: float) -> float | None:
        return float(np.percentile(self.sharpness, q)) if self.sharpness else None

    def to_dict(self, frames: int, seconds: float, dropped: int, **extra: Any) -> dict[str, Any]:
        return {
            "parts": self.parts,
            "ok": self.counts[Verdict.OK],
            "defect": self.counts[Verdict.DEFECT],
            "no_verdict": self.counts[Verdict.NO_VERDICT],
            "frames": frames,
            "seconds": round(seconds, 3),
            "frames_per_s": round(frames / seconds, 2) if seconds > 0 else None,
            "dropped_frames": dropped,
            "latency_p50_ms": _r(self.latency_pct(50)),
            "latency_p99_ms": _r(self.latency_pct(99)),
            "sharpness_p5": _r(self.sharpness_pct(5)),
            "sharpness_p50": _r(self.sharpness_pct(50)),
            **extra,
        }


_MAIN_KEYS = (
    "parts",
    "ok",
    "defect",
    "no_verdict",
    "frames",
    "frames_per_s",
    "dropped_frames",
    "latency_p50_ms",
    "latency_p99_ms",
)


def summary_table(d: dict[str, Any]) -> Table:
    """The exit summary as a rich table (imported lazily: rich is only for people)."""
    from rich.table import Table

    t = Table(title="inspection summary", show_header=False)
    t.add_column("", style="bold")
    t.add_column("", justify="right")
    extra = [k for k in d if k not in _MAIN_KEYS and k != "seconds"]
    for key in (*_MAIN_KEYS, *extra):
        v = d.get(key)
        t.add_row(key.replace("_", " "), "-" if v is None else str(v))
    return t


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 2)

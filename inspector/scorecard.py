"""Replay scorecard: the runtime's per-part events against the simulator's ground truth.

Every event is assigned to at most one truth part: one that is on screen at the event's frame (within
``tolerance_frames`` of its entry/exit), whose box lies at the same place across the belt, and whose trigger
frame is nearest to the event's frame. A no-verdict event may come a few frames after its part left the view
(a lost track ends late), so it is matched by its place across the belt first. Then, per truth part:

- found (at least one event) or missed (none: on a real line it would pass the gate unjudged);
- split (more than one event within the tolerance of its trigger frame: one part seen as two blobs) or
  duplicated (more events elsewhere: one part judged twice);
- its primary event (nearest the trigger frame) gives the verdict for the confusion matrix and the verdict
  frame error |frame_index - trigger_frame|.

Events that match no part are spurious. Escaped defects (defects judged ok, or missed) are what a line
engineer cares about most, so they are counted on their own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inspector.simulate import read_truth

if TYPE_CHECKING:
    from rich.table import Table

LABELS = ("ok", "defect")
VERDICTS = ("ok", "defect", "no_verdict", "missed")
NO_VERDICT_SLACK_FRAMES = 12  # a lost track ends max_missed_frames (default 5) after its last sighting


@dataclass
class PartResult:
    part_id: int
    label: str
    trigger_frame: int
    events: list[dict] = field(default_factory=list)  # sorted: primary first

    @property
    def primary(self) -> dict | None:
        return self.events[0] if self.events else None

    @property
    def verdict(self) -> str:
        return self.primary["verdict"] if self.primary else "missed"


@dataclass
class Scorecard:
    parts: list[PartResult]
    spurious: list[dict]
    tolerance_frames: int
    split: int = 0  # extra events near the trigger frame
    duplicated: int = 0  # extra events away from it
    not_reached: int = 0  # truth parts due at the trigger after the run's last frame, with no event: not scored

    @property
    def found(self) -> int:
        return sum(1 for p in self.parts if p.events)

    @property
    def missed(self) -> int:
        return len(self.parts) - self.found

    @property
    def confusion(self) -> dict[str, dict[str, int]]:
        m = {lab: dict.fromkeys(VERDICTS, 0) for lab in LABELS}
        for p in self.parts:
            m[p.label][p.verdict] = m[p.label].get(p.verdict, 0) + 1
        return m

    @property
    def correct(self) -> int:
        return sum(1 for p in self.parts if p.verdict == p.label)

    @property
    def accuracy(self) -> float | None:
        return self.correct / len(self.parts) if self.parts else None

    @property
    def escaped_defects(self) -> int:
        """Defects that would pass the gate: judged ok, or never seen."""
        c = self.confusion["defect"]
        return c["ok"] + c["missed"]

    @property
    def frame_errors(self) -> list[int]:
        return [
            abs(int(p.primary["frame_index"]) - p.trigger_frame)
            for p in self.parts
            if p.primary is not None and p.primary["verdict"] != "no_verdict"
        ]

    @property
    def exactly_one_verdict(self) -> bool:
        """Every part judged once (ok/defect), nothing missed, split, duplicated or spurious."""
        return (
            self.missed == 0
            and self.split == 0
            and self.duplicated == 0
            and not self.spurious
            and all(p.verdict in LABELS for p in self.parts)
        )

    def verdicts(self) -> dict[int, str]:
        """part_id -> the verdict of its primary event ('missed' when none)."""
        return {p.part_id: p.verdict for p in self.parts}

    def to_dict(self) -> dict[str, Any]:
        errs = self.frame_errors
        return {
            "parts": len(self.parts),
            "found": self.found,
            "missed": self.missed,
            "split": self.split,
            "duplicated": self.duplicated,
            "spurious": len(self.spurious),
            "confusion": self.confusion,
            "correct": self.correct,
            "accuracy": None if self.accuracy is None else round(self.accuracy, 4),
            "escaped_defects": self.escaped_defects,
            "false_rejects": self.confusion["ok"]["defect"] + self.confusion["ok"]["no_verdict"],
            "verdict_frame_error_mean": round(sum(errs) / len(errs), 3) if errs else None,
            "verdict_frame_error_max": max(errs) if errs else None,
            "verdicts_off_trigger": sum(e > self.tolerance_frames for e in errs),
            "tolerance_frames": self.tolerance_frames,
            "not_reached": self.not_reached,
            "exactly_one_verdict": self.exactly_one_verdict,
            "missed_part_ids": [p.part_id for p in self.parts if not p.events],
            "wrong_part_ids": [p.part_id for p in self.parts if p.events and p.verdict != p.label],
        }

    def table(self) -> Table:
        """Rich renderables: the counts and the confusion matrix (rich is imported only here)."""
        from rich.console import Group
        from rich.table import Table

        d = self.to_dict()
        counts = Table(title="replay scorecard", show_header=False)
        counts.add_column("", style="bold")
        counts.add_column("", justify="right")
        for key in (
            "parts",
            "found",
            "missed",
            "split",
            "duplicated",
            "spurious",
            "accuracy",
            "false_rejects",
            "verdict_frame_error_mean",
            "verdict_frame_error_max",
            "verdicts_off_trigger",
        ):
            v = d[key]
            style = "red" if key in ("missed", "split", "duplicated", "spurious") and v else ""
            counts.add_row(key.replace("_", " "), f"[{style}]{v}[/]" if style else str(v))
        if self.not_reached:
            counts.add_row("not reached (run ended first)", f"[dim]{self.not_reached} not scored[/]")
        esc = d["escaped_defects"]
        counts.add_row("escaped defects", f"[bold red]{esc}[/]" if esc else "[green]0[/]")
        cm = Table(title="truth (rows) x verdict (columns)")
        cm.add_column("truth", style="bold")
        for v in VERDICTS:
            cm.add_column(v, justify="right")
        for lab in LABELS:
            row = self.confusion[lab]
            cells = []
            for v in VERDICTS:
                n = row[v]
                bad = n and v != lab
                cells.append(f"[red]{n}[/]" if bad else str(n))
            cm.add_row(lab, *cells)
        return Group(counts, cm)


def _centre(b) -> tuple[float, float]:
    x, y, w, h = (float(v) for v in b)
    return x + w / 2, y + h / 2


def score(
    events: list[dict],
    truth_csv: str | Path | list[dict],
    tolerance_frames: int = 2,
    seen_until: int | None = None,
) -> Scorecard:
    """Match events (dicts with frame_index, verdict, optional bbox) to the truth parts.

    ``seen_until``: the last frame the run inspected (it stopped early: q, --max-frames). A truth part due at the
    trigger after it, with no event, never reached the camera while the run looked: it is counted as not
    reached, not as missed. A part still in view when the run stopped has its no-verdict event and is scored."""
    truth = read_truth(truth_csv) if isinstance(truth_csv, (str, Path)) else truth_csv
    results = [PartResult(int(t["part_id"]), str(t["label"]), int(t["trigger_frame"])) for t in truth]
    has_box = bool(truth) and all(t.get("w") not in (None, "") for t in truth)
    lateral_axis = _lateral_axis(truth) if has_box else None
    spurious: list[dict] = []
    for ev in events:
        f = int(ev["frame_index"])
        # A no-verdict is often made when a lost track ends, a few frames after the part left the view: allow
        # for that, and tell parts apart by their place across the belt first.
        late = ev.get("verdict") == "no_verdict"
        slack = tolerance_frames + (NO_VERDICT_SLACK_FRAMES if late else 0)
        best: tuple[float, int, int] | None = None
        for i, t in enumerate(truth):
            lat_d = 0.0
            if has_box:
                lo = _frame(t, "enter_frame") - tolerance_frames
                hi = _frame(t, "exit_frame") + slack
                if not lo <= f <= hi:
                    continue
                if ev.get("bbox") is not None and lateral_axis is not None:
                    tc = _centre((t["x"], t["y"], t["w"], t["h"]))[lateral_axis]
                    lat_d = abs(_centre(ev["bbox"])[lateral_axis] - tc)
                    if lat_d > 0.5 * float(t["w"] if lateral_axis == 0 else t["h"]):
                        continue
            elif abs(f - int(t["trigger_frame"])) > slack:
                continue
            d = abs(f - int(t["trigger_frame"]))
            key = (lat_d if late else 0.0, d, i)
            if best is None or key < best:
                best = key
        if best is None:
            spurious.append(ev)
        else:
            results[best[2]].events.append(ev)
    if seen_until is not None:
        kept = [p for p in results if p.trigger_frame <= seen_until or p.events]
        not_reached, results = len(results) - len(kept), kept
    else:
        not_reached = 0
    card = Scorecard(results, spurious, tolerance_frames, not_reached=not_reached)
    for p in results:
        p.events.sort(key=lambda e: (e["verdict"] == "no_verdict", abs(int(e["frame_index"]) - p.trigger_frame)))
        for extra in p.events[1:]:
            if abs(int(extra["frame_index"]) - p.trigger_frame) <= tolerance_frames:
                card.split += 1
            else:
                card.duplicated += 1
    return card


def _frame(t: dict, key: str) -> int:
    """A truth row's entry/exit frame; a file without them falls back to the trigger frame."""
    v = t.get(key)
    return int(t["trigger_frame"]) if v is None or v == "" else int(v)


def _lateral_axis(truth: list[dict]) -> int | None:
    """0 (x) when the belt runs up/down, 1 (y) when it runs left/right: at the trigger line the along-belt
    coordinate of every part is the same, so the axis whose centres spread out is the lateral one."""
    if len(truth) < 2:
        return None
    xs = [_centre((t["x"], t["y"], t["w"], t["h"]))[0] for t in truth]
    ys = [_centre((t["x"], t["y"], t["w"], t["h"]))[1] for t in truth]
    return 1 if (max(ys) - min(ys)) >= (max(xs) - min(xs)) else 0

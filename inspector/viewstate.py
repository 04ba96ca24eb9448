"""The line's state in words, for every operator view (overlay window, terminal dashboard, exit summary).

One place decides what "live", "HOLD", "fail-safe" or "dropping" means, from the typed :class:`Health` snapshot,
so the window and the terminal cannot say different things. Each state has a level (ok / info / warn / bad /
off) that each view maps to its own colours. Pure functions, no OpenCV and no rich here.
"""

from __future__ import annotations

from dataclasses import dataclass

from inspector.health import Health
from inspector.records import Part, Verdict

OK, INFO, WARN, BAD, OFF = "ok", "info", "warn", "bad", "off"


@dataclass(frozen=True, slots=True)
class State:
    name: str  # camera | gate | log | model
    word: str  # the state in one word: live, stalled, replay, linked, HOLD, fail-safe, none, writing, dropping
    level: str  # ok | info | warn | bad | off
    detail: str = ""  # a few more words (counts, hold reasons)


@dataclass(frozen=True, slots=True)
class Banner:
    title: str  # "#37 DEFECT"
    detail: str  # "P(defect) 0.97", or why a part got no verdict
    verdict: Verdict | None  # None: no part decided yet


def line_states(h: Health, *, complete: bool = True) -> list[State]:
    """Camera, gate, log and model; ``complete=False``: the snapshot was built from the loop's counters alone
    (no capture, gate or log known), so only what those say is stated."""
    cam = h.camera
    if cam.stalled:
        camera = State("camera", "stalled", BAD, f"{max(cam.stalls, h.inspection.stalls)} stall(s); parts rejected")
    elif not complete:
        camera = State("camera", "ok", OK, "frames flowing")
    elif cam.live:
        extra = f"{cam.dropped} frames dropped" if cam.dropped else ""
        camera = State("camera", "live", OK, extra)
    else:
        camera = State("camera", "replay", INFO, "recorded source")
    if not complete:
        return [camera, State("gate", "?", OFF), State("log", "?", OFF), State("model", "?", OFF)]
    return [camera, gate_state(h), log_state(h), model_state(h)]


def gate_state(h: Health) -> State:
    g = h.gate
    if g is None:
        return State("gate", "none", OFF, "no reject gate")
    ev = g.events
    if g.link_down or not g.connected:
        return State("gate", "fail-safe", BAD, "link down: the controller rejects every part")
    if g.held:
        return State("gate", "HOLD", WARN, ", ".join(g.hold_reasons) or "held")
    return State("gate", "linked", OK, f"fired {ev.get('fired', 0)}, passed {ev.get('passed', 0)}")


def log_state(h: Health) -> State:
    lg = h.log
    if lg is None:
        return State("log", "none", OFF, "no defect log")
    c = lg.counters
    rows, dropped = c.get("rows", 0), c.get("rows_dropped", 0)
    images_dropped = c.get("images_dropped_queue", 0) + c.get("images_dropped_disk", 0) + c.get("image_errors", 0)
    if dropped:
        return State("log", "dropping", BAD, f"{dropped} rows dropped, {rows} written")
    if images_dropped:
        return State("log", "writing", WARN, f"{rows} rows, {images_dropped} images dropped")
    return State("log", "writing", OK, f"{rows} rows")


def model_state(h: Health) -> State:
    m = h.model
    if m is None:
        return State("model", "?", OFF)
    return State("model", m.name, OK, m.backend)


def score_text(part: Part) -> str:
    """Scores are P(defect), and say so."""
    return "P(defect) -" if part.score is None else f"P(defect) {part.score:.2f}"


def banner(h: Health) -> Banner:
    """The last verdict, as the operator's largest line shows it."""
    p = h.recent.last
    if p is None:
        return Banner("no part yet", "waiting for the first part", None)
    if p.verdict is Verdict.NO_VERDICT:
        return Banner(f"#{p.part_id} NO VERDICT", f"rejected: {p.reason or 'no reason given'}", p.verdict)
    return Banner(f"#{p.part_id} {p.verdict.value.upper()}", score_text(p), p.verdict)


def yield_text(h: Health) -> str:
    p = h.parts
    n = p.ok + p.defect + p.no_verdict
    return f"{100.0 * p.ok / n:.1f} %" if n else "-"


def outcome_lines(h: Health) -> list[str]:
    """What the gate and the defect log did over the run, for the exit summary (printed without -v)."""
    out = []
    if h.gate is not None:
        ev = h.gate.events
        out.append(
            f"gate: {ev.get('parts', 0)} parts, {ev.get('rejects', 0)} rejects: fired {ev.get('fired', 0)}, "
            f"passed {ev.get('passed', 0)}, fail-safe {ev.get('failsafe', 0)}, missed {ev.get('missed', 0)}, "
            f"unconfirmed {ev.get('unconfirmed', 0)}; held {ev.get('holds', 0)} time(s), "
            f"link lost {ev.get('link_lost', 0)} time(s)"
        )
    if h.log is not None:
        c = h.log.counters
        images_dropped = c.get("images_dropped_queue", 0) + c.get("images_dropped_disk", 0) + c.get("image_errors", 0)
        out.append(
            f"log: {c.get('rows', 0)} rows written, {c.get('rows_dropped', 0)} dropped; "
            f"{c.get('images', 0)} images saved, {images_dropped} dropped"
        )
    return out

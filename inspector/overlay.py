"""The live overlay: what the line operator watches. OpenCV window, on the MAIN thread only.

:func:`render_overlay` draws one frame (pure: the frame in, a new, larger canvas out: the frame untouched but for
the marks on its parts, and a status bar beside it) so it can be tested pixel by pixel; :class:`Window` shows it,
at most ``max_fps`` times a second so a flat-out replay is not slowed down by drawing, and handles the keys:
q (or Esc) quit, p pause/resume, s snapshot (PNG). The bar reads the line's typed health snapshot
(:class:`inspector.health.Health`), like the metrics and the terminal dashboard.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from engines.heatmap import overlay_heatmap
from ground.errors import UserError
from ground.qtfonts import quiet_qt_fonts
from inspector import viewstate
from inspector.health import Health, HealthProbe
from inspector.pipeline import FrameView, LoopStats
from inspector.records import Part, Verdict

log = logging.getLogger(__name__)

# BGR colours; tests look for them.
ROI_COLOR = (0, 255, 255)  # yellow
TRIGGER_COLOR = (255, 0, 255)  # magenta
PENDING_COLOR = (255, 200, 0)  # light blue: tracked, not decided yet
VERDICT_COLORS = {
    Verdict.OK: (0, 200, 0),
    Verdict.DEFECT: (0, 0, 255),
    Verdict.NO_VERDICT: (0, 140, 255),  # orange: rejected without a verdict
}
BAR_COLOR = (32, 32, 32)  # the status bar beside the image
TEXT_COLOR = (235, 235, 235)
DIM_COLOR = (150, 150, 150)
PAUSED_COLOR = (0, 215, 255)  # amber
NO_PART_COLOR = (90, 90, 90)  # the banner before the first part
LEVEL_COLORS = {  # the line's states (inspector.viewstate levels)
    viewstate.OK: (80, 220, 80),
    viewstate.INFO: (255, 200, 120),
    viewstate.WARN: PAUSED_COLOR,
    viewstate.BAD: (60, 60, 255),
    viewstate.OFF: DIM_COLOR,
}
FONT = cv2.FONT_HERSHEY_SIMPLEX
STRIP = 3  # last defects shown as thumbnails
KEYS = "q quit   p pause   s snapshot"

Rect = tuple[int, int, int, int]  # x, y, w, h


@dataclass(frozen=True)
class Layout:
    """Where everything goes for one frame size: the frame at the top left, untouched except for what marks its
    parts, and a status bar to its right (the canvas is larger than the frame). Sizes follow the frame's height
    (``unit`` 1.0 at 480 px), so text is as legible at 1920x1080 as at 640x480. Content-independent: nothing
    moves from one frame to the next."""

    frame: tuple[int, int]  # w, h
    canvas: tuple[int, int]  # w, h
    unit: float
    bar: Rect
    banner: Rect
    paused: Rect
    stats: Rect
    states: Rect
    strip_title: Rect
    thumbs: tuple[Rect, ...]
    keys: Rect
    text_scale: float
    text_thick: int
    line_h: int
    big_scale: float
    big_thick: int
    label_scale: float
    label_thick: int

    @property
    def image(self) -> Rect:
        return (0, 0, self.frame[0], self.frame[1])


@lru_cache(maxsize=8)
def layout_for(width: int, height: int) -> Layout:
    """The overlay's layout for a ``width`` x ``height`` frame."""
    u = min(3.0, max(0.9, height / 480.0))  # below 0.9 the bar's text is too small to read
    pad = max(4, round(8 * u))
    line_h = round(21 * u)
    bar_w = round(250 * u)
    x0, w = width + pad, bar_w - 2 * pad
    y = pad

    def take(h: int) -> Rect:
        nonlocal y
        r = (x0, y, w, h)
        y += h + pad
        return r

    banner = take(round(30 * u) + 2 * line_h + pad)
    paused = take(round(36 * u))
    stats = take(3 * line_h)
    states = take(4 * line_h)
    strip_title = take(line_h)
    y -= pad // 2
    gap = pad
    side = (w - (STRIP - 1) * gap) // STRIP
    thumbs = tuple((x0 + i * (side + gap), y, side, side) for i in range(STRIP))
    y += side + line_h + pad  # the caption under each thumbnail
    keys = take(2 * line_h)
    canvas = (width + bar_w, max(height, y))
    return Layout(
        frame=(width, height),
        canvas=canvas,
        unit=u,
        bar=(width, 0, bar_w, canvas[1]),
        banner=banner,
        paused=paused,
        stats=stats,
        states=states,
        strip_title=strip_title,
        thumbs=thumbs,
        keys=keys,
        text_scale=0.5 * u,
        text_thick=max(1, round(u)),
        line_h=line_h,
        big_scale=0.95 * u,
        big_thick=max(2, round(2 * u)),
        label_scale=0.45 * u,
        label_thick=max(1, round(u)),
    )


def render_overlay(
    view: FrameView, stats: LoopStats, *, paused: bool = False, health: Health | None = None
) -> np.ndarray:
    """The image the operator sees (BGR): the frame with the ROI, trigger line and each tracked part (boxed and
    labelled by verdict, labels kept apart and inside the frame), and beside it the status bar: the last verdict
    large, PAUSED, counts, yield, frames/s, latency, the camera/gate/log/model state and the last defects.

    ``health`` is the line's snapshot (:meth:`inspector.line.Line.health`); without it the bar says what the loop's
    own counters (``stats``) know and marks the gate, log and model as unknown."""
    complete = health is not None
    if health is None:
        health = HealthProbe(stats=stats).snapshot()
    img = view.image
    frame = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR) if img.ndim == 2 else img
    H, W = frame.shape[:2]
    lay = layout_for(W, H)
    # one C call (a numpy fill of a 1920x1080 canvas with a colour tuple took ~60 ms)
    out = cv2.copyMakeBorder(frame, 0, lay.canvas[1] - H, 0, lay.canvas[0] - W, cv2.BORDER_CONSTANT, value=BAR_COLOR)
    image = out[:H, :W]  # a view: the drawing below lands in the canvas
    _draw_parts(image, view, health, lay)
    _draw_bar(out, health, lay, paused, complete)
    return out


# --- the image: ROI, trigger, parts -------------------------------------------------------------------------
def _draw_parts(image: np.ndarray, view: FrameView, health: Health, lay: Layout) -> None:
    t = max(1, round(2 * lay.unit))
    r = view.roi
    cv2.rectangle(image, (r.x, r.y), (r.x + r.w - 1, r.y + r.h - 1), ROI_COLOR, t)
    a, b = r.trigger_segment()
    cv2.line(image, a, b, TRIGGER_COLOR, t)
    items = label_items(view, health)
    for (x, y, w, h), color, _ in items:
        cv2.rectangle(image, (x, y), (x + w - 1, y + h - 1), color, t)
    for rect, text, color in labels_for(items, image.shape[1], image.shape[0], lay):
        draw_label(image, text, rect, color, lay.label_scale, lay.label_thick)


Item = tuple[tuple[int, int, int, int], tuple[int, int, int], list[str]]  # box, colour, label (long to short)


def labels_for(items: list[Item], width: int, height: int, lay: Layout) -> list[tuple[Rect, str, tuple[int, int, int]]]:
    """The labels drawn for ``items`` in a ``width`` x ``height`` frame: (box, text, fill), none overlapping.
    Decided parts claim their places first: their verdict matters more than a pending part's id."""
    order = sorted(range(len(items)), key=lambda i: items[i][1] == PENDING_COLOR)
    placed = place_labels([(items[i][0], items[i][2]) for i in order], width, height, lay.label_scale, lay.label_thick)
    return [(got[0], got[1], items[i][1]) for i, got in zip(order, placed, strict=True) if got is not None]


def label_items(view: FrameView, health: Health) -> list[Item]:
    """Each part on this frame: (box, colour by verdict, its label from the longest form to the shortest)."""
    decided: dict[int, Part] = {p.part_id: p for p in view.parts}
    recent = health.recent.by_id
    items = []
    tracked = set()
    for tr in view.tracks:
        tracked.add(tr.track_id)
        part = decided.get(tr.track_id) or recent.get(tr.track_id)
        color = VERDICT_COLORS[part.verdict] if part is not None else PENDING_COLOR
        items.append((tr.det.bbox, color, _label_texts(tr.track_id, part)))
    for p in view.parts:  # decided now, already gone from the tracks (no-verdicts at exit)
        if p.part_id not in tracked:
            items.append((p.bbox, VERDICT_COLORS[p.verdict], _label_texts(p.part_id, p)))
    return items


def _label_texts(part_id: int, part: Part | None) -> list[str]:
    """The label, longest first; a shorter one is used where the long one finds no free place."""
    if part is None:
        return [f"#{part_id}"]
    word = {Verdict.OK: "ok", Verdict.DEFECT: "DEFECT", Verdict.NO_VERDICT: "NO VERDICT"}[part.verdict]
    if part.verdict is Verdict.NO_VERDICT or part.score is None:
        return [f"#{part_id} {word}", f"#{part_id}"]
    return [f"#{part_id} {word} P(defect) {part.score:.2f}", f"#{part_id} {word} {part.score:.2f}", f"#{part_id}"]


def label_size(text: str, scale: float, thick: int) -> tuple[int, int]:
    """Width and height of a label's filled box (the text and a margin)."""
    (tw, th), base = cv2.getTextSize(text, FONT, scale, thick)
    m = max(2, round(th * 0.3))
    return tw + 2 * m, th + base + 2 * m


def place_labels(
    items: list[tuple[tuple[int, int, int, int], list[str]]], width: int, height: int, scale: float, thick: int
) -> list[tuple[Rect, str] | None]:
    """A place for each box's label: above the box, else below, else stacked further out; inside the frame and
    clear of every label placed before it. A label that finds no place tries its shorter forms, then is left out
    (its box keeps the verdict's colour). Greedy, in the order given."""
    taken: list[Rect] = []
    out: list[tuple[Rect, str] | None] = []
    for (x, y, _, h), texts in items:
        got = None
        for text in texts:
            lw, lh = label_size(text, scale, thick)
            if lw > width or lh > height:
                continue
            lx = min(max(0, x), width - lw)
            tops = [y - lh - 1, y + h + 1, y + 1]
            tops += [y - lh - 1 - k * (lh + 1) for k in range(1, 4)] + [y + h + 1 + k * (lh + 1) for k in range(1, 4)]
            for top in tops:
                rect = (lx, top, lw, lh)
                if top < 0 or top + lh > height or any(_overlap(rect, o) for o in taken):
                    continue
                got = (rect, text)
                break
            if got is not None:
                break
        if got is not None:
            taken.append(got[0])
        out.append(got)
    return out


def _overlap(a: Rect, b: Rect) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def draw_label(img: np.ndarray, text: str, rect: Rect, fill: tuple[int, int, int], scale: float, thick: int) -> None:
    """One filled box with the text drawn once over it (no shadow: nothing outside the box)."""
    x, y, w, h = rect
    cv2.rectangle(img, (x, y), (x + w - 1, y + h - 1), fill, cv2.FILLED)
    (_, th), base = cv2.getTextSize(text, FONT, scale, thick)
    m = (h - th - base) // 2
    cv2.putText(img, text, (x + m, y + m + th), FONT, scale, _ink(fill), thick, cv2.LINE_AA)


def _ink(fill: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black on light colours, white on dark ones (BGR luminance)."""
    b, g, r = fill
    return (0, 0, 0) if 0.114 * b + 0.587 * g + 0.299 * r > 110 else (255, 255, 255)


# --- the status bar -----------------------------------------------------------------------------------------
def _draw_bar(out: np.ndarray, h: Health, lay: Layout, paused: bool, complete: bool) -> None:
    s, t, lh = lay.text_scale, lay.text_thick, lay.line_h
    b = viewstate.banner(h)
    x, y, w, bh = lay.banner
    fill = NO_PART_COLOR if b.verdict is None else VERDICT_COLORS[b.verdict]
    cv2.rectangle(out, (x, y), (x + w - 1, y + bh - 1), fill, cv2.FILLED)
    ink = _ink(fill)
    pad = max(4, round(8 * lay.unit))
    _text_fit(out, b.title, (x + pad, y + pad + round(26 * lay.unit)), w - 2 * pad, ink, lay.big_scale, lay.big_thick)
    for i, line in enumerate(_wrap(b.detail, w - 2 * pad, s, t, 2)):
        _text(out, line, (x + pad, y + pad + round(30 * lay.unit) + (i + 1) * lh - round(4 * lay.unit)), ink, s, t)

    x, y, w, ph = lay.paused
    if paused:
        cv2.rectangle(out, (x, y), (x + w - 1, y + ph - 1), PAUSED_COLOR, cv2.FILLED)
        (tw, th), _ = cv2.getTextSize("PAUSED", FONT, lay.big_scale, lay.big_thick)
        _text(out, "PAUSED", (x + (w - tw) // 2, y + (ph + th) // 2), (0, 0, 0), lay.big_scale, lay.big_thick)

    p, ins = h.parts, h.inspection
    x, y, w, _ = lay.stats
    n = p.ok + p.defect + p.no_verdict
    lat = "-" if ins.latency_ms is None else f"{_ms(ins.latency_ms)} ms"
    if ins.latency_p99_ms is not None:
        lat += f" (p99 {_ms(ins.latency_p99_ms)})"
    _text_fit(out, f"parts {n}   yield {viewstate.yield_text(h)}", (x, y + lh - 6), w, TEXT_COLOR, s, t)
    _runs(
        out,
        [
            (f"ok {p.ok}  ", VERDICT_COLORS[Verdict.OK]),
            (f"defect {p.defect}  ", (90, 90, 255)),
            (f"no verdict {p.no_verdict}", VERDICT_COLORS[Verdict.NO_VERDICT]),
        ],
        (x, y + 2 * lh - 6),
        w,
        s,
        t,
    )
    _text_fit(out, f"{ins.fps:.1f} fps   latency {lat}", (x, y + 3 * lh - 6), w, TEXT_COLOR, s, t)

    x, y, w, _ = lay.states
    name_w = cv2.getTextSize("camera  ", FONT, s, t)[0][0]
    for i, st in enumerate(viewstate.line_states(h, complete=complete)):
        yy = y + (i + 1) * lh - 6
        _text(out, st.name, (x, yy), DIM_COLOR, s, t)
        word = st.word if not st.detail else f"{st.word}  {st.detail}"
        _runs(
            out,
            [(st.word, LEVEL_COLORS[st.level]), (word[len(st.word) :], DIM_COLOR)],
            (x + name_w, yy),
            w - name_w,
            s,
            t,
        )

    x, y, w, _ = lay.strip_title
    _text(out, "last defects", (x, y + lh - 6), DIM_COLOR, s, t)
    defects = [d for d in h.recent.defects if d.crop is not None and d.crop.size][: len(lay.thumbs)]
    cap_s = s * 0.85
    for (tx, ty, side, _), part in zip(lay.thumbs, defects, strict=False):
        out[ty : ty + side, tx : tx + side] = thumbnail(part, side)
        cv2.rectangle(out, (tx, ty), (tx + side - 1, ty + side - 1), VERDICT_COLORS[Verdict.DEFECT], max(1, t))
        cap = f"#{part.part_id}" + ("" if part.score is None else f" {part.score:.2f}")
        _text_fit(out, cap, (tx, ty + side + lh - 4), side, TEXT_COLOR, cap_s, t)
    if not defects:
        tx, ty, side, _ = lay.thumbs[0]
        _text(out, "none yet", (tx, ty + lh), DIM_COLOR, s, t)

    x, y, w, _ = lay.keys
    _text_fit(out, KEYS.replace("p pause", "p resume") if paused else KEYS, (x, y + lh - 6), w, TEXT_COLOR, s, t)
    _text_fit(out, "scores: P(defect), 0 good .. 1 defect", (x, y + 2 * lh - 6), w, DIM_COLOR, s * 0.85, t)


def _ms(v: float) -> str:
    return f"{v:.1f}" if v < 100 else f"{v:.0f}"


def thumbnail(part: Part, side: int) -> np.ndarray:
    """The part's crop as a ``side`` x ``side`` BGR tile; with the model's anomaly map blended over it when the
    part has one (where it differs from good parts: red)."""
    crop = part.crop
    if crop.ndim == 2:
        crop = cv2.cvtColor(crop, cv2.COLOR_GRAY2BGR)
    tile = cv2.resize(crop, (side, side), interpolation=cv2.INTER_AREA)
    amap = getattr(part, "anomaly_map", None)
    return overlay_heatmap(tile, amap) if amap is not None else tile


def _text(img: np.ndarray, s: str, org: tuple[int, int], color, scale: float, thick: int = 1) -> None:
    """Text drawn once, anti-aliased: one clean style (a wider shadow showed ghost glyphs)."""
    cv2.putText(img, s, org, FONT, scale, color, thick, cv2.LINE_AA)


def _text_fit(img: np.ndarray, s: str, org, max_w: int, color, scale: float, thick: int) -> None:
    """Text shrunk (down to 70 %), then cut with '..', to stay inside ``max_w`` px."""
    w = cv2.getTextSize(s, FONT, scale, thick)[0][0]
    if w > max_w:
        scale = max(scale * 0.7, scale * max_w / w)
        while s and cv2.getTextSize(s, FONT, scale, thick)[0][0] > max_w:
            s = s[:-3] + ".." if len(s) > 3 else ""
    _text(img, s, org, color, scale, thick)


def _runs(img: np.ndarray, runs: list[tuple[str, tuple[int, int, int]]], org, max_w: int, scale, thick) -> None:
    """Pieces of one line in their own colours, left to right, stopping at ``max_w``."""
    x, y = org
    end = x + max_w
    for text, color in runs:
        if not text:
            continue
        w = cv2.getTextSize(text, FONT, scale, thick)[0][0]
        _text_fit(img, text, (x, y), end - x, color, scale, thick)
        x += w
        if x >= end:
            break


def _wrap(text: str, max_w: int, scale: float, thick: int, lines: int) -> list[str]:
    """Words onto at most ``lines`` lines of ``max_w`` px (the last one cut with '..')."""
    out: list[str] = []
    cur = ""
    for word in text.split():
        cand = f"{cur} {word}".strip()
        if cv2.getTextSize(cand, FONT, scale, thick)[0][0] <= max_w or not cur:
            cur = cand
        else:
            out.append(cur)
            cur = word
    if cur:
        out.append(cur)
    if len(out) > lines:
        out = out[: lines - 1] + [" ".join(out[lines - 1 :])]
    if out:
        last = out[-1]
        while len(last) > 3 and cv2.getTextSize(last, FONT, scale, thick)[0][0] > max_w:
            last = last[:-3] + ".."
        out[-1] = last
    return out


_PROBE = "import cv2; cv2.namedWindow('inspector-probe'); cv2.waitKey(1); cv2.destroyAllWindows(); print('ok')"


def display_available(timeout_s: float = 15.0) -> bool:
    """A display is set and OpenCV's highgui can open a window on it.

    Probed in a child process: Qt aborts the whole process (no exception) when it cannot reach the display.
    """
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False
    try:
        out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired):
        return False
    if out.returncode != 0 or "ok" not in out.stdout:
        if not opencv_has_gui():
            log.warning(
                "a display is set but this OpenCV has no GUI (the opencv-python-headless build, e.g. pulled in by "
                "the train extra's grad-cam, replaced opencv-python's files); running headless. Restore the "
                "window with: pip install --force-reinstall --no-deps opencv-python"
            )
        else:
            log.warning("a display is set but OpenCV cannot open a window on it; running headless")
        return False
    return True


def opencv_has_gui() -> bool:
    """False for the headless OpenCV builds (no highgui backend compiled in)."""
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GUI:"):
            return line.split(":", 1)[1].strip().upper() != "NONE"
    return True


class Window:
    """The OpenCV window. Create, update and close it on the main thread.

    ``health``: the line's snapshot, read on each drawn frame (:meth:`inspector.line.Line.health`). The
    snapshot folder is checked here, at start: a key pressed later must never stop inspection."""

    title = "inspector"

    def __init__(
        self,
        *,
        scale: float = 1.0,
        snapshot_dir: str | Path = ".",
        max_fps: float = 30.0,
        health: Callable[[], Health] | None = None,
    ) -> None:
        self.scale = scale
        self.snapshot_dir = check_snapshot_dir(snapshot_dir)
        self.min_interval = 1.0 / max_fps if max_fps > 0 else 0.0
        self.health = health
        self.paused = False
        self.snapshots: list[Path] = []
        self.last_image: np.ndarray | None = None
        self._last_view: FrameView | None = None
        self._t_last = 0.0
        quiet_qt_fonts()
        cv2.namedWindow(self.title, cv2.WINDOW_AUTOSIZE | cv2.WINDOW_GUI_NORMAL)  # the image only: no Qt toolbar

    def update(self, view: FrameView | None, stats: LoopStats) -> bool:
        """Draw (rate-limited) and poll the keys; False = quit."""
        now = time.monotonic()
        if view is not None:
            self._last_view = view
        due = now - self._t_last >= self.min_interval or (view is not None and view.parts)
        if self._last_view is not None and (due or view is None):
            health = self.health() if self.health is not None else None
            img = render_overlay(self._last_view, stats, paused=self.paused, health=health)
            if self.scale != 1.0:
                img = cv2.resize(img, None, fx=self.scale, fy=self.scale, interpolation=cv2.INTER_AREA)
            self.last_image = img
            cv2.imshow(self.title, img)
            self._t_last = now
        return self._key(cv2.waitKey(1) & 0xFF)

    def _key(self, key: int) -> bool:
        if key in (ord("q"), 27):
            return False
        if key == ord("p"):
            self.paused = not self.paused
            log.info("paused" if self.paused else "resumed")
        elif key == ord("s"):
            self.snapshot()
        return True

    def snapshot(self) -> Path | None:
        """Save what the window shows now as a PNG in ``snapshot_dir``; a failure is one warning line (the
        line keeps inspecting) and None."""
        if self.last_image is None:
            return None
        stamp = time.strftime("inspector_%Y%m%d_%H%M%S")
        path = self.snapshot_dir / f"{stamp}.png"
        n = 1
        while path.exists():
            path = self.snapshot_dir / f"{stamp}-{n}.png"
            n += 1
        try:
            ok = cv2.imwrite(str(path), self.last_image)
        except cv2.error as exc:
            ok, why = False, str(exc).strip().splitlines()[-1]
        else:
            why = "cannot write there"
        if not ok:
            log.warning("snapshot not saved: %s: %s; inspection continues", path, _why_unwritable(path.parent) or why)
            return None
        self.snapshots.append(path)
        log.info("snapshot saved: %s", path)
        return path

    def close(self) -> None:
        try:
            cv2.destroyWindow(self.title)
            cv2.waitKey(1)
        except cv2.error:
            pass


def check_snapshot_dir(folder: str | Path) -> Path:
    """The s key's folder, usable now (created when missing), or a UserError at start saying what to do."""
    d = Path(folder)
    if d.exists() and not d.is_dir():
        raise UserError(f"--snapshot-dir {d}: not a folder; give a writable folder")
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(
            f"--snapshot-dir {d}: cannot create the folder ({exc.strerror}); give a writable folder"
        ) from None
    if (why := _why_unwritable(d)) is not None:
        raise UserError(f"--snapshot-dir {d}: {why}; give a writable folder")
    return d


def _why_unwritable(d: Path) -> str | None:
    """None when a file can be created in ``d`` (tried for real: permission bits say nothing to root or about a
    read-only mount), else why not."""
    if not d.is_dir():
        return "not a folder" if d.exists() else "the folder does not exist"
    try:
        with tempfile.NamedTemporaryFile(dir=d, prefix=".inspector-write-test-"):
            pass
    except OSError as exc:
        return f"not writable ({exc.strerror})"
    return None

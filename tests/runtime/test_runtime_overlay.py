"""The overlay: the rendered frame checked pixel by pixel; the real OpenCV window under Xvfb, screenshot checked."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from runtime_kit import FakeEngine, as_frames, moving, render, watch_child
from window_kit import read_xwd

from inspector import viewstate
from inspector.config import InspectorConfig, load_config
from inspector.detect import Roi
from inspector.events import Summary
from inspector.health import GateHealth, HealthProbe, LogHealth, ModelHealth
from inspector.overlay import (
    BAR_COLOR,
    LEVEL_COLORS,
    PAUSED_COLOR,
    PENDING_COLOR,
    ROI_COLOR,
    TEXT_COLOR,
    TRIGGER_COLOR,
    VERDICT_COLORS,
    _label_texts,
    _text,
    draw_label,
    label_items,
    label_size,
    labels_for,
    layout_for,
    opencv_has_gui,
    place_labels,
    render_overlay,
)
from inspector.pipeline import FrameView, LoopStats, Pipeline
from inspector.records import Frame, Part, Verdict
from inspector.viewstate import line_states


def near(px, color, tol=40) -> bool:
    return bool(np.all(np.abs(np.asarray(px, int) - np.asarray(color, int)) <= tol))


def count_color(img, color, tol=40) -> int:
    return int(np.all(np.abs(img.astype(int) - np.asarray(color, int)) <= tol, axis=2).sum())


def _scene():
    cfg = InspectorConfig.model_validate(
        {
            "roi": {"x": 20, "y": 10, "width": 600, "height": 220},
            "detection": {"threshold": 100, "min_area": 800, "blur": 0, "downscale": 1},
        }
    )
    summary = Summary()
    pipe = Pipeline(cfg, FakeEngine(), [summary])
    defect = moving(0, -40, 20, 10, 60, defect=True)
    follower = moving(20, -40, 95, 10, 60)  # not at the trigger yet at the last frame
    frames = as_frames(render([defect, follower], 45))
    for f in frames:
        pipe.process(f)
    return pipe, summary, frames


def test_rendered_overlay_has_roi_trigger_parts_status_bar_and_last_defects():
    pipe, summary, frames = _scene()
    stats = LoopStats(frames=45, fps=29.5, last_latency_ms=4.2, summary=summary)
    img = render_overlay(pipe.last, stats)
    frame = frames[-1].image
    H, W = frame.shape[:2]
    lay = layout_for(W, H)
    assert img.shape == (lay.canvas[1], lay.canvas[0], 3) and img.shape[1] > W  # the bar is beside the image
    assert img is not frames[-1].image and lay.bar[0] >= W

    roi = pipe.roi
    assert near(img[roi.y + roi.h // 2, roi.x], ROI_COLOR)  # ROI left edge
    assert near(img[roi.y + roi.h // 2, roi.x + roi.w - 1], ROI_COLOR)  # right edge
    (tx, ty0), (_, ty1) = roi.trigger_segment()
    assert near(img[(ty0 + ty1) // 2, tx], TRIGGER_COLOR)

    by_id = {t.track_id: t for t in pipe.tracker.tracks}
    decided = [p for p in summary.recent.values() if p.verdict is Verdict.DEFECT]
    assert len(decided) == 1
    x, y, w, h = by_id[decided[0].part_id].det.bbox
    assert near(img[y + h // 2, x], VERDICT_COLORS[Verdict.DEFECT])  # box coloured by its verdict
    pending = [t for t in pipe.tracker.tracks if not t.classified]
    assert pending
    px, py, pw, ph = pending[0].det.bbox
    assert near(img[py + ph // 2, px], PENDING_COLOR)

    # The camera image is not covered by panels: where the old panel sat (bottom left, below the ROI) and the old
    # thumbnail (top right, outside the ROI) the pixels are the frame's own.
    below = slice(roi.y + roi.h + 3, H)
    assert np.array_equal(img[below, :W], frame[below])
    assert np.array_equal(img[: roi.y - 2, W - 20 : W], frame[: roi.y - 2, W - 20 : W])
    # Last defects strip, in the bar: the defect's (bright) crop inside a red frame.
    tx0, ty0, side, _ = lay.thumbs[0]
    assert img[ty0 + 4 : ty0 + side - 4, tx0 + 4 : tx0 + side - 4].mean() > 150
    assert near(img[ty0 + side // 2, tx0], VERDICT_COLORS[Verdict.DEFECT])
    # The bar: its own dark ground with light text (counts, fps, latency).
    sx, sy, sw, sh = lay.stats
    assert count_color(img[sy : sy + sh, sx : sx + sw], TEXT_COLOR, tol=40) > 100
    assert count_color(img[:, W:], BAR_COLOR, tol=2) > 0.4 * (img.shape[1] - W) * img.shape[0]


def test_image_region_is_the_frame_itself_but_for_the_roi_and_trigger():
    """No panel, text or shadow on the camera image: with no part in view, only the ROI outline and the trigger
    line differ from the frame."""
    cfg = InspectorConfig.model_validate({"detection": {"threshold": 100, "min_area": 800}})
    pipe = Pipeline(cfg, FakeEngine(), [])
    frame = as_frames(render([], 1, size=(640, 480)))[0]
    pipe.process(frame)
    img = render_overlay(pipe.last, LoopStats(summary=Summary(), fps=30.0), paused=True)
    lay = layout_for(640, 480)
    changed = np.any(img[:480, :640] != frame.image, axis=2)
    marks = np.zeros_like(changed)
    r, t = pipe.roi, 2 * max(1, round(2 * lay.unit))
    cv2.rectangle(marks.view(np.uint8), (r.x, r.y), (r.x + r.w - 1, r.y + r.h - 1), 1, t)
    a, b = r.trigger_segment()
    cv2.line(marks.view(np.uint8), a, b, 1, t)
    assert changed.any() and not (changed & ~marks).any()


@pytest.mark.parametrize(
    ("verdict", "score", "reason"),
    [(Verdict.OK, 0.03, None), (Verdict.DEFECT, 0.97, None), (Verdict.NO_VERDICT, None, "lost before the trigger")],
)
def test_banner_shows_the_last_verdict_in_its_colour(verdict, score, reason):
    pipe, _, _ = _scene()
    summary = Summary()
    summary.on_part(Part(41, 3, 0, (0, 0, 10, 10), verdict, score=score, reason=reason))
    img = render_overlay(pipe.last, LoopStats(summary=summary))
    bx, by, bw, bh = layout_for(640, 240).banner
    banner = img[by : by + bh, bx : bx + bw]
    assert count_color(banner, VERDICT_COLORS[verdict], tol=10) > 0.6 * bw * bh
    ink = (0, 0, 0) if verdict is not Verdict.DEFECT else (255, 255, 255)
    assert count_color(banner, ink, tol=60) > 150  # the part id, the verdict and P(defect) or the reason
    other = [v for v in Verdict if v is not verdict]
    assert all(count_color(banner, VERDICT_COLORS[v], tol=10) < 0.05 * bw * bh for v in other)


def test_text_is_drawn_once_without_a_shadow():
    """A wider dark shadow under the text showed ghost glyphs ("last cefect"); text is drawn once now, and a
    label's ink stays inside its own box."""
    img = np.full((120, 400, 3), 128, np.uint8)
    _text(img, "last defect 1.000", (10, 60), (255, 255, 255), 0.8, 1)
    assert count_color(img, (0, 0, 0), tol=60) == 0  # no dark pixels: no shadow
    canvas = np.zeros((120, 400, 3), np.uint8)
    lw, lh = label_size("#12 DEFECT P(defect) 0.97", 0.6, 1)
    draw_label(canvas, "#12 DEFECT P(defect) 0.97", (30, 40, lw, lh), VERDICT_COLORS[Verdict.DEFECT], 0.6, 1)
    ys, xs = np.nonzero(canvas.any(axis=2))
    assert (xs.min(), ys.min(), xs.max(), ys.max()) == (30, 40, 30 + lw - 1, 40 + lh - 1)
    inner = canvas[40 : 40 + lh, 30 : 30 + lw]
    assert count_color(inner, (255, 255, 255), tol=60) > 50  # white text on red


def _ink_rows(region: np.ndarray, ink, tol=60) -> int:
    rows = np.nonzero(np.all(np.abs(region.astype(int) - np.asarray(ink, int)) <= tol, axis=2).any(axis=1))[0]
    return int(rows.max() - rows.min() + 1) if rows.size else 0


def test_text_size_follows_the_frame_size():
    """Legible at 640x480 and at 1920x1080: the banner's title is about 2.25 times as tall on the larger frame."""
    heights = {}
    for w, h in ((640, 480), (1920, 1080)):
        cfg = InspectorConfig.model_validate({"detection": {"threshold": 100, "min_area": 800}})
        pipe = Pipeline(cfg, FakeEngine(), [])
        pipe.process(as_frames(render([], 1, size=(w, h)))[0])
        summary = Summary()
        summary.on_part(Part(7, 0, 0, (0, 0, 10, 10), Verdict.DEFECT, score=0.9))
        img = render_overlay(pipe.last, LoopStats(summary=summary))
        lay = layout_for(w, h)
        bx, by, bw, bh = lay.banner
        title = img[by : by + bh // 2 + 2, bx : bx + bw]  # the large line: '#7 DEFECT'
        heights[(w, h)] = _ink_rows(title, (255, 255, 255))
        assert img.shape[1] == w + lay.bar[2] and img.shape[0] >= h
    small, big = heights[(640, 480)], heights[(1920, 1080)]
    assert small >= 14, heights  # legible on a 640x480 frame
    assert 1.8 <= big / small <= 2.7, heights


def _dense_items(n_rows=2, n_cols=12, size=40, gap=2):
    """Parts packed as on the bottling line: touching, in rows, some at the frame's top edge."""
    items = []
    for r in range(n_rows):
        for c in range(n_cols):
            box = (4 + c * (size + gap), r * (size + gap), size, size)
            part = Part(100 + r * n_cols + c, 0, 0, box, Verdict.DEFECT if c % 3 == 0 else Verdict.OK, score=0.5)
            items.append((box, _label_texts(part.part_id, part)))
    return items


def test_labels_on_a_dense_scene_keep_apart_and_inside_the_frame():
    W, H = 596, 336  # the bottling clip's frame
    items = _dense_items()
    lay = layout_for(W, H)
    placed = place_labels(items, W, H, lay.label_scale, lay.label_thick)
    rects = [p[0] for p in placed if p is not None]
    assert len(rects) >= len(items) // 2  # most parts keep a label (a short one where space is short)
    for i, a in enumerate(rects):
        assert a[0] >= 0 and a[1] >= 0 and a[0] + a[2] <= W and a[1] + a[3] <= H, a
        for b in rects[i + 1 :]:
            assert not (a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3])


def test_dense_scene_rendered_label_boxes_are_whole():
    """The same by pixels: every label's box keeps its full rim in its fill colour (none painted over another)."""
    W, H = 596, 336
    items = _dense_items()
    view = FrameView(np.full((H, W, 3), 60, np.uint8), 0, Roi(0, 0, W, H), [], [], [])
    parts = []
    for (box, _), pid in zip(items, range(100, 100 + len(items)), strict=True):
        parts.append(Part(pid, 0, 0, box, Verdict.DEFECT if (pid - 100) % 12 % 3 == 0 else Verdict.OK, score=0.5))
    view.parts = parts
    img = render_overlay(view, LoopStats(summary=Summary()))
    lay = layout_for(W, H)
    placed = place_labels(items, W, H, lay.label_scale, lay.label_thick)
    assert sum(p is not None for p in placed) >= len(items) // 2
    for (rect, _), part in ((p, q) for p, q in zip(placed, parts, strict=True) if p is not None):
        x, y, w, h = rect
        fill = VERDICT_COLORS[part.verdict]
        rim = np.concatenate(
            [img[y, x : x + w], img[y + h - 1, x : x + w], img[y : y + h, x], img[y : y + h, x + w - 1]]
        )
        assert np.all(np.abs(rim.astype(int) - np.asarray(fill, int)) <= 1), (part.part_id, rect)


def test_paused_overlay_says_so_large():
    cfg = InspectorConfig.model_validate({"detection": {"threshold": 100, "min_area": 800}})
    pipe = Pipeline(cfg, FakeEngine(), [])
    pipe.process(as_frames(render([], 1, size=(640, 480)))[0])
    a = render_overlay(pipe.last, LoopStats(summary=Summary()), paused=False)
    b = render_overlay(pipe.last, LoopStats(summary=Summary()), paused=True)
    x, y, w, h = layout_for(640, 480).paused
    assert count_color(a[y : y + h, x : x + w], PAUSED_COLOR, 10) == 0
    assert count_color(b[y : y + h, x : x + w], PAUSED_COLOR, 10) > 0.6 * w * h
    assert _ink_rows(b[y : y + h, x : x + w], (0, 0, 0)) >= 14  # the word, large


def test_the_bar_reads_the_line_health():
    """Given the line's snapshot the bar names each state in words and colour: gate HOLD (amber), log dropping
    (red), camera live (green)."""
    pipe, summary, _ = _scene()
    stats = LoopStats(summary=summary)
    probe = HealthProbe(stats=stats, model=ModelHealth("m.onnx", "onnxruntime"))
    h = probe.snapshot()
    gate = GateHealth(True, False, True, True, ("SOURCE_STALL",), 0, 0, 0, {"fired": 2})
    log_h = LogHealth(0, 0, {"rows": 10, "rows_dropped": 3})
    camera = dataclasses.replace(h.camera, live=True)
    h = dataclasses.replace(h, gate=gate, log=log_h, camera=camera)
    states = {s.name: s for s in line_states(h)}
    assert (states["camera"].word, states["gate"].word, states["log"].word) == ("live", "HOLD", "dropping")
    img = render_overlay(pipe.last, stats, health=h)
    x, y, w, hh = layout_for(640, 240).states
    region = img[y : y + hh, x : x + w]
    for level in (viewstate.OK, viewstate.WARN, viewstate.BAD):
        assert count_color(region, LEVEL_COLORS[level], 25) > 10, level
    plain = render_overlay(pipe.last, stats)  # without the snapshot: gate and log unknown, nothing in those colours
    region = plain[y : y + hh, x : x + w]
    assert count_color(region, LEVEL_COLORS[viewstate.WARN], 25) == 0


def test_a_headless_opencv_is_recognised(monkeypatch):
    info = cv2.getBuildInformation()
    assert opencv_has_gui() == ("GUI:                           NONE" not in info)
    monkeypatch.setattr(cv2, "getBuildInformation", lambda: "  GUI:                           NONE\n")
    assert opencv_has_gui() is False
    monkeypatch.setattr(cv2, "getBuildInformation", lambda: "  GUI:                           QT5\n    QT: YES\n")
    assert opencv_has_gui() is True


# --- the real window ------------------------------------------------------------------------------------
def screenshot(env) -> np.ndarray:
    out = subprocess.run(["xwd", "-root", "-silent"], env=env, capture_output=True, timeout=20, check=True)
    return read_xwd(out.stdout)


@pytest.mark.slow
def test_real_window_under_xvfb_shows_the_overlay(xvfb, line_video, line_config, tmp_path):
    if shutil.which("xwd") is None:
        pytest.skip("xwd not installed (apt-get install x11-apps); needed for the screenshot")
    events = tmp_path / "ev.jsonl"
    cmd = [
        sys.executable,
        "-m",
        "inspector",
        "run",
        "--config",
        str(line_config),
        "--source",
        str(line_video),
        "--events",
        str(events),
        "--realtime",
    ]
    proc = subprocess.Popen(cmd, env=xvfb, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    shot, found = None, False

    def probe() -> bool:  # screenshots until the overlay's elements are on screen
        nonlocal shot, found
        shot = screenshot(xvfb)
        found = (
            count_color(shot, ROI_COLOR, 30) > 500
            and count_color(shot, TRIGGER_COLOR, 30) > 200
            and count_color(shot, VERDICT_COLORS[Verdict.OK], 30)
            + count_color(shot, VERDICT_COLORS[Verdict.DEFECT], 30)
            > 100
        )
        return found

    out, err = watch_child(proc, probe, timeout_s=60, every_s=0.2, exit_timeout_s=60)
    assert proc.returncode == 0, err
    if shot is not None:
        cv2.imwrite(str(tmp_path / "screenshot.png"), shot)
    assert found, f"overlay never seen on screen; last screenshot in {tmp_path}"
    assert "Traceback" not in err
    lines = [json.loads(x) for x in events.read_text().splitlines()]
    assert len(lines) == 5 and "inspection summary" in out


WINDOW_SCRIPT = r"""
import sys
import numpy as np
from inspector.detect import Roi
from inspector.events import Summary
from inspector.overlay import Window, display_available
from inspector.pipeline import FrameView, LoopStats
assert display_available()
w = Window(snapshot_dir=sys.argv[1])
img = np.full((240, 320, 3), 40, np.uint8)
view = FrameView(img, 0, Roi(10, 10, 300, 220), [], [], [])
stats = LoopStats(summary=Summary())
assert w.update(view, stats)
assert w._key(ord("p")) and w.paused
assert w._key(ord("p")) and not w.paused
assert w._key(ord("s"))
path = w.snapshots[-1]
assert not w._key(ord("q"))
w.close()
print(path)
"""


@pytest.mark.slow
def test_window_keys_pause_snapshot_quit_under_xvfb(xvfb, tmp_path):
    out = subprocess.run(
        [sys.executable, "-c", WINDOW_SCRIPT, str(tmp_path)], env=xvfb, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    snap = cv2.imread(out.stdout.strip().splitlines()[-1])
    lay = layout_for(320, 240)
    assert snap is not None and snap.shape == (lay.canvas[1], lay.canvas[0], 3)  # what the window shows, bar too
    img = snap[:240, :320]
    assert count_color(img, ROI_COLOR, 30) > 500 and count_color(img, TRIGGER_COLOR, 30) > 200


@pytest.mark.data
def test_labels_on_the_real_bottling_clip_keep_apart_and_inside_the_frame(shared_data):
    """The dense real clip (touching bottles, caps at the frame's top edge), frame by frame through the real
    detector and tracker: every label drawn lies inside the frame, overlaps no other, and keeps its whole rim in
    its own colour on the rendered image (nothing drawn over it)."""
    root = Path(__file__).resolve().parents[2]
    cfg = load_config(root / "configs" / "clips" / "bottling_bottles.yaml")
    summary = Summary()
    pipe = Pipeline(cfg, FakeEngine(), [summary])
    stats = LoopStats(summary=summary)
    probe = HealthProbe(stats=stats)
    cap = cv2.VideoCapture(str(shared_data / "videos" / "bottling_line_bottles.mp4"))
    busiest = 0
    for i in range(200):
        ok, image = cap.read()
        assert ok, f"bottling clip ended at frame {i}"
        pipe.process(Frame(i, i * 40_000_000, image))
        h = probe.snapshot()
        img = render_overlay(pipe.last, stats, health=h)
        H, W = image.shape[:2]
        lay = layout_for(W, H)
        labels = labels_for(label_items(pipe.last, h), W, H, lay)
        busiest = max(busiest, len(labels))
        for k, (a, _, fill) in enumerate(labels):
            x, y, w, hh = a
            assert x >= 0 and y >= 0 and x + w <= W and y + hh <= H, (i, a)
            for b, _, _ in labels[k + 1 :]:
                assert not (a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3])
            rim = np.concatenate(
                [img[y, x : x + w], img[y + hh - 1, x : x + w], img[y : y + hh, x], img[y : y + hh, x + w - 1]]
            )
            assert np.all(np.abs(rim.astype(int) - np.asarray(fill, int)) <= 1), (i, a)
    cap.release()
    assert busiest >= 3 and summary.parts >= 10, (busiest, summary.parts)

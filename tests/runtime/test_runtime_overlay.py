"""The overlay: the rendered frame checked pixel by pixel; the real OpenCV window under Xvfb, screenshot checked."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys

import cv2
import numpy as np
import pytest
from runtime_kit import FakeEngine, as_frames, moving, render, watch_child

from inspector.config import InspectorConfig
from inspector.events import Summary
from inspector.overlay import (
    PENDING_COLOR,
    ROI_COLOR,
    THUMB,
    TRIGGER_COLOR,
    VERDICT_COLORS,
    opencv_has_gui,
    render_overlay,
)
from inspector.pipeline import LoopStats, Pipeline
from inspector.records import Verdict


def near(px, color, tol=40) -> bool:
    return bool(np.all(np.abs(np.asarray(px, int) - np.asarray(color, int)) <= tol))


def count_color(img, color, tol=40) -> int:
    return int(np.all(np.abs(img.astype(int) - np.asarray(color, int)) <= tol, axis=2).sum())


def test_rendered_overlay_has_roi_trigger_parts_panel_and_last_defect():
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
    stats = LoopStats(frames=45, fps=29.5, last_latency_ms=4.2, summary=summary)
    img = render_overlay(pipe.last, stats)
    assert img.shape == frames[0].image.shape and img is not frames[-1].image

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

    # Last defect thumbnail, top right, with a red frame, showing the defect's (bright) crop.
    H, W = img.shape[:2]
    size = min(THUMB, H // 3, W // 4)
    thumb = img[6 : 6 + size, W - size - 6 : W - 6]
    assert thumb.mean() > 150
    assert near(img[6 + size // 2, W - size - 7], VERDICT_COLORS[Verdict.DEFECT])
    # Status panel, bottom left: darkened with white text.
    panel = img[H - 60 :, :300]
    assert count_color(panel, (255, 255, 255), tol=30) > 100
    assert np.median(panel) < np.median(frames[-1].image[H - 60 :, :300]) + 1


def test_paused_overlay_says_so():
    cfg = InspectorConfig.model_validate({"detection": {"threshold": 100, "min_area": 800}})
    pipe = Pipeline(cfg, FakeEngine(), [])
    pipe.process(as_frames(render([], 1))[0])
    a = render_overlay(pipe.last, LoopStats(summary=Summary()), paused=False)
    b = render_overlay(pipe.last, LoopStats(summary=Summary()), paused=True)
    assert count_color(b, (255, 255, 255), 30) > count_color(a, (255, 255, 255), 30)


def test_a_headless_opencv_is_recognised(monkeypatch):
    info = cv2.getBuildInformation()
    assert opencv_has_gui() == ("GUI:                           NONE" not in info)
    monkeypatch.setattr(cv2, "getBuildInformation", lambda: "  GUI:                           NONE\n")
    assert opencv_has_gui() is False
    monkeypatch.setattr(cv2, "getBuildInformation", lambda: "  GUI:                           QT5\n    QT: YES\n")
    assert opencv_has_gui() is True


# --- the real window ------------------------------------------------------------------------------------
def read_xwd(data: bytes) -> np.ndarray:
    """An X window dump (ZPixmap, 24/32 bit) -> BGR array."""
    f = struct.unpack(">25I", data[:100])
    header_size, width, height, byte_order, bpp, bpl, ncolors = f[0], f[4], f[5], f[7], f[11], f[12], f[19]
    assert bpp in (24, 32), f"expected a 24/32-bit dump, got {bpp}"
    off = header_size + 12 * ncolors
    rows = np.frombuffer(data, np.uint8, count=bpl * height, offset=off).reshape(height, bpl)
    n = bpp // 8
    px = rows[:, : width * n].reshape(height, width, n)
    bgr = px[:, :, :3] if byte_order == 0 else px[:, :, n - 1 : n - 4 : -1]
    return np.ascontiguousarray(bgr)


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
    assert snap is not None and snap.shape == (240, 320, 3)
    assert count_color(snap, ROI_COLOR, 30) > 500 and count_color(snap, TRIGGER_COLOR, 30) > 200

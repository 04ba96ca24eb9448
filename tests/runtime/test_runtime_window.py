"""The operator's window for real: OpenCV's Qt window under Xvfb, read back as an X window dump and checked by
pixels (the frame untouched, the bar beside it, the banner's colour), the s key with a folder that cannot take
the snapshot, a bad --snapshot-dir refused at start, and Qt's missing-font line gone."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from runtime_kit import watch_child
from test_runtime_overlay import _ink_rows, count_color
from window_kit import busy, shoot, window_dump

from ground.qtfonts import FONT_DIRS
from inspector.detect import Roi
from inspector.events import Summary
from inspector.health import CameraHealth, Health, InspectionHealth, PartCounts
from inspector.overlay import BAR_COLOR, ROI_COLOR, VERDICT_COLORS, label_items, labels_for, layout_for, render_overlay
from inspector.pipeline import FrameView, LoopStats
from inspector.records import Part, Verdict

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


@pytest.fixture
def xwd_tools():
    for tool in ("xwd", "xdotool"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed (apt-get install x11-apps xdotool); the window tests need it")


SHOW_SCRIPT = r"""
import os, select, sys, time
import cv2
import numpy as np
from inspector.detect import Roi
from inspector.events import Summary
from inspector.health import HealthProbe, ModelHealth
from inspector.overlay import Window
from inspector.pipeline import FrameView, LoopStats
from inspector.records import Part, Verdict

out = sys.argv[1]
frame = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
cv2.imwrite(out + "/frame.tmp.png", frame)
os.replace(out + "/frame.tmp.png", out + "/frame.png")
summary = Summary()
crop = np.full((60, 60, 3), 230, np.uint8)
summary.on_part(Part(9, 0, 0, (0, 0, 60, 60), Verdict.DEFECT, score=0.93, crop=crop))
summary.on_part(Part(10, 1, 0, (0, 0, 60, 60), getattr(Verdict, sys.argv[2]), score=0.1, reason="lost"))
stats = LoopStats(summary=summary, fps=30.0, last_latency_ms=5.0)
health = HealthProbe(stats=stats, model=ModelHealth("m.onnx", "onnxruntime")).snapshot()
w = Window(snapshot_dir=out, health=lambda: health)
parts = []
if len(sys.argv) > 3:  # dense: 2 rows of 12 touching parts, the first row at the frame's top edge
    for r in range(2):
        for c in range(12):
            v = Verdict.DEFECT if c % 3 == 0 else Verdict.OK
            parts.append(Part(100 + 12 * r + c, 0, 0, (4 + c * 52, r * 52, 50, 50), v, score=0.5))
view = FrameView(frame, 0, Roi(100, 100, 400, 200), [], [], parts)
assert w.update(view, stats)
cv2.imwrite(out + "/shown.tmp.png", w.last_image)
os.replace(out + "/shown.tmp.png", out + "/shown.png")  # whole, or not there yet
print("shown", flush=True)
deadline = time.monotonic() + 90
while time.monotonic() < deadline:  # Qt paints (and repaints) only while its events are pumped
    cv2.waitKey(20)
    if select.select([sys.stdin], [], [], 0)[0] and sys.stdin.readline().strip() == "done":
        break
w.close()
"""


def _show_in_window(env: dict, tmp_path: Path, *script_args: str) -> tuple:
    """Run SHOW_SCRIPT with ``script_args`` and dump its window until it shows what the overlay rendered;
    returns (window dump, rendered image, frame, stderr) once the script has ended cleanly."""
    proc = subprocess.Popen(
        [sys.executable, "-c", SHOW_SCRIPT, str(tmp_path), *script_args],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    dump = shown = frame = None
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if shown is None and (tmp_path / "shown.png").is_file():
                shown, frame = cv2.imread(str(tmp_path / "shown.png")), cv2.imread(str(tmp_path / "frame.png"))
            if shown is not None:
                dump = window_dump(env)
                if dump is not None and dump.shape == shown.shape and np.array_equal(dump, shown):
                    break
            time.sleep(0.2)
        proc.stdin.write("done\n")
        proc.stdin.flush()
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    if dump is not None:
        cv2.imwrite(str(tmp_path / "dump.png"), dump)
    return dump, shown, frame, err


@pytest.mark.parametrize("verdict", ["NO_VERDICT", "OK"])
def test_the_real_window_shows_the_frame_untouched_and_the_bar_beside_it(xvfb, xwd_tools, tmp_path, verdict):
    env = {**xvfb, "PYTHONPATH": str(ROOT)}
    dump, shown, frame, err = _show_in_window(env, tmp_path, verdict)
    shown_ok = dump is not None and shown is not None and np.array_equal(dump, shown)
    assert shown_ok, f"the window never showed the rendered overlay; last dump in {tmp_path}"
    lay = layout_for(640, 480)
    assert dump.shape[:2] == (lay.canvas[1], lay.canvas[0]) and dump.shape[1] > 640
    # The image region is the frame's pixels except the ROI outline and the trigger line (x = 300).
    img = dump[:480, :640]
    inside = (slice(110, 290), slice(110, 290))  # within the ROI, left of the trigger line
    assert np.array_equal(img[inside], frame[inside])
    assert np.array_equal(img[:90], frame[:90]) and np.array_equal(img[310:], frame[310:])
    assert count_color(img, ROI_COLOR, 10) > 1000
    # The bar is outside the image; the banner has the last verdict's colour; the strip has the defect's crop.
    assert count_color(dump[:, 640:], BAR_COLOR, 2) > 0.4 * (dump.shape[1] - 640) * dump.shape[0]
    bx, by, bw, bh = lay.banner
    assert count_color(dump[by : by + bh, bx : bx + bw], VERDICT_COLORS[Verdict[verdict]], 10) > 0.6 * bw * bh
    tx, ty, side, _ = lay.thumbs[0]
    assert dump[ty + 4 : ty + side - 4, tx + 4 : tx + side - 4].mean() > 200
    assert "QFontDatabase" not in err  # defect 14: Qt pointed at a system font folder
    assert "Traceback" not in err


FONT_SCRIPT = r"""
import os, sys
import cv2
import numpy as np
from ground.qtfonts import quiet_qt_fonts
if sys.argv[1] != "-":
    os.environ["QT_QPA_FONTDIR"] = sys.argv[1]  # set on purpose (after import cv2, which sets its own)
if sys.argv[2] == "quiet":
    quiet_qt_fonts()
cv2.namedWindow("fonts")  # Qt's full GUI (toolbar, status bar): it loads fonts
cv2.imshow("fonts", np.zeros((60, 80, 3), np.uint8))
cv2.waitKey(50)
cv2.destroyAllWindows()
print("ok", os.environ.get("QT_QPA_FONTDIR"))
"""


def _fonts(env: dict, fontdir: str, mode: str) -> subprocess.CompletedProcess:
    out = subprocess.run(
        [sys.executable, "-c", FONT_SCRIPT, fontdir, mode], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr
    return out


def test_qt_font_line_is_quiet_but_a_font_folder_set_on_purpose_is_still_checked(xvfb, tmp_path):
    env = {**xvfb, "PYTHONPATH": str(ROOT)}
    env.pop("QT_QPA_FONTDIR", None)
    if not any(Path(d).is_dir() and any(Path(d).glob("*.ttf")) for d in FONT_DIRS):
        pytest.skip("no system font folder here (apt-get install fonts-dejavu-core)")
    assert "QFontDatabase: Cannot find font directory" in _fonts(env, "-", "as-is").stderr  # OpenCV's own folder
    quiet = _fonts(env, "-", "quiet")
    assert "QFontDatabase" not in quiet.stderr, quiet.stderr
    assert quiet.stdout.split()[1] in FONT_DIRS
    bogus = str(tmp_path / "no-such-fonts")
    wrong = _fonts(env, bogus, "quiet")  # a folder someone chose is left alone, and Qt still says it is wrong
    assert wrong.stdout.split()[1] == bogus
    assert f"Cannot find font directory {bogus}" in wrong.stderr


def _run_cmd(line_config: Path, line_video: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "inspector",
        "run",
        "--config",
        str(line_config),
        "--source",
        str(line_video),
        *extra,
    ]


def test_a_snapshot_folder_that_cannot_be_used_is_refused_at_start(xvfb, line_video, line_config, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    out = subprocess.run(
        _run_cmd(line_config, line_video, "--snapshot-dir", str(blocker / "snaps")),
        env=xvfb,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 1, out.stderr
    errors = [x for x in out.stderr.splitlines() if x.startswith("error:")]
    assert errors == [
        f"error: --snapshot-dir {blocker / 'snaps'}: cannot create the folder (Not a directory); give a writable folder"
    ], out.stderr
    assert "Traceback" not in out.stderr
    out = subprocess.run(
        _run_cmd(line_config, line_video, "--snapshot-dir", str(blocker)),
        env=xvfb,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert f"error: --snapshot-dir {blocker}: not a folder; give a writable folder" in out.stderr


def test_s_with_a_snapshot_folder_gone_bad_warns_and_inspection_goes_on(
    xvfb, xwd_tools, line_video, line_config, tmp_path
):
    """The folder was fine at start; then it is replaced by a file. Pressing s is one warning line; the run
    goes on to the end of the video and prints its summary, every part logged."""
    snaps = tmp_path / "snaps"
    events = tmp_path / "ev.jsonl"
    cmd = _run_cmd(line_config, line_video, "--snapshot-dir", str(snaps), "--events", str(events), "--realtime")
    env = {**xvfb, "QT_QPA_PLATFORM": "xcb"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pressed = False

    def probe() -> bool:
        nonlocal pressed
        found = subprocess.run(
            ["xdotool", "search", "--onlyvisible", "--name", "^inspector$"], env=env, capture_output=True, text=True
        )
        if not found.stdout.split():
            return False
        snaps.rmdir()
        snaps.write_text("in the way")
        subprocess.run(["xdotool", "key", "--window", found.stdout.split()[0], "s"], env=env, check=True, timeout=10)
        pressed = True
        return True

    out, err = watch_child(proc, probe, timeout_s=60, every_s=0.1, exit_timeout_s=60)
    assert pressed, err
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    warnings = [x for x in err.splitlines() if "snapshot not saved" in x]
    assert len(warnings) == 1 and str(snaps) in warnings[0] and "inspection continues" in warnings[0], err
    assert "inspection summary" in out
    assert len(events.read_text().splitlines()) == 5  # every part of the video got its verdict


@pytest.mark.data
def test_the_real_window_on_a_1280x720_factory_clip(xvfb_hd, xwd_tools, shared_data, tmp_path):
    """A real clip at 1280x720 in the real window: the canvas is the frame plus the bar, the frame's text scaled
    up from the 640x480 layout, a verdict in the banner, no Qt font noise, the summary with its outcomes."""
    clip = ROOT / "configs" / "clips" / "checkweigher_packages.yaml"
    cmd = [sys.executable, "-m", "inspector", "run", "--config", str(clip), "--realtime"]
    cmd += ["--source", str(shared_data / "videos" / "checkweigher_line_packages.mp4")]
    shot, done = shoot(cmd, {**xvfb_hd, "PYTHONPATH": str(ROOT)}, lambda d: busy(d, 1280, 720, 1), timeout_s=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert shot is not None, "no screenshot with a verdict and a defect in the strip"
    cv2.imwrite(str(tmp_path / "checkweigher.png"), shot)
    lay = layout_for(1280, 720)
    assert shot.shape[:2] == (lay.canvas[1], lay.canvas[0]) and lay.unit == 1.5
    assert count_color(shot[:720, :1280], ROI_COLOR, 10) > 2000
    bx, by, bw, bh = lay.banner
    banner = shot[by : by + bh, bx : bx + bw]
    verdict = max(VERDICT_COLORS, key=lambda v: count_color(banner, VERDICT_COLORS[v], 10))
    assert count_color(banner, VERDICT_COLORS[verdict], 10) > 0.6 * bw * bh
    # the title's text is 1.5 times as tall as on a 640x480 frame (the same words: measured on the '#' and digits)
    ink = (255, 255, 255) if verdict is Verdict.DEFECT else (0, 0, 0)
    big = _ink_rows(shot[by : by + bh // 2 + 2, bx : bx + bw], ink)
    small_lay = layout_for(640, 480)
    sx, sy, sw, sh = small_lay.banner
    summary = Summary()
    summary.on_part(Part(7, 0, 0, (0, 0, 10, 10), verdict, score=0.5, reason="x"))
    small_img = render_overlay(
        FrameView(np.zeros((480, 640, 3), np.uint8), 0, Roi(0, 0, 640, 480), [], [], []), LoopStats(summary=summary)
    )
    small = _ink_rows(small_img[sy : sy + sh // 2 + 2, sx : sx + sw], ink)
    assert 1.3 <= big / small <= 1.7, (big, small)
    assert "QFontDatabase" not in done.stderr and "Traceback" not in done.stderr
    assert "inspection summary" in done.stdout


def test_the_real_window_keeps_labels_apart_on_a_dense_scene(xvfb, xwd_tools, tmp_path):
    """24 touching parts, a row of them at the frame's top edge: in the window's own pixels every label drawn
    lies inside the frame and keeps its whole rim in its colour (no label drawn over another)."""
    env = {**xvfb, "PYTHONPATH": str(ROOT)}
    dump, shown, _, _ = _show_in_window(env, tmp_path, "OK", "dense")
    assert dump is not None and shown is not None and np.array_equal(dump, shown), "the window never showed it"
    parts = []
    for r in range(2):
        for c in range(12):
            v = Verdict.DEFECT if c % 3 == 0 else Verdict.OK
            parts.append(Part(100 + 12 * r + c, 0, 0, (4 + c * 52, r * 52, 50, 50), v, score=0.5))
    view = FrameView(np.zeros((480, 640, 3), np.uint8), 0, Roi(100, 100, 400, 200), [], [], parts)
    health = Health(0.0, CameraHealth(), InspectionHealth(), PartCounts())
    labels = labels_for(label_items(view, health), 640, 480, layout_for(640, 480))
    assert len(labels) >= 12
    for k, ((x, y, w, h), _, fill) in enumerate(labels):
        assert x >= 0 and y >= 0 and x + w <= 640 and y + h <= 480
        rim = np.concatenate(
            [dump[y, x : x + w], dump[y + h - 1, x : x + w], dump[y : y + h, x], dump[y : y + h, x + w - 1]]
        )
        assert np.all(np.abs(rim.astype(int) - np.asarray(fill, int)) <= 1), (k, (x, y, w, h))

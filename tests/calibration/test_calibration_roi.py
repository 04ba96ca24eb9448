"""ROI artefact: geometry, headless flags, the window (under Xvfb), round trip into the runtime, refusals."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
import yaml

from calibration.roi import (
    EditorState,
    Reference,
    load_roi,
    make_roi,
    rect_from_drag,
    save_roi,
    trigger_from_point,
    trigger_line,
)
from engines.errors import UserError
from inspector.cli import main
from inspector.config import RoiConfig
from inspector.detect import Roi


@pytest.mark.parametrize(
    "direction, trigger, line",
    [
        ("right", 0.25, ((200, 50), (200, 250))),
        ("left", 0.25, ((500, 50), (500, 250))),
        ("down", 0.25, ((50, 100), (650, 100))),
        ("up", 0.25, ((50, 200), (650, 200))),
    ],
)
def test_trigger_line_and_its_inverse(direction, trigger, line):
    rect = (50, 50, 600, 200)
    assert trigger_line(*rect, direction, trigger) == line
    mid = ((line[0][0] + line[1][0]) / 2, (line[0][1] + line[1][1]) / 2)
    assert trigger_from_point(*rect, direction, mid) == pytest.approx(trigger)


def test_drag_in_any_direction_is_clipped_to_the_frame():
    assert rect_from_drag((300, 200), (100, 50), (640, 480)) == (100, 50, 200, 150)
    assert rect_from_drag((-20, 400), (700, 500), (640, 480)) == (0, 400, 640, 80)


def test_editor_state_marks_roi_trigger_reference_and_direction():
    st = EditorState((640, 480), (0, 0, 640, 480))
    st.mouse("down", 600, 400)
    st.mouse("move", 300, 300)
    st.mouse("up", 40, 100)
    assert st.rect == (40, 100, 560, 300)
    assert st.key("t") is None and st.mode == "trigger"
    st.mouse("up", 180, 250)
    assert st.trigger == pytest.approx(0.25)
    st.key("d")
    assert st.direction == "down"
    assert st.trigger == pytest.approx((250 - 100) / 300)  # the line still passes through the clicked point
    st.key("m")
    for p in [(10, 10), (20, 20), (100, 460), (300, 460)]:  # a third click starts a new reference
        st.mouse("up", *p)
    assert st.ref_points == ((100, 460), (300, 460))
    assert st.key("\r") == "confirm" and st.key("\x1b") == "cancel"
    roi = st.result(ref_mm=40.0)
    assert roi.px_per_mm == pytest.approx(5.0) and roi.direction == "down"
    with pytest.raises(UserError, match="--ref-mm"):
        st.result(ref_mm=None)


def test_roundtrip_into_the_runtime(tmp_path):
    roi = make_roi((1280, 720), (100, 200, 1000, 300), "left", 0.4, ref_px=250, ref_mm=100)
    path = save_roi(roi, tmp_path / "roi.yaml")
    back = load_roi(path, (1280, 720))
    assert back == roi
    assert back.px_per_mm == pytest.approx(2.5)
    rt = Roi.from_config(RoiConfig(file=str(path)), (1280, 720))  # what the pipeline builds from roi.file
    assert (rt.x, rt.y, rt.w, rt.h, rt.direction, rt.trigger) == (100, 200, 1000, 300, "left", 0.4)
    assert trigger_line(rt.x, rt.y, rt.w, rt.h, rt.direction, rt.trigger) == back.trigger_line()


def test_another_resolution_is_refused(tmp_path):
    path = save_roi(make_roi((640, 480), (0, 0, 640, 480)), tmp_path / "roi.yaml")
    with pytest.raises(UserError, match=r"made for 640x480 frames but the source gives 1280x720"):
        load_roi(path, (1280, 720))
    with pytest.raises(UserError, match="640x480"):
        Roi.from_config(RoiConfig(file=str(path)), (1280, 720))


def test_headless_flags_write_the_artefact(tmp_path, capsys):
    out = tmp_path / "roi.yaml"
    rc = main(
        [
            "calibrate",
            "roi",
            "--frame-size",
            "800x600",
            "--roi",
            "10,20,700,500",
            "--trigger",
            "0.3",
            "--direction",
            "up",
            "--ref-px",
            "300",
            "--ref-mm",
            "120",
            "--out",
            str(out),
        ]
    )
    assert rc == 0, capsys.readouterr().err
    roi = load_roi(out, (800, 600))
    assert (roi.x, roi.y, roi.width, roi.height, roi.direction, roi.trigger) == (10, 20, 700, 500, "up", 0.3)
    assert roi.px_per_mm == pytest.approx(2.5)
    assert "2.5000 px/mm" in capsys.readouterr().out


def test_headless_flags_take_the_frame_size_from_the_source(tmp_path, capsys):
    video = tmp_path / "v.avi"
    wr = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (320, 240))
    for _ in range(3):
        wr.write(np.full((240, 320, 3), 50, np.uint8))
    wr.release()
    out = tmp_path / "roi.yaml"
    assert main(["calibrate", "roi", "--source", str(video), "--roi", "0,40,320,160", "--out", str(out)]) == 0
    assert yaml.safe_load(out.read_text())["frame_size"] == [320, 240]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--frame-size", "640x480", "--roi", "600,0,100,100"], "reaches outside the 640x480 frame"),
        (["--frame-size", "640x480", "--roi", "0,0,100"], "expected x,y,w,h"),
        (["--frame-size", "640x480", "--roi", "0,0,100,100", "--trigger", "1.5"], "trigger"),
        (["--frame-size", "640x480", "--roi", "0,0,100,100", "--ref-px", "100"], "go together"),
        (["--frame-size", "640by480", "--roi", "0,0,100,100"], "expected WxH"),
        (["--frame-size", "640x480"], "needs a frame"),
        ([], "give --source"),
    ],
)
def test_headless_bad_input_is_one_line(argv, message, tmp_path, capsys):
    rc = main(["calibrate", "roi", *argv, "--out", str(tmp_path / "roi.yaml")])
    err = capsys.readouterr().err
    assert rc == 1 and message in err and "Traceback" not in err
    assert not (tmp_path / "roi.yaml").exists()


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.update(kind="camera-calibration"), "field 'kind': expected 'roi'"),
        (lambda d: d.update(direction="sideways"), "field 'direction'"),
        (lambda d: d.pop("width"), "missing field 'width'"),
        (lambda d: d.update(colour="red"), "unknown field 'colour'"),
        (lambda d: d.update(x=500), "reaches outside"),
    ],
)
def test_bad_roi_file_names_file_and_field(tmp_path, change, message):
    path = save_roi(make_roi((640, 480), (0, 0, 640, 480)), tmp_path / "roi.yaml")
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(UserError) as exc:
        load_roi(path, (640, 480))
    assert str(path) in str(exc.value) and message in str(exc.value)


def test_no_display_is_a_clear_error_not_an_abort(tmp_path):
    frame = tmp_path / "frame.png"
    cv2.imwrite(str(frame), np.full((120, 160, 3), 60, np.uint8))
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "inspector",
            "calibrate",
            "roi",
            "--source",
            str(frame),
            "--out",
            str(tmp_path / "roi.yaml"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 1
    assert "no display for the ROI window" in res.stderr and "--roi x,y,w,h" in res.stderr
    assert not (tmp_path / "roi.yaml").exists()


# --- the window, driven like a person would, on a virtual display ---------------------------------------------


@pytest.fixture
def xdisplay(xvfb):
    """The shared Xvfb display (tests/conftest.py), with xdotool to drive the window."""
    if not shutil.which("xdotool"):
        pytest.skip("xdotool is needed for the window test (apt-get install xdotool)")
    return {**xvfb, "QT_QPA_PLATFORM": "xcb"}


def test_window_drag_click_and_confirm(xdisplay, tmp_path):
    frame = tmp_path / "frame.png"
    cv2.imwrite(str(frame), np.full((360, 480, 3), 60, np.uint8))
    out = tmp_path / "roi.yaml"
    app = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "inspector",
            "calibrate",
            "roi",
            "--source",
            str(frame),
            "--ref-mm",
            "50",
            "--out",
            str(out),
            "--timeout",
            "60",
        ],
        env=xdisplay,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def wait_title(text: str) -> str:
            """The window title says the mode: wait until the app has taken the last key (no sleeps)."""
            found = subprocess.run(
                ["xdotool", "search", "--sync", "--onlyvisible", "--name", text],
                env=xdisplay,
                capture_output=True,
                text=True,
                timeout=30,
            )
            return found.stdout.split()[0]

        w = ["--window", wait_title("mode: roi")]

        def do(*args: str) -> None:
            subprocess.run(["xdotool", *args], env=xdisplay, check=True, timeout=10)

        do(
            "mousemove",
            *w,
            "40",
            "50",
            "mousedown",
            "1",
            "mousemove",
            *w,
            "200",
            "150",
            "mousemove",
            *w,
            "440",
            "300",
            "mouseup",
            "1",
        )  # drag the ROI
        do("key", *w, "t")
        wait_title("mode: trigger")
        do("mousemove", *w, "300", "200", "click", "1")  # the trigger line
        do("key", *w, "d")
        wait_title("direction: down")
        do("key", *w, "d")
        wait_title("direction: left")
        do("key", *w, "m")
        wait_title("mode: ref")
        do("mousemove", *w, "100", "320", "click", "1", "mousemove", *w, "300", "320", "click", "1")
        wait_title("reference points: 2")
        do("key", *w, "Return")
        stdout, stderr = app.communicate(timeout=30)
    finally:
        if app.poll() is None:
            app.kill()
            app.wait()
    assert app.returncode == 0, stderr
    roi = load_roi(out, (480, 360))
    assert (roi.x, roi.y, roi.width, roi.height) == (40, 50, 400, 250)
    assert roi.direction == "left"
    # the trigger was clicked at x = 300 while the direction was still 'right'; the line stays where it was drawn
    assert roi.trigger == pytest.approx(1 - (300 - 40) / 400)
    assert roi.trigger_line() == ((300, 50), (300, 300))
    assert roi.px_per_mm == pytest.approx(200 / 50)
    assert "wrote" in stdout


def test_window_starts_from_the_configured_artefact(xdisplay, tmp_path):
    frame = tmp_path / "frame.png"
    cv2.imwrite(str(frame), np.full((240, 320, 3), 60, np.uint8))
    ref = Reference(p1=(20, 200), p2=(120, 200), mm=25.0)
    old = save_roi(make_roi((320, 240), (10, 30, 300, 150), "down", 0.7, reference=ref), tmp_path / "old.yaml")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"roi": {"file": str(old)}}))
    out = tmp_path / "new.yaml"
    app = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "inspector",
            "calibrate",
            "roi",
            "--source",
            str(frame),
            "--config",
            str(tmp_path / "c.yaml"),
            "--out",
            str(out),
            "--timeout",
            "60",
        ],
        env=xdisplay,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        found = subprocess.run(
            ["xdotool", "search", "--sync", "--onlyvisible", "--name", "reference points: 2"],
            env=xdisplay,
            capture_output=True,
            text=True,
            timeout=30,
        )
        subprocess.run(
            ["xdotool", "key", "--window", found.stdout.split()[0], "Return"], env=xdisplay, check=True, timeout=10
        )
        _, stderr = app.communicate(timeout=30)
    finally:
        if app.poll() is None:
            app.kill()
            app.wait()
    assert app.returncode == 0, stderr
    new, before = load_roi(out, (320, 240)), load_roi(old, (320, 240))
    assert new.model_dump(exclude={"created"}) == before.model_dump(exclude={"created"})

"""GStreamer sources through the real gst-launch-1.0 (Debian's GStreamer, installed by .ci/run)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from capture_kit import SIZE, frame_index

from engines.errors import UserError
from inspector.capture import open_source
from inspector.capture.gst import GstLaunchSource, is_live
from inspector.config import SourceConfig

CFG = SourceConfig()
needs_gst = pytest.mark.skipif(
    shutil.which("gst-launch-1.0") is None,
    reason="gst-launch-1.0 not installed (apt-get install gstreamer1.0-tools gstreamer1.0-plugins-base)",
)


def read_all(src) -> list[np.ndarray]:
    frames = []
    while (img := src.read()) is not None:
        frames.append(img)
    return frames


@needs_gst
def test_videotestsrc_frame_count_size_and_rate():
    with open_source("gst:videotestsrc num-buffers=12 ! video/x-raw,width=96,height=64,framerate=25/1", CFG) as src:
        assert isinstance(src, GstLaunchSource) and not src.live
        assert src.size == (96, 64) and src.fps == 25
        frames = read_all(src)
    assert len(frames) == 12
    assert all(f.shape == (64, 96, 3) and f.dtype == np.uint8 for f in frames)
    assert frames[0][0, 0].tolist() == pytest.approx([255, 255, 255], abs=3)  # SMPTE bars start white


@needs_gst
@pytest.mark.parametrize("size", [(63, 47), (62, 46), (640, 480)])
def test_odd_and_unaligned_sizes_keep_their_geometry(size):
    """Sizes whose rows GStreamer pads to 4 bytes: a wrong stride would shear the vertical colour bars."""
    w, h = size
    with open_source(f"gst:videotestsrc num-buffers=2 ! video/x-raw,width={w},height={h}", CFG) as src:
        frames = read_all(src)
    assert len(frames) == 2
    top = frames[1][: h // 2].astype(int)
    assert top.shape == (h // 2, w, 3)
    assert np.abs(top - top[:1]).max() <= 2  # every row of the bars is the same row
    assert len({tuple(p) for p in top[0]}) >= 7  # and the seven bars are there


@needs_gst
@pytest.mark.parametrize("demux", ["avidemux ! jpegdec", "decodebin"])
def test_filesrc_of_a_recorded_video(mjpg_video, demux):
    path: Path = mjpg_video(n=15, fps=30)
    with open_source(f"gst:filesrc location={path} ! {demux}", CFG) as src:
        assert not src.live and src.size == SIZE
        frames = read_all(src)
    assert [frame_index(f) for f in frames] == list(range(15))


@needs_gst
def test_live_pipeline_is_live_and_quoted_paths_work(tmp_path):
    assert is_live("v4l2src device=/dev/video0 ! jpegdec")
    assert is_live("videotestsrc is-live=true ! videoconvert")
    assert not is_live("filesrc location=a.avi ! decodebin")
    with open_source("gst:videotestsrc is-live=true num-buffers=3 ! video/x-raw,width=32,height=24", CFG) as src:
        assert src.live and len(read_all(src)) == 3


@needs_gst
@pytest.mark.parametrize(
    ("pipeline", "expected"),
    [
        ("bogusnosuchelement ! videoconvert", 'no element "bogusnosuchelement"'),
        ("filesrc location=/no/such/file.avi ! decodebin", 'No such file "/no/such/file.avi"'),
        ("videotestsrc ! video/x-raw,format=NOTAFORMAT", "could not link"),
    ],
)
def test_bad_pipeline_is_one_line_with_gst_message(pipeline, expected):
    with pytest.raises(UserError) as e:
        open_source(f"gst:{pipeline}", CFG)
    msg = str(e.value)
    assert expected in msg and "\n" not in msg and msg.startswith("gst: pipeline failed")


def test_missing_gst_launch_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH with no gst-launch-1.0 on it
    monkeypatch.setenv("INSPECTOR_GST", "launch")  # even where OpenCV has its own GStreamer
    with pytest.raises(UserError, match=r"gst-launch-1.0, which is not on PATH; install GStreamer: .*apt-get"):
        open_source("gst:videotestsrc", CFG)


@needs_gst
@pytest.mark.parametrize(
    ("preset", "absent", "expected"),
    [
        ("v4l2.yaml", "/dev/video0", "Cannot identify device '/dev/video0'"),
        ("jetson_csi.yaml", "nvarguscamerasrc", 'no element "nvarguscamerasrc"'),
    ],
)
def test_camera_presets_are_live_and_fail_cleanly_without_their_camera(root, preset, absent, expected):
    from inspector.config import load_config

    cfg = load_config(root / "configs" / preset).source
    assert cfg.uri.startswith("gst:") and is_live(cfg.uri[4:])
    if Path(absent).exists() or (
        not absent.startswith("/") and shutil.which("gst-inspect-1.0") and _has_element(absent)
    ):
        pytest.skip(f"{absent} is present on this machine")
    with pytest.raises(UserError) as e:
        open_source(cfg.uri, cfg)
    assert expected in str(e.value) and "\n" not in str(e.value)


def _has_element(name: str) -> bool:
    import subprocess

    return subprocess.run(["gst-inspect-1.0", name], capture_output=True, timeout=30).returncode == 0


@needs_gst
def test_a_pipeline_that_never_gives_a_frame_times_out_in_one_line():
    """appsrc waits forever for data that never comes: the open timeout ends it with one line that says what
    to check (the camera, or a first run's plugin scan), and the gst-launch process is gone."""
    with pytest.raises(UserError) as e:
        GstLaunchSource("appsrc ! video/x-raw,format=I420,width=64,height=48,framerate=10/1", open_timeout_s=1.0)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("gst: the pipeline gave no frame within 1 s"), msg
    assert "connected and free" in msg and "run it once more" in msg and "appsrc" in msg
    if shutil.which("pgrep"):  # no gst-launch-1.0 left running the pipeline
        import subprocess

        left = subprocess.run(["pgrep", "-f", "appsrc ! video/x-raw,format=I420,width=64"], capture_output=True)
        assert left.returncode == 1, left.stdout

"""Sources on real files and folders, a real stream; every bad input as one UserError line."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import cv2
import numpy as np
import pytest
from capture_kit import SIZE, frame_index

from engines.errors import UserError
from inspector.capture import open_source
from inspector.capture.sources import ImageFolderSource, VideoFileSource
from inspector.config import SourceConfig

CFG = SourceConfig()


def read_all(src) -> list[np.ndarray]:
    frames = []
    while (img := src.read()) is not None:
        frames.append(img)
    return frames


def test_video_file_gives_every_frame_in_order(mjpg_video):
    with open_source(str(mjpg_video(n=20, fps=25)), CFG) as src:
        assert isinstance(src, VideoFileSource) and not src.live
        assert src.fps == pytest.approx(25) and src.size == SIZE
        positions = []
        frames = []
        while (img := src.read()) is not None:
            frames.append(img)
            positions.append(src.pos_ms)
    assert [frame_index(f) for f in frames] == list(range(20))
    assert positions == pytest.approx([i * 40.0 for i in range(20)])
    assert src.corrupt == 0


def test_corrupt_frames_in_a_video_are_skipped_and_counted(mjpg_video):
    with open_source(str(mjpg_video(n=20, corrupt=(5, 12))), CFG) as src:
        frames = read_all(src)
    assert [frame_index(f) for f in frames] == [i for i in range(20) if i not in (5, 12)]  # no stand-in frames
    assert src.corrupt == 2


def test_image_folder_in_natural_order_skipping_other_files(tmp_path: Path):
    for i in (1, 2, 10):
        cv2.imwrite(str(tmp_path / f"frame_{i}.png"), np.full((40, 50, 3), i * 20, np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "frame_3.png").write_bytes(b"\x89PNG broken")  # looks like an image, is not one
    with open_source(str(tmp_path), SourceConfig(fps=10)) as src:
        assert isinstance(src, ImageFolderSource) and src.size == (50, 40) and src.fps == 10
        levels, positions = [], []
        while (img := src.read()) is not None:
            levels.append(int(img.mean()))
            positions.append(src.pos_ms)
    assert levels == [20, 40, 200]  # frame_1, frame_2, frame_10: numbers sorted as numbers
    assert positions == [0.0, 100.0, 200.0]
    assert src.corrupt == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _not_a_video(tmp: Path) -> str:
    (tmp / "notes.mp4").write_text("this is text, not a video")
    return str(tmp / "notes.mp4")


def _all_corrupt(tmp: Path) -> str:
    from capture_kit import corrupt_jpeg_frames

    path = tmp / "bad.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, SIZE)
    for _ in range(10):
        writer.write(np.zeros((SIZE[1], SIZE[0], 3), np.uint8))
    writer.release()
    corrupt_jpeg_frames(path, tuple(range(10)))
    return str(path)


def _empty_dir(tmp: Path) -> str:
    (tmp / "empty").mkdir()
    (tmp / "empty" / "readme.txt").write_text("x")
    return str(tmp / "empty")


def _unused_camera() -> str:
    index = next(i for i in range(7, 64) if not os.path.exists(f"/dev/video{i}"))
    return str(index)


BAD = [
    ("nonexistent", lambda tmp: str(tmp / "missing.mp4"), "no such file or folder"),
    ("not a video", _not_a_video, "not a video"),
    ("no decodable frame", _all_corrupt, "no frame could be decoded"),
    ("folder without images", _empty_dir, "no images"),
    ("unknown camera", lambda tmp: _unused_camera(), "cannot open /dev/video"),
    ("camera by path", lambda tmp: "/dev/video99", "no such device"),
    ("refused stream", lambda tmp: f"rtsp://user:secret@127.0.0.1:{_free_port()}/cam", "cannot open it"),
    ("empty pipeline", lambda tmp: "gst:", "empty pipeline"),
    ("unbalanced quote", lambda tmp: "gst:videotestsrc ! 'x", "quotes"),
]


NEEDS_GST_LAUNCH = {"unbalanced quote"}  # a pipeline is split only once GStreamer is known to be there


@pytest.mark.parametrize(("case", "make_uri", "expected"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_one_clear_line(tmp_path: Path, case, make_uri, expected):
    if case in NEEDS_GST_LAUNCH and shutil.which("gst-launch-1.0") is None:
        pytest.skip("gst-launch-1.0 not installed (apt-get install gstreamer1.0-tools); it is checked first")
    uri = make_uri(tmp_path)
    with pytest.raises(UserError) as e:
        open_source(uri, CFG)
    msg = str(e.value)
    assert expected in msg and "\n" not in msg
    assert "secret" not in msg  # stream credentials never reach a message


def test_unreadable_file_is_one_clear_line(mjpg_video):
    """As root every file is readable, so the check runs as 'nobody' in a subprocess (setpriv)."""
    import shutil
    import subprocess
    import sys
    import tempfile

    if os.geteuid() != 0:
        path = mjpg_video()
        path.chmod(0)
        with pytest.raises(UserError, match="permission denied"):
            open_source(str(path), CFG)
        return
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c"]
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: cannot make a file unreadable")
    if subprocess.run([*nobody, "import inspector.capture"], capture_output=True, timeout=60).returncode:
        pytest.skip("user 'nobody' cannot run this checkout's Python (its folder is private)")
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)
        path = Path(tmp) / "locked.avi"
        path.write_bytes(mjpg_video().read_bytes())
        path.chmod(0)
        code = (
            "from engines.errors import UserError\n"
            "from inspector.capture import open_source\nfrom inspector.config import SourceConfig\n"
            f"try:\n    open_source({str(path)!r}, SourceConfig())\nexcept UserError as e:\n    print(e)\n"
        )
        out = subprocess.run([*nobody, code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"source {path}: permission denied; make it readable by this user"


def test_stream_options_apply_to_the_stream_only(monkeypatch):
    """Left in the environment, FFmpeg's low-delay options would change how later recordings decode."""
    monkeypatch.delenv("OPENCV_FFMPEG_CAPTURE_OPTIONS", raising=False)
    with pytest.raises(UserError):
        open_source(f"rtsp://127.0.0.1:{_free_port()}/cam", CFG)
    assert "OPENCV_FFMPEG_CAPTURE_OPTIONS" not in os.environ


def test_network_stream_through_ffmpeg(mjpg_video):
    """The rtsp:// path (OpenCV's FFmpeg backend, low-latency options) on a real local HTTP stream."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    path = mjpg_video(n=10)
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(path.parent))
    handler.log_message = lambda *a: None
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    try:
        with open_source(f"http://127.0.0.1:{server.server_port}/{path.name}", CFG) as src:
            assert src.live and src.size == SIZE
            frames = read_all(src)
    finally:
        server.shutdown()
        server.server_close()
    seen = [frame_index(f) for f in frames]
    assert len(seen) >= 8 and seen == list(range(seen[0], 10))  # in order; a live open may skip its first

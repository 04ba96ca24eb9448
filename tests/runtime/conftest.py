"""Runtime test fixtures: a tiny exported ONNX model, a drawn line video, an Xvfb display."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from runtime_synth import LINE_FRAMES, LINE_SPRITES, render  # noqa: E402


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory) -> Path:
    """An untrained seedcnn exported to ONNX: the real backend and file format, small and fast."""
    torch = pytest.importorskip("torch", reason="exporting the test model needs torch (the train extra)")
    torch.set_num_threads(1)
    from engines.archs import build_network
    from engines.checkpoint import save_checkpoint
    from engines.export import export_onnx
    from engines.meta import ModelMeta

    d = tmp_path_factory.mktemp("model")
    meta = ModelMeta("seedcnn", ["def_front", "ok_front"], "ok_front", 32, 1, [0.5], [0.25], 0.5)
    torch.manual_seed(0)
    save_checkpoint(d / "tiny.pt", build_network(meta).state_dict(), meta)
    return export_onnx(d / "tiny.pt", d / "tiny.onnx")


@pytest.fixture(scope="session")
def line_video(tmp_path_factory) -> Path:
    """640x240 at 30 fps, 5 parts moving right at 9 px/frame, MJPG in AVI."""
    path = tmp_path_factory.mktemp("line") / "line.avi"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (640, 240))
    assert w.isOpened()
    for img in render(LINE_SPRITES, LINE_FRAMES):
        w.write(img)
    w.release()
    return path


@pytest.fixture(scope="session")
def line_config(tmp_path_factory, tiny_onnx) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "line.yaml"
    path.write_text(
        "detection:\n  method: threshold\n  threshold: 100\n  min_area: 800\n"
        f"model:\n  path: {tiny_onnx}\n"
        "display:\n  enabled: auto\n"
    )
    return path


def _free_display() -> int:
    for n in range(91, 160):
        if not Path(f"/tmp/.X11-unix/X{n}").exists() and not Path(f"/tmp/.X{n}-lock").exists():
            return n
    pytest.skip("no free X display number")


@pytest.fixture
def xvfb():
    """A private Xvfb display; yields the environment for a process that should use it."""
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb not installed (apt-get install xvfb); the real-window test needs it")
    n = _free_display()
    proc = subprocess.Popen(["Xvfb", f":{n}", "-screen", "0", "1024x768x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sock = Path(f"/tmp/.X11-unix/X{n}")
    deadline = time.monotonic() + 10
    while not sock.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.skip(f"Xvfb :{n} did not start")
        time.sleep(0.05)
    env = {**os.environ, "DISPLAY": f":{n}"}
    env.pop("WAYLAND_DISPLAY", None)
    probe = ["xwininfo", "-root"] if shutil.which("xwininfo") else ["xwd", "-root", "-silent"]
    while subprocess.run(probe, env=env, capture_output=True).returncode != 0:  # the server answers
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.skip(f"Xvfb :{n} does not answer")
        time.sleep(0.05)
    try:
        yield env
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

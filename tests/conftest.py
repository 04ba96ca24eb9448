"""Shared fixtures. Tests that need the real data sets use ``shared_data`` and skip, saying why, without it."""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _data_dir() -> Path:
    return Path(os.environ.get("INSPECTOR_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    d = _data_dir()
    if not (d / "casting").is_dir():
        pytest.skip(f"real data sets not found at {d}; set INSPECTOR_DATA to the shared data folder")
    return d


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session", autouse=True)
def _gst_registry() -> None:
    """Build GStreamer's plugin registry once, before any test times a pipeline: on a fresh machine the first
    gst-launch-1.0 scans every plugin first (3 s idle here, over the sources' 10 s open timeout on a loaded
    one), which is a one-time host cost, not what those tests measure. Instant once the registry exists."""
    if shutil.which("gst-inspect-1.0"):
        subprocess.run(["gst-inspect-1.0", "coreelements"], capture_output=True, timeout=300, check=False)


def load_bench(name: str):
    """A ``bench/`` script imported as a module by its name (``gpu_sweep`` for bench/gpu_sweep.py)."""
    import importlib.machinery
    import importlib.util

    loader = importlib.machinery.SourceFileLoader(name, str(ROOT / "bench" / f"{name}.py"))
    spec = importlib.util.spec_from_loader(name, loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def inspector(*args, env=None, timeout=120, cwd=None) -> subprocess.CompletedProcess:
    """``python -m inspector ARGS`` as a user runs it, without a display; output captured as text."""
    env = {**os.environ, **(env or {})}
    env.pop("DISPLAY", None)
    return subprocess.run(
        [sys.executable, "-m", "inspector", *map(str, args)],
        capture_output=True,
        text=True,
        errors="replace",
        timeout=timeout,
        env=env,
        cwd=cwd,
    )


def make_part_image(defect: bool, rng: np.random.Generator, size: int = 64) -> np.ndarray:
    """A synthetic 'casting': a bright disc on a dark background; defects carry a dark notch."""
    img = np.full((size, size, 3), 30, np.uint8)
    c = size // 2 + int(rng.integers(-3, 4))
    cv2.circle(img, (c, c), size // 3, (200, 200, 200), -1)
    img = cv2.add(img, rng.integers(0, 20, img.shape, dtype=np.uint8))
    if defect:
        x, y = (int(v) for v in rng.integers(size // 3, 2 * size // 3, 2))
        cv2.rectangle(img, (x - 5, y - 5), (x + 5, y + 5), (20, 20, 20), -1)
    return img


@pytest.fixture
def tiny_dataset(tmp_path: Path):
    """Factory: a class-folder dataset of synthetic images, ``{class_name: count}``."""

    def make(counts: dict[str, int] | None = None, size: int = 64, seed: int = 0) -> Path:
        counts = counts or {"ok": 24, "defect": 24}
        rng = np.random.default_rng(seed)
        root = tmp_path / "data"
        for name, n in counts.items():
            (root / name).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = make_part_image(name.lower() not in ("ok", "good"), rng, size)
                cv2.imwrite(str(root / name / f"{name}_{i:03d}.png"), img)
        return root

    return make


@pytest.fixture
def xvfb():
    """A private Xvfb display; yields the environment for a process that should use it."""
    yield from _xvfb("1024x768x24")


@pytest.fixture
def xvfb_hd():
    """A private Xvfb display large enough for the overlay of a 1280x720 frame (its status bar beside it)."""
    yield from _xvfb("1920x1200x24")


def _xvfb(screen: str):
    """Xvfb picks a free display number itself and writes it to a pipe once it listens (-displayfd): no race with
    another test run choosing the same number at the same moment."""
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb not installed (apt-get install xvfb); the real-window test needs it")
    r, w = os.pipe()
    proc = subprocess.Popen(
        # -noreset: without it the server regenerates when its last client leaves (the readiness probe
        # below), and a window opening in that moment is refused ("could not connect to display")
        ["Xvfb", "-displayfd", str(w), "-screen", "0", screen, "-nolisten", "tcp", "-noreset"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        pass_fds=(w,),
    )
    os.close(w)
    deadline = time.monotonic() + 10
    got = b""
    try:
        while not got.endswith(b"\n"):
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.skip("Xvfb did not start")
            if select.select([r], [], [], 0.1)[0]:
                chunk = os.read(r, 16)
                if not chunk:
                    proc.kill()
                    pytest.skip("Xvfb did not start")
                got += chunk
    finally:
        os.close(r)
    n = int(got)
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

"""The operator's window read back from X: a dump of the named window (xdotool finds it, xwd dumps it), and the
screenshots in docs/ made the same way:

    .venv/bin/python tests/runtime/window_kit.py --write-docs   # needs Xvfb, xwd (x11-apps), xdotool, ../shared/data
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
DOCS_IMG = ROOT / "docs" / "img"


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


def window_dump(env: dict, name: str = "inspector") -> np.ndarray | None:
    """The window called ``name`` as X draws it (None while it is not mapped yet)."""
    found = subprocess.run(
        ["xdotool", "search", "--onlyvisible", "--name", f"^{name}$"], env=env, capture_output=True, text=True
    )
    ids = found.stdout.split()
    if not ids:
        return None
    out = subprocess.run(["xwd", "-id", ids[0], "-silent"], env=env, capture_output=True, timeout=20)
    return read_xwd(out.stdout) if out.returncode == 0 and out.stdout else None


def shoot(
    cmd: list[str], env: dict, ready: Callable[[np.ndarray], bool], *, timeout_s: float = 90.0
) -> tuple[np.ndarray | None, subprocess.CompletedProcess]:
    """Run ``cmd`` (it opens the window), dump its window until ``ready(dump)``, then let it run to its end.
    -> (the first dump that was ready or None, the finished process with its output)."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    shot = None
    try:
        deadline = time.monotonic() + timeout_s
        while proc.poll() is None and time.monotonic() < deadline:
            dump = window_dump(env)
            if dump is not None and ready(dump):
                shot = dump
                break
            time.sleep(0.1)
        out, err = proc.communicate(timeout=timeout_s)
    finally:
        if proc.poll() is None:
            proc.kill()
            out, err = proc.communicate()
    return shot, subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def busy(dump: np.ndarray, frame_w: int, frame_h: int, min_defects: int = 2) -> bool:
    """A screenshot worth showing: a verdict in the banner and ``min_defects`` thumbnails in the strip."""
    from inspector.overlay import NO_PART_COLOR, VERDICT_COLORS, layout_for
    from inspector.records import Verdict

    lay = layout_for(frame_w, frame_h)
    if dump.shape[:2] != (lay.canvas[1], lay.canvas[0]):
        return False
    bx, by, bw, bh = lay.banner
    banner = dump[by + 2 : by + 6, bx + 2 : bx + bw - 2].reshape(-1, 3).astype(int)
    if np.all(np.abs(banner - np.asarray(NO_PART_COLOR)) <= 2):
        return False
    red = np.asarray(VERDICT_COLORS[Verdict.DEFECT])
    framed = [np.all(np.abs(dump[y + side // 2, x].astype(int) - red) <= 10) for x, y, side, _ in lay.thumbs]
    return sum(framed) >= min_defects


def _xvfb(screen: str) -> tuple[subprocess.Popen, dict]:
    for n in range(120, 200):
        if not Path(f"/tmp/.X11-unix/X{n}").exists() and not Path(f"/tmp/.X{n}-lock").exists():
            break
    proc = subprocess.Popen(
        ["Xvfb", f":{n}", "-screen", "0", screen, "-nolisten", "tcp", "-noreset"], stderr=subprocess.DEVNULL
    )
    env = {**os.environ, "DISPLAY": f":{n}", "PYTHONPATH": str(ROOT)}
    deadline = time.monotonic() + 10
    while subprocess.run(["xdotool", "getdisplaygeometry"], env=env, capture_output=True).returncode != 0:
        if time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"Xvfb :{n} did not start")
        time.sleep(0.1)
    return proc, env


def write_docs() -> None:
    """docs/img/overlay-demo-640x480.png (the demo line) and docs/img/overlay-checkweigher-1280x720.png (a real
    factory clip; its parts are not castings, so the verdicts mean nothing there)."""
    import cv2

    for tool in ("Xvfb", "xwd", "xdotool"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is needed (apt-get install xvfb x11-apps xdotool)")
    xvfb, env = _xvfb("1920x1200x24")
    try:
        py = sys.executable
        shots = {
            "overlay-demo-640x480.png": ([py, "-m", "inspector", "run"], (640, 480), 3),
            "overlay-checkweigher-1280x720.png": (
                [py, "-m", "inspector", "run", "--config", "configs/clips/checkweigher_packages.yaml", "--realtime"],
                (1280, 720),
                2,
            ),
        }
        for name, (cmd, (w, h), n) in shots.items():
            shot, done = shoot(cmd, env, lambda d, w=w, h=h, n=n: busy(d, w, h, n))
            if shot is None:
                raise SystemExit(f"{name}: no screenshot ({done.returncode}): {done.stderr[-500:]}")
            cv2.imwrite(str(DOCS_IMG / name), shot, [cv2.IMWRITE_PNG_COMPRESSION, 9])
            print(f"{DOCS_IMG / name}: {shot.shape[1]}x{shot.shape[0]}")
    finally:
        xvfb.terminate()
        xvfb.wait(timeout=10)


if __name__ == "__main__":
    if sys.argv[1:] != ["--write-docs"]:
        sys.exit(__doc__)
    write_docs()

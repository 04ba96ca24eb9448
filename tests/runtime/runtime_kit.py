"""Drawn conveyor frames and a fake engine for the runtime's pure-logic tests (no model, no video)."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np

from engines.meta import ModelMeta
from inspector.config import InspectorConfig
from inspector.records import Frame

BELT = 40
OK_GRAY = 150
DEFECT_GRAY = 245


@dataclass
class Sprite:
    """A square part: where it is at each frame (None = not on the belt)."""

    path: dict[int, tuple[int, int]]  # frame -> top-left (x, y)
    size: int = 60
    defect: bool = False


def moving(
    start_frame: int,
    x0: float,
    y: int,
    speed: float,
    frames: int,
    *,
    stop: tuple[int, int] | None = None,
    size: int = 60,
    defect: bool = False,
    axis: str = "x",
) -> Sprite:
    """A part moving along +x (or +y) at ``speed`` px/frame; ``stop=(f0, f1)`` holds it still in [f0, f1)."""
    path, pos = {}, float(x0)
    for f in range(start_frame, frames):
        path[f] = (int(round(pos)), y) if axis == "x" else (y, int(round(pos)))
        if stop is None or not (stop[0] <= f < stop[1]):
            pos += speed
    return Sprite(path, size, defect)


def render(sprites: list[Sprite], n_frames: int, size=(640, 240), seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    w, h = size
    frames = []
    for f in range(n_frames):
        img = np.full((h, w, 3), BELT, np.uint8)
        img += rng.integers(0, 12, img.shape, dtype=np.uint8)
        for s in sprites:
            if f not in s.path:
                continue
            x, y = s.path[f]
            x0, y0, x1, y1 = max(0, x), max(0, y), min(w, x + s.size), min(h, y + s.size)
            if x1 > x0 and y1 > y0:
                img[y0:y1, x0:x1] = DEFECT_GRAY if s.defect else OK_GRAY
        frames.append(img)
    return frames


def as_frames(images: list[np.ndarray]) -> list[Frame]:
    return [Frame(i, 1_000_000 * i, im) for i, im in enumerate(images)]


@dataclass
class FakeEngine:
    """P(defect) from the crop's brightest pixels: drawn defects are brighter. Records every batch."""

    last_maps = None  # a classifier: no anomaly map (engines.base.Engine)
    fail: bool = False
    batches: list[int] = field(default_factory=list)
    meta: ModelMeta = field(
        default_factory=lambda: ModelMeta("fake", ["def_front", "ok_front"], "ok_front", 32, 1, [0.0], [1.0], 0.5)
    )

    def infer(self, batch: np.ndarray) -> np.ndarray:
        self.batches.append(len(batch))
        if self.fail:
            raise RuntimeError("device lost")
        centre = batch[:, 0, 12:20, 12:20].reshape(len(batch), -1).mean(axis=1)
        return (centre > (OK_GRAY + DEFECT_GRAY) / 2 / 255).astype(np.float32)[:, None]


class ListSink:
    def __init__(self) -> None:
        self.parts = []
        self.closed = False

    def on_part(self, part) -> None:
        self.parts.append(part)

    def close(self) -> None:
        self.closed = True


def make_cfg(**sections) -> InspectorConfig:
    """Settings that fit the drawn frames: fixed threshold, full-resolution segmentation (exact frames)."""
    base = {
        "detection": {"method": "threshold", "threshold": 100, "min_area": 800, "blur": 0, "morph": 3, "downscale": 1},
        "roi": {"direction": "right", "trigger": 0.5},
        "tracking": {"max_distance_px": 60},
    }
    for k, v in sections.items():
        base[k] = {**base.get(k, {}), **v}
    return InspectorConfig.model_validate(base)


class ScriptedCapture:
    """Hands out frames; ``stall_at`` = frame seqs after which the source reports a stall (a reopen)."""

    def __init__(self, frames, stall_at=(), stop_at=None, stop=None):
        self.frames = list(frames)
        self.stall_at = set(stall_at)
        self.stall_count = 0
        self.ended = threading.Event()
        self.stats = SimpleNamespace(dropped=3, corrupt=0)
        self._stop_at, self._stop = stop_at, stop

    def get(self, timeout):
        if not self.frames:
            self.ended.set()
            return None
        f = self.frames.pop(0)
        if f.seq in self.stall_at:
            self.stall_count += 1
        if self._stop_at is not None and f.seq == self._stop_at:
            self._stop.set()
        return f


# The drawn line the CLI tests and fixtures share: five parts, alternating OK/defect.
LINE_FRAMES = 150
LINE_SPRITES = [moving(0, -60 - 150 * i, 20 + 110 * (i % 2), 9, LINE_FRAMES, defect=bool(i % 2)) for i in range(5)]


def watch_child(
    proc: subprocess.Popen, probe: Callable[[], bool], *, timeout_s: float, every_s: float, exit_timeout_s: float
) -> tuple[str, str]:
    """Call ``probe()`` every ``every_s`` while ``proc`` runs, until it returns True or ``timeout_s`` passes; then
    wait for the child to end and return its (stdout, stderr). A child still running on the way out is killed."""
    try:
        deadline = time.monotonic() + timeout_s
        while proc.poll() is None and time.monotonic() < deadline:
            if probe():
                break
            time.sleep(every_s)
        return proc.communicate(timeout=exit_timeout_s)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()

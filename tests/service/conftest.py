"""Service-test fixtures: a line rendered once from the bundled casting sample (real photos, known truth)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import pytest

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class RenderedLine:
    video: Path
    truth: Path
    config: dict  # source, roi, detection, tracking that find these parts
    frames: int
    fps: float


@pytest.fixture(scope="session")
def rendered_line(tmp_path_factory) -> RenderedLine:
    """A few seconds of belt at 30 fps: 10 real casting photos from demo/ passing a 480x240 frame."""
    from inspector.simulate import render_line

    d = tmp_path_factory.mktemp("service-line")
    video, truth = d / "line.avi", d / "line.csv"
    spec = render_line(ROOT / "demo", video, truth, fps=30.0, size=(480, 240), parts=10, seed=3)
    cap = cv2.VideoCapture(str(video))
    frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    return RenderedLine(video, truth, spec.config_dict(), frames, 30.0)

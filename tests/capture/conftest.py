"""Fixtures for the capture tests: real video files written with OpenCV's VideoWriter."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from capture_kit import SIZE, corrupt_jpeg_frames, level


@pytest.fixture
def mjpg_video(tmp_path: Path) -> Callable[..., Path]:
    """Factory: an MJPG AVI of n frames; frame i is grey level ``level(i)`` with its number written on it."""

    def make(n: int = 20, fps: float = 30.0, name: str = "clip.avi", corrupt: tuple[int, ...] = ()) -> Path:
        path = tmp_path / name
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, SIZE)
        assert writer.isOpened()
        for i in range(n):
            img = np.full((SIZE[1], SIZE[0], 3), level(i), np.uint8)
            cv2.putText(img, str(i), (40, 90), cv2.FONT_HERSHEY_SIMPLEX, 1.5, (0, 0, 255), 3)
            writer.write(img)
        writer.release()
        if corrupt:
            corrupt_jpeg_frames(path, corrupt)
        return path

    return make

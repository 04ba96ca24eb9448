"""Helpers for the capture tests (a module, not conftest, so test files can import them by a unique name)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SIZE = (160, 120)


def level(i: int) -> int:
    """The grey level that marks frame i (a patch in the top-left corner survives JPEG compression)."""
    return 10 + (i % 20) * 12


def frame_index(img: np.ndarray) -> int:
    return round((float(img[2:18, 2:30].mean()) - 10) / 12)


def corrupt_jpeg_frames(path: Path, which: tuple[int, ...]) -> None:
    """Overwrite the start of the chosen JPEG frames in an MJPG AVI so they can no longer be decoded."""
    data = bytearray(path.read_bytes())
    starts = [i for i in range(len(data) - 2) if data[i : i + 3] == b"\xff\xd8\xff"]
    for k in which:
        data[starts[k] : starts[k] + 300] = bytes(300)
    path.write_bytes(bytes(data))

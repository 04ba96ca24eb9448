"""Shared fixtures. Tests that need the real data sets use ``shared_data`` and skip, saying why, without it."""

from __future__ import annotations

import os
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

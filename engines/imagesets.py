"""Image folders for checks and calibration: class folders (``DIR/<class>/*.jpg``) or a flat folder.

Export checks, INT8 calibration and benchmarks read real images through these helpers and the shared
:mod:`engines.preprocess`, so they see exactly what the runtime sees.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from engines.errors import UserError
from engines.meta import ModelMeta
from engines.preprocess import preprocess

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


@dataclass
class ImageSet:
    """Image paths with their class name when known (class folders), else ``None``."""

    paths: list[Path]
    labels: list[str | None]
    source: str

    def __len__(self) -> int:
        return len(self.paths)


def label_of(path: Path, classes: Sequence[str]) -> str | None:
    """Class of an image file: its folder (``cls/img.jpg``) or its name prefix (``cls_12.jpg``), else None."""
    if path.parent.name in classes:
        return path.parent.name
    prefixed = [c for c in classes if path.stem.startswith(c)]
    return max(prefixed, key=len) if prefixed else None


def list_images(folder: str | Path) -> list[Path]:
    """Every image file under ``folder`` (recursive), sorted so runs are repeatable."""
    d = Path(folder)
    if not d.is_dir():
        raise UserError(f"{d}: image folder not found; give a folder of images (or class folders)")
    return sorted(p for p in d.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def folder_images(folder: str | Path, classes: Sequence[str] = (), limit: int | None = None, seed: int = 0) -> ImageSet:
    """Images of a folder, labelled by :func:`label_of` when their folder or name prefix is a class.

    With ``limit``, a fixed-seed sample keeps both classes represented instead of the first N of one.
    """
    paths = list_images(folder)
    if not paths:
        raise UserError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
    if limit is not None and len(paths) > limit:
        idx = np.random.default_rng(seed).choice(len(paths), size=limit, replace=False)
        paths = [paths[i] for i in sorted(idx)]
    labels = [label_of(p, classes) for p in paths]
    return ImageSet(paths, labels, str(folder))


def read_image(path: str | Path) -> np.ndarray:
    """An OpenCV BGR image; an unreadable file is a :class:`UserError` naming it."""
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise UserError(f"{path}: not a readable image")
    if img.dtype != np.uint8:
        img = cv2.convertScaleAbs(img, alpha=255.0 / max(float(img.max()), 1.0))
    return img


def preprocessed_batches(paths: Sequence[Path], meta: ModelMeta, batch_size: int) -> Iterator[np.ndarray]:
    """Float32 NCHW batches (the last one may be short) through the shared preprocessing."""
    for i in range(0, len(paths), batch_size):
        yield preprocess([read_image(p) for p in paths[i : i + batch_size]], meta)


def synthetic_batch(meta: ModelMeta, n: int, seed: int = 0) -> np.ndarray:
    """Random preprocessed images, for checks when no real images are at hand (said so in the output)."""
    rng = np.random.default_rng(seed)
    shape = (meta.input_size, meta.input_size, 3)
    return preprocess([rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(n)], meta)

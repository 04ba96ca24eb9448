"""Augmentation: deterministic under a seed, identity when switched off, framing jitter within its bounds."""

from __future__ import annotations

import numpy as np

from training.augment import augment_batch


def _disc_batch(n: int = 8, s: int = 64) -> np.ndarray:
    yy, xx = np.mgrid[0:s, 0:s]
    disc = ((xx - s / 2 + 0.5) ** 2 + (yy - s / 2 + 0.5) ** 2 <= (s / 4) ** 2).astype(np.uint8) * 200 + 20
    return np.repeat(disc[None, :, :, None], n, axis=0)


def _centroid(img: np.ndarray) -> tuple[float, float, float]:
    mask = img[:, :, 0] > 110
    ys, xs = np.nonzero(mask)
    return float(xs.mean()), float(ys.mean()), float(mask.sum())


def test_same_seed_same_batch_other_seed_other_batch() -> None:
    x = _disc_batch()
    a = augment_batch(x, np.random.default_rng(3))
    b = augment_batch(x, np.random.default_rng(3))
    c = augment_batch(x, np.random.default_rng(4))
    assert a.dtype == np.uint8 and a.shape == x.shape
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_everything_off_is_identity() -> None:
    x = _disc_batch()
    y = augment_batch(
        x, np.random.default_rng(0), rotate_deg=0, flips=False, brightness=0, contrast=0, scale=0, shift=0
    )
    assert np.array_equal(x, y)


def test_framing_jitter_moves_and_zooms_within_bounds() -> None:
    s = 64
    x = _disc_batch(64, s)
    _, _, area0 = _centroid(x[0])
    y = augment_batch(
        x, np.random.default_rng(1), rotate_deg=0, flips=False, brightness=0, contrast=0, scale=0.1, shift=0.05
    )
    cents = np.array([_centroid(img) for img in y])
    off = np.abs(cents[:, :2] - (s / 2 - 0.5))
    ratio = cents[:, 2] / area0
    assert off.max() <= 0.05 * s + 1.0, off.max()  # shifted by at most 5% of the side (+ rounding)
    assert off.max() > 0.02 * s  # and really shifted
    assert 0.78 <= ratio.min() and ratio.max() <= 1.24, (ratio.min(), ratio.max())  # area ~ (1 +- 0.1)^2
    assert ratio.max() - ratio.min() > 0.15  # and really zoomed

"""Training augmentation on uint8 model images (after :func:`engines.preprocess.to_model_image`, before
:func:`engines.preprocess.normalize`), so augmented and real inputs go through the same preprocessing."""

from __future__ import annotations

import cv2
import numpy as np


def augment_batch(
    images: np.ndarray,
    rng: np.random.Generator,
    rotate_deg: float = 180.0,
    flips: bool = True,
    brightness: float = 0.12,
    contrast: float = 0.15,
    scale: float = 0.1,
    shift: float = 0.05,
) -> np.ndarray:
    """Random rotation, scale and shift, flips and brightness/contrast per image of a (N, S, S, C) uint8 batch.

    ``scale`` and ``shift`` (fractions of the side) jitter the framing: on the line the crop around a part is a
    few pixels larger or smaller and off-centre from frame to frame, and a model that only saw the photos' own
    framing changes its verdict with them.
    """
    out = np.empty_like(images)
    n, s = images.shape[0], images.shape[1]
    centre = ((s - 1) / 2.0, (s - 1) / 2.0)
    for i in range(n):
        img = images[i]
        angle = float(rng.uniform(-rotate_deg, rotate_deg)) if rotate_deg > 0 else 0.0
        zoom = 1.0 + float(rng.uniform(-scale, scale)) if scale > 0 else 1.0
        m = cv2.getRotationMatrix2D(centre, angle, zoom)
        if shift > 0:
            m[:, 2] += rng.uniform(-shift, shift, 2) * s
        if angle or zoom != 1.0 or shift > 0:
            img = cv2.warpAffine(img, m, (s, s), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
            if img.ndim == 2:
                img = img[:, :, None]
        if flips:
            if rng.random() < 0.5:
                img = img[:, ::-1]
            if rng.random() < 0.5:
                img = img[::-1, :]
        a = 1.0 + float(rng.uniform(-contrast, contrast))
        b = 255.0 * float(rng.uniform(-brightness, brightness))
        mean = float(img.mean())
        out[i] = np.clip((img.astype(np.float32) - mean) * a + mean + b, 0, 255).astype(np.uint8)
    return out

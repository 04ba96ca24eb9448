"""Anomaly maps as pictures: one colour scale for the overlay, the defect log and evaluation grids.

The map's values are scores in [0, 1] on the same scale as the image score (a part is a defect when its largest
value reaches the model's threshold), so the colour means the same on every part: blue is like the good parts,
red is far past them (JET colour map, 0 -> blue, 1 -> red). numpy + OpenCV only.
"""

from __future__ import annotations

import cv2
import numpy as np

KEEP_SIDE = 56  # side a part keeps its map at: 12.5 KB instead of 200 KB at 224 px (the map is 28x28 patches)


def compact(amap: np.ndarray, side: int = KEEP_SIDE) -> np.ndarray:
    """A map small enough to keep with every recent part (the overlay's and the log's copy): (side, side) float32."""
    a = np.asarray(amap, dtype=np.float32).squeeze()
    if a.shape[0] <= side and a.shape[1] <= side:
        return np.ascontiguousarray(a)
    return cv2.resize(a, (side, side), interpolation=cv2.INTER_AREA)


def heatmap(amap: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
    """(H, W) or (1, H, W) scores in [0, 1] -> BGR uint8 (JET), resized to ``size`` (width, height)."""
    a = np.asarray(amap, dtype=np.float32).squeeze()
    if a.ndim != 2:
        raise ValueError(f"anomaly map: expected (H, W) or (1, H, W), got shape {np.shape(amap)}")
    u8 = np.clip(np.nan_to_num(a, nan=1.0) * 255.0, 0, 255).astype(np.uint8)
    img = cv2.applyColorMap(u8, cv2.COLORMAP_JET)
    if size is not None and (img.shape[1], img.shape[0]) != tuple(size):
        img = cv2.resize(img, tuple(size), interpolation=cv2.INTER_LINEAR)
    return img


def overlay_heatmap(image: np.ndarray, amap: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The heat map blended over ``image`` (BGR or gray uint8), at the image's size."""
    base = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image[:, :, :3]
    heat = heatmap(amap, (base.shape[1], base.shape[0]))
    return cv2.addWeighted(np.ascontiguousarray(base), 1.0 - alpha, heat, alpha, 0.0)

"""THE preprocessing definition: training, evaluation and the runtime all call these functions.

Input images are OpenCV arrays: BGR uint8 (H, W, 3) or grayscale uint8 (H, W). The model input is
float32 NCHW, ``input_size`` square (stretched, or letterboxed with the aspect ratio kept: ``meta.fit``), in
the model's colour (1 = gray, 3 = RGB; a gray image feeding a 3-channel model is replicated), scaled to [0, 1]
and normalised with the metadata's mean/std. A long crop can be cut into tiles (``meta.tile_aspect``), each
scored; the crop's score is the max over its tiles. Accuracy gaps between training and the device
are most often a mismatch here, so there is no second copy of this anywhere.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import cv2
import numpy as np

from engines.meta import ModelMeta

if TYPE_CHECKING:
    from engines.base import Engine

MAX_TILES = 8
PAD = 128  # letterbox fill: mid-gray, a constant so training and the line pad alike


def _colour(image: np.ndarray, meta: ModelMeta) -> np.ndarray:
    """OpenCV image -> the model's colour: gray (H, W) or RGB (H, W, 3); gray feeds 3 channels replicated."""
    if image.ndim == 2:
        image = image[:, :, None]
    if image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if meta.channels == 1:
        return image[:, :, 0] if image.shape[2] == 1 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB) if image.shape[2] == 1 else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def tile_boxes(height: int, width: int, tile_aspect: float) -> list[tuple[int, int, int, int]]:
    """Windows (x, y, w, h) a crop is cut into: the whole crop, or short x short squares along its long side.

    Tiles only when ``tile_aspect`` is set and the crop's long/short ratio reaches it; then ceil(ratio) evenly
    spaced windows that overlap where the ratio is not whole, so a small defect is seen at full resolution
    instead of being squeezed with the whole long surface into one input.
    """
    short, long_ = min(height, width), max(height, width)
    if not tile_aspect or short < 1 or long_ / short < tile_aspect:
        return [(0, 0, width, height)]
    n = min(MAX_TILES, math.ceil(long_ / short - 1e-6))
    starts = np.linspace(0, long_ - short, n).round().astype(int).tolist()
    if width >= height:
        return [(s, 0, short, short) for s in starts]
    return [(0, s, short, short) for s in starts]


def _fit(img: np.ndarray, meta: ModelMeta) -> np.ndarray:
    """Resize one window to the square input: stretched, or letterboxed (aspect kept, padded mid-gray)."""
    size = meta.input_size
    h, w = img.shape[:2]
    if meta.fit == "letterbox" and h != w:
        scale = size / max(h, w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        small = cv2.resize(img, (nw, nh), interpolation=interp) if (nh, nw) != (h, w) else img
        top, left = (size - nh) // 2, (size - nw) // 2
        return cv2.copyMakeBorder(
            small,
            top,
            size - nh - top,
            left,
            size - nw - left,
            cv2.BORDER_CONSTANT,
            value=PAD if img.ndim == 2 else (PAD, PAD, PAD),
        )
    if h != size or w != size:
        interp = cv2.INTER_AREA if h > size else cv2.INTER_LINEAR
        return cv2.resize(img, (size, size), interpolation=interp)
    return img


def model_views(image: np.ndarray, meta: ModelMeta) -> list[np.ndarray]:
    """One crop -> its model views, uint8 (S, S, C) each: one, or one per tile (:func:`tile_boxes`)."""
    out = _colour(image, meta)
    views = []
    for x, y, w, h in tile_boxes(out.shape[0], out.shape[1], meta.tile_aspect):
        v = _fit(out[y : y + h, x : x + w], meta)
        views.append(np.ascontiguousarray(v[:, :, None] if v.ndim == 2 else v))
    return views


def to_model_image(image: np.ndarray, meta: ModelMeta) -> np.ndarray:
    """Colour conversion and fit of the whole crop: uint8 (S, S, C) in the model's colour order (no tiles).

    Augmentation works on this; a tiled model's views come from :func:`model_views`.
    """
    v = _fit(_colour(image, meta), meta)
    return np.ascontiguousarray(v[:, :, None] if v.ndim == 2 else v)


def combine_views(probs: np.ndarray, counts: Sequence[int], meta: ModelMeta) -> np.ndarray:
    """Per-view model outputs -> one row per crop: the view with the highest defect score speaks for the crop.

    A part is as defective as its worst tile (max over tiles); without an OK class the views are averaged.
    """
    probs = np.asarray(probs, dtype=np.float32)
    if len(counts) == len(probs):
        return probs
    rows, a = [], 0
    for n in counts:
        block = probs[a : a + n]
        a += n
        if meta.ok_class is None:
            rows.append(block.mean(axis=0))
        else:
            rows.append(block[int(np.argmax(meta.defect_scores(block)))])
    return np.stack(rows) if rows else np.zeros((0, meta.num_outputs), np.float32)


def normalize(model_images: np.ndarray, meta: ModelMeta) -> np.ndarray:
    """uint8 (N, S, S, C) or (S, S, C) from :func:`to_model_image` -> float32 NCHW (or CHW), normalised."""
    x = model_images.astype(np.float32) * (1.0 / 255.0)
    x -= np.asarray(meta.mean, dtype=np.float32)
    x /= np.asarray(meta.std, dtype=np.float32)
    if x.ndim == 3:
        return np.ascontiguousarray(x.transpose(2, 0, 1))
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def preprocess(images: Sequence[np.ndarray], meta: ModelMeta) -> np.ndarray:
    """A batch of OpenCV images -> the float32 NCHW batch every backend takes (one row per image, no tiles)."""
    if len(images) == 0:
        return np.zeros((0, meta.channels, meta.input_size, meta.input_size), dtype=np.float32)
    return normalize(np.stack([to_model_image(im, meta) for im in images]), meta)


def preprocess_views(images: Sequence[np.ndarray], meta: ModelMeta) -> tuple[np.ndarray, list[int]]:
    """Crops -> (float32 NCHW batch of every view, views per crop); :func:`combine_views` folds the outputs."""
    views = [model_views(im, meta) for im in images]
    counts = [len(v) for v in views]
    if not views:
        return np.zeros((0, meta.channels, meta.input_size, meta.input_size), dtype=np.float32), counts
    return normalize(np.stack([v for vs in views for v in vs]), meta), counts


def infer_crops(engine: Engine, images: Sequence[np.ndarray]) -> np.ndarray:
    """Crops -> one output row per crop through ``engine`` (tiles scored and folded by :func:`combine_views`)."""
    batch, counts = preprocess_views(images, engine.meta)
    return combine_views(engine.infer(batch), counts, engine.meta)

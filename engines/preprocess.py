"""THE preprocessing definition: training, evaluation and the runtime all call these functions.

Input images are OpenCV arrays: BGR uint8 (H, W, 3) or grayscale uint8 (H, W). The model input is
float32 NCHW, resized to ``input_size`` square with INTER_AREA, in the model's colour (1 = gray, 3 = RGB),
scaled to [0, 1] and normalised with the metadata's mean/std. Accuracy gaps between training and the device
are most often a mismatch here, so there is no second copy of this anywhere.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from engines.meta import ModelMeta


def to_model_image(image: np.ndarray, meta: ModelMeta) -> np.ndarray:
    """Colour conversion and resize: uint8 (S, S, C) in the model's colour order. Augmentation works on this."""
    if image.ndim == 2:
        image = image[:, :, None]
    if image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if meta.channels == 1:
        gray = image[:, :, 0] if image.shape[2] == 1 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        out = gray
    else:
        out = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB) if image.shape[2] == 1 else cv2.cvtColor(
            image, cv2.COLOR_BGR2RGB
        )
    size = meta.input_size
    if out.shape[0] != size or out.shape[1] != size:
        interp = cv2.INTER_AREA if out.shape[0] > size else cv2.INTER_LINEAR
        out = cv2.resize(out, (size, size), interpolation=interp)
    if out.ndim == 2:
        out = out[:, :, None]
    return np.ascontiguousarray(out)


def normalize(model_images: np.ndarray, meta: ModelMeta) -> np.ndarray:
    """uint8 (N, S, S, C) or (S, S, C) from :func:`to_model_image` -> float32 NCHW (or CHW), normalised."""
    x = model_images.astype(np.float32) * (1.0 / 255.0)
    x -= np.asarray(meta.mean, dtype=np.float32)
    x /= np.asarray(meta.std, dtype=np.float32)
    if x.ndim == 3:
        return np.ascontiguousarray(x.transpose(2, 0, 1))
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def preprocess(images: Sequence[np.ndarray], meta: ModelMeta) -> np.ndarray:
    """A batch of OpenCV images -> the float32 NCHW batch every backend takes."""
    if len(images) == 0:
        return np.zeros((0, meta.channels, meta.input_size, meta.input_size), dtype=np.float32)
    return normalize(np.stack([to_model_image(im, meta) for im in images]), meta)

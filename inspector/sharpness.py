"""A cheap focus/motion-blur figure for each judged crop, so a part the model cannot see clearly is rejected.

The figure is the variance of the Laplacian of the gray crop at the model's input size (the image
:func:`engines.preprocess.to_model_image` makes), so it measures what the model sees and does not depend on the
part's size in pixels. Sharp casting crops score in the hundreds, motion-blurred ones far lower; see
docs/BENCHMARKS.md (Runtime (replay)) for the measured distributions behind a ``model.min_sharpness``.
"""

from __future__ import annotations

import cv2
import numpy as np


def sharpness(model_image: np.ndarray) -> float:
    """Variance of the 3x3 Laplacian of a uint8 image, (S, S), (S, S, 1) or RGB (S, S, 3)."""
    img = np.asarray(model_image)
    if img.ndim == 3:
        img = img[:, :, 0] if img.shape[2] == 1 else cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    if img.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {img.dtype}")
    lap = cv2.Laplacian(img, cv2.CV_32F, ksize=1)
    return float(lap.var())


def blurred_reason(value: float, minimum: float) -> str:
    return f"blurred: sharpness {value:.1f} < min {minimum:g}"

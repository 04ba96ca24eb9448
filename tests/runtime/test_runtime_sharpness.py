"""The sharpness figure behind `model.min_sharpness`: a sharp crop scores high, the same crop blurred low, and
the figure is taken at the model's input size so a part's pixel size does not move it."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from engines.meta import ModelMeta
from engines.preprocess import to_model_image
from inspector.config import ModelConfig
from inspector.sharpness import blurred_reason, sharpness


def _pitted_part(size: int, rng: np.random.Generator) -> np.ndarray:
    """A grey disc with small dark pits, the kind of detail motion blur hides, as a BGR crop."""
    img = np.full((size, size, 3), 120, np.uint8)
    cv2.circle(img, (size // 2, size // 2), int(size * 0.42), (190, 190, 190), -1)
    for _ in range(25):
        x, y = (int(v) for v in rng.integers(size // 4, 3 * size // 4, 2))
        cv2.circle(img, (x, y), max(1, size // 60), (60, 60, 60), -1)
    return img


def _motion_blur(img: np.ndarray, length: int) -> np.ndarray:
    k = np.zeros((length, length), np.float32)
    k[length // 2, :] = 1.0 / length
    return cv2.filter2D(img, -1, k)


@pytest.fixture
def meta() -> ModelMeta:
    return ModelMeta("seedcnn", ["def_front", "ok_front"], "ok_front", 128, 1, [0.5], [0.25])


def test_sharp_crop_scores_far_above_its_motion_blurred_copy(meta: ModelMeta) -> None:
    crop = _pitted_part(300, np.random.default_rng(1))
    sharp = sharpness(to_model_image(crop, meta))
    blurred = sharpness(to_model_image(_motion_blur(crop, 25), meta))
    assert sharp > 4 * blurred, (sharp, blurred)
    assert sharpness(to_model_image(np.full((300, 300, 3), 150, np.uint8), meta)) == 0.0  # flat: nothing to see


def test_figure_is_taken_at_the_model_input_size(meta: ModelMeta) -> None:
    """The same part at 150, 300 or 512 px: within a factor 2 once resized for the model, while the native-size
    figure spans more than 5x (so a threshold on it would depend on the camera's distance)."""
    big = _pitted_part(300, np.random.default_rng(2))
    views = [cv2.resize(big, (s, s), interpolation=cv2.INTER_AREA if s < 300 else cv2.INTER_CUBIC) for s in (150, 512)]
    views.insert(1, big)
    at_model = [sharpness(to_model_image(v, meta)) for v in views]
    native = [sharpness(cv2.cvtColor(v, cv2.COLOR_BGR2GRAY)) for v in views]
    assert max(at_model) < 2 * min(at_model), at_model
    assert max(native) > 5 * min(native), native


@pytest.mark.parametrize(
    ("image", "error"),
    [
        (np.zeros((8, 8), np.uint8), None),
        (np.zeros((8, 8, 1), np.uint8), None),
        (np.zeros((8, 8, 3), np.uint8), None),  # RGB, the colour models' view
        (np.zeros((8, 8), np.float32), "expected a uint8 image, got float32"),
    ],
)
def test_accepted_views(image: np.ndarray, error: str | None) -> None:
    if error is None:
        assert sharpness(image) == 0.0
    else:
        with pytest.raises(ValueError, match=error):
            sharpness(image)


def test_reason_and_config() -> None:
    assert blurred_reason(12.34, 40.0) == "blurred: sharpness 12.3 < min 40"
    assert ModelConfig().min_sharpness is None  # off by default
    with pytest.raises(ValueError, match="greater than or equal to 0"):
        ModelConfig(min_sharpness=-1)

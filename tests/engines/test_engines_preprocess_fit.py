"""Letterbox and tiles: training's decoded views, `inspector evaluate` and the runtime's batch are the same
arrays, because all of them go through engines.preprocess (one definition)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from engines.meta import ModelMeta
from engines.preprocess import PAD, combine_views, model_views, normalize, preprocess_views, tile_boxes
from training.data import index_dataset, load_images, read_image


def _meta(fit="letterbox", tile_aspect=0.0, channels=3, size=64) -> ModelMeta:
    return ModelMeta(
        "seedcnn",
        ["defect", "ok"],
        "ok",
        size,
        channels,
        [0.5] * channels,
        [0.25] * channels,
        fit=fit,
        tile_aspect=tile_aspect,
    )


def test_letterbox_keeps_the_aspect_ratio_and_pads_mid_gray():
    img = np.zeros((50, 200, 3), np.uint8)  # a long dark strip with a bright 10 px spot
    img[20:30, 100:110] = 255
    (v,) = model_views(img, _meta())
    assert v.shape == (64, 64, 3)
    # 200 -> 64 wide, 50 -> 16 high: centred rows 24..40, the rest padding
    assert (v[:24] == PAD).all() and (v[40:] == PAD).all() and not (v[24:40] == PAD).all()
    (s,) = model_views(img, _meta(fit="stretch"))
    assert not (s[:24] == PAD).all()  # stretch fills the square


@pytest.mark.parametrize(
    ("h", "w", "aspect", "n"),
    [
        (50, 200, 2.0, 4),
        (50, 125, 2.0, 3),
        (50, 90, 2.0, 1),
        (300, 100, 2.0, 3),
        (100, 100, 0.0, 1),
        (500, 1250, 2.0, 3),
    ],
)
def test_tile_boxes_cover_the_long_side(h, w, aspect, n):
    boxes = tile_boxes(h, w, aspect)
    assert len(boxes) == n
    if n > 1:
        short = min(h, w)
        assert all(bw == bh == short for _, _, bw, bh in boxes)
        ends = [x + bw for x, _, bw, _ in boxes] if w > h else [y + bh for _, y, _, bh in boxes]
        assert boxes[0][:2] == (0, 0) and max(ends) == max(h, w)  # first and last windows touch the ends


def test_a_small_defect_keeps_its_pixels_in_a_tile_and_the_part_scores_its_worst_tile():
    img = np.full((100, 500), 90, np.uint8)
    img[41:45, 442:446] = 250  # a 4 px defect near one end of a 5:1 surface
    meta = _meta(tile_aspect=2.0, channels=1, size=100)
    views = model_views(img, meta)
    assert len(views) == 5 and all(v.shape == (100, 100, 1) for v in views)
    assert max(int(v.max()) for v in views) == 250  # seen at full resolution, not averaged away
    squeezed = model_views(img, _meta(channels=1, size=100))[0]
    assert int(squeezed.max()) < 250
    probs = np.array([[0.1], [0.2], [0.05], [0.3], [0.9], [0.4]], np.float32)  # 5 tiles + 1 one-view crop
    assert combine_views(probs, [5, 1], meta).ravel().tolist() == pytest.approx([0.9, 0.4])


def test_training_views_equal_runtime_views(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("ok", "defect"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            h, w = (60, 150) if i % 2 else (80, 80)  # a long one (tiled) and a square one
            cv2.imwrite(str(tmp_path / cls / f"{i}.png"), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    index = index_dataset(tmp_path)
    data = load_images(index, 48, channels=3, fit="letterbox", tile_aspect=2.0)
    meta = _meta(tile_aspect=2.0, size=48)
    assert data.tiled and len(data.images) > len(data.items)
    for k, it in enumerate(data.items):
        runtime = model_views(read_image(it.path), meta)
        x, counts, _ = data.views(np.array([k]))
        assert counts == [len(runtime)] and np.array_equal(x, np.stack(runtime))
    batch, counts = preprocess_views([read_image(it.path) for it in data.items], meta)
    assert np.array_equal(batch, normalize(data.images, meta)) and sum(counts) == len(data.images)


def test_gray_feeds_three_channels_replicated():
    g = np.random.default_rng(1).integers(0, 255, (40, 40), dtype=np.uint8)
    (v,) = model_views(g, _meta(size=40))
    assert v.shape == (40, 40, 3) and (v[:, :, 0] == g).all() and (v[:, :, 2] == g).all()


def test_old_metadata_without_fit_or_tiles_still_loads():
    d = _meta().to_dict()
    del d["fit"], d["tile_aspect"]
    m = ModelMeta.from_dict(d)
    assert m.fit == "stretch" and m.tile_aspect == 0.0

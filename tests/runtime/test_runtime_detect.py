"""Part segmentation: each method on drawn frames, area limits, the ROI and its edges."""

from __future__ import annotations

import numpy as np
import pytest

from engines.errors import UserError
from inspector.config import DetectionConfig, RoiConfig
from inspector.detect import Detector, Roi, segment_scale


def frame(bg=(40, 40, 40), size=(320, 240), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.empty((size[1], size[0], 3), np.uint8)
    img[:] = bg
    noise = rng.integers(-6, 7, img.shape)
    return np.clip(img.astype(int) + noise, 0, 255).astype(np.uint8)


def box(img, x, y, w, h, color):
    img[y : y + h, x : x + w] = color
    return img


def detect(img, roi=None, **det):
    cfg = DetectionConfig(**{"min_area": 300, **det})
    roi = roi or Roi(0, 0, img.shape[1], img.shape[0])
    return Detector(cfg, roi).detect(img)


@pytest.mark.parametrize("threshold", [100, "otsu"])
@pytest.mark.parametrize("downscale", [1, 2, 4])
def test_threshold_finds_bright_parts_with_their_boxes_and_centres(threshold, downscale):
    img = box(box(frame(), 40, 60, 50, 40, (200, 200, 200)), 180, 120, 60, 60, (220, 220, 220))
    dets = sorted(detect(img, threshold=threshold, downscale=downscale), key=lambda d: d.bbox[0])
    assert len(dets) == 2
    tol = downscale
    for d, (x, y, w, h) in zip(dets, [(40, 60, 50, 40), (180, 120, 60, 60)], strict=True):
        assert np.allclose(d.bbox, (x, y, w, h), atol=tol), d.bbox
        assert abs(d.centroid[0] - (x + (w - 1) / 2)) <= tol / 2 + 0.5
        assert abs(d.centroid[1] - (y + (h - 1) / 2)) <= tol / 2 + 0.5
        assert abs(d.area - w * h) <= 0.1 * w * h
        assert not d.clipped


def test_invert_finds_dark_parts_on_a_bright_belt():
    img = box(frame(bg=(200, 200, 200)), 100, 80, 50, 50, (30, 30, 30))
    assert detect(img, threshold="otsu") != [] and len(detect(img, threshold="otsu")) == 1
    dets = detect(img, threshold="otsu", invert=True)
    assert len(dets) == 1 and np.allclose(dets[0].bbox, (100, 80, 50, 50), atol=2)


def test_area_limits_drop_specks_and_oversized_blobs():
    img = box(box(box(frame(), 10, 10, 8, 8, (220,) * 3), 60, 60, 40, 40, (220,) * 3), 150, 20, 150, 200, (220,) * 3)
    dets = detect(img, threshold=100, min_area=400, max_area=5000, downscale=1)
    assert [d.bbox for d in dets] == [(60, 60, 40, 40)]


def test_part_touching_the_roi_edge_is_flagged_clipped():
    img = box(box(frame(), 0, 50, 40, 40, (220,) * 3), 150, 100, 40, 40, (220,) * 3)
    dets = sorted(detect(img, threshold=100), key=lambda d: d.bbox[0])
    assert [d.clipped for d in dets] == [True, False]


def test_only_the_roi_is_searched_and_coordinates_are_full_frame():
    img = box(box(frame(), 10, 10, 40, 40, (220,) * 3), 200, 150, 40, 40, (220,) * 3)
    dets = detect(img, roi=Roi(100, 100, 200, 120), threshold=100, downscale=1)
    assert len(dets) == 1 and dets[0].bbox == (200, 150, 40, 40)
    assert dets[0].centroid == pytest.approx((219.5, 169.5), abs=0.6)


def test_part_with_a_hole_is_one_part():
    img = box(box(frame(), 100, 60, 80, 80, (220,) * 3), 125, 85, 30, 30, (40,) * 3)  # a casting's bore
    dets = detect(img, threshold=100)
    assert len(dets) == 1 and np.allclose(dets[0].bbox, (100, 60, 80, 80), atol=2)


def test_background_method_finds_parts_a_threshold_cannot_and_keeps_a_stopped_one():
    rng = np.random.default_rng(1)
    belt = frame()
    for x, y in ((20, 20), (240, 20), (20, 170), (240, 170)):  # bright marks printed on the belt
        box(belt, x, y, 30, 30, (230, 230, 230))
    cfg = DetectionConfig(method="background", threshold=40, min_area=300, background_frames=5, morph=3)
    det = Detector(cfg, Roi(0, 0, 320, 240))
    for _ in range(5):
        assert det.detect(np.clip(belt.astype(int) + rng.integers(-3, 4, belt.shape), 0, 255).astype(np.uint8)) == []
    assert det.ready
    part = box(belt.copy(), 120, 80, 50, 50, (140, 140, 140))
    for _ in range(200):  # a part that stops stays a part: the background learns only the belt pixels
        dets = det.detect(part)
        assert len(dets) == 1 and np.allclose(dets[0].bbox, (120, 80, 50, 50), atol=4)
    assert len(detect(part, threshold=100)) == 5  # a brightness threshold takes the marks for parts


@pytest.mark.parametrize("downscale", [1, 2, 4])
def test_color_method_separates_parts_of_the_belts_brightness(downscale):
    belt_bgr = (60, 160, 60)  # green belt
    part_bgr = (60, 160, 220)  # same green, plus red: different colour, similar brightness
    img = box(frame(bg=belt_bgr), 120, 80, 50, 50, part_bgr)
    dets = detect(img, method="color", color_distance=60, belt_color=list(belt_bgr), downscale=downscale)
    assert len(dets) == 1 and np.allclose(dets[0].bbox, (120, 80, 50, 50), atol=max(2, downscale))
    learned = detect(img, method="color", color_distance=60)  # belt colour learned from the frame
    assert len(learned) == 1


def test_color_method_needs_a_colour_source():
    with pytest.raises(UserError, match="colour source"):
        detect(frame()[:, :, 0], method="color")


def test_roi_geometry_for_every_direction():
    r = Roi(100, 50, 400, 200, "right", 0.25)
    assert r.trigger_px == 100 and r.along(200, 0) == 100
    assert Roi(100, 50, 400, 200, "left", 0.25).along(400, 0) == 100
    assert Roi(100, 50, 400, 200, "down", 0.5).along(0, 150) == 100
    assert Roi(100, 50, 400, 200, "up", 0.5).along(0, 150) == 100
    assert Roi(100, 50, 400, 200, "up", 0.5).trigger_segment() == ((100, 150), (499, 150))


def test_roi_from_config_is_clipped_and_refused_outside_the_frame():
    r = Roi.from_config(RoiConfig(x=10, y=20, width=1000, height=None), (640, 480))
    assert (r.x, r.y, r.w, r.h) == (10, 20, 630, 460)
    with pytest.raises(UserError, match="roi"):
        Roi.from_config(RoiConfig(x=700, y=0), (640, 480))


@pytest.mark.parametrize("min_area, scale", [(400, 1), (1024, 2), (3000, 2), (4096, 4), (20000, 4)])
def test_auto_downscale_keeps_the_smallest_part_16_px_across(min_area, scale):
    assert segment_scale(DetectionConfig(min_area=min_area)) == scale
    assert segment_scale(DetectionConfig(min_area=min_area, downscale=1)) == 1


def test_color_distance_is_euclidean():
    belt = (100, 100, 100)
    # (30, 30, 30) is 52 from the belt (under 60); (0, 0, 65) is 65 (over 60): an L1 or max-norm test would swap them
    img = box(box(frame(bg=belt), 40, 60, 50, 50, (130, 130, 130)), 200, 60, 50, 50, (100, 100, 165))
    dets = detect(img, method="color", color_distance=60, belt_color=list(belt), blur=0, downscale=1)
    assert [d.bbox[0] for d in dets] == [200]


def test_otsu_finds_nothing_on_an_empty_belt():
    empty = frame(seed=3)
    assert detect(empty, threshold="otsu", blur=0, morph=0, min_area=50, downscale=1) == []
    with_part = box(frame(seed=3), 100, 80, 60, 60, (90, 90, 90))  # 50 grey levels above the belt
    assert len(detect(with_part, threshold="otsu", min_area=50)) == 1
    # contrast demanded is configurable: a faint part is dropped when it asks for more
    assert detect(with_part, threshold="otsu", min_area=50, otsu_min_contrast=80) == []

"""Part segmentation: each method on drawn frames, area limits, the ROI and its edges."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from engines.errors import UserError
from inspector.config import DetectionConfig, RoiConfig, load_config
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


def test_roi_from_config_fills_to_the_edge_and_is_refused_outside_the_frame():
    r = Roi.from_config(RoiConfig(x=10, y=20, width=None, height=None), (640, 480))  # None: to the frame's edge
    assert (r.x, r.y, r.w, r.h) == (10, 20, 630, 460)
    # issue 13: a width reaching outside the frame was clipped to 630, which moved the trigger line; refused now
    with pytest.raises(UserError, match="reaches outside the 640x480 frame"):
        Roi.from_config(RoiConfig(x=10, y=20, width=1000, height=None), (640, 480))
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


# --- method 'hue' ---------------------------------------------------------------------------------------
BLUE_CAP = (200, 80, 10)  # BGR; OpenCV HSV (109, 242, 200)


def hue(img, lower, upper, **det):
    return detect(img, method="hue", hsv_lower=lower, hsv_upper=upper, **det)


@pytest.mark.parametrize("downscale", [1, 2, 4])
def test_hue_method_finds_parts_by_their_own_colour(downscale):
    img = frame(bg=(120, 120, 120))
    box(img, 30, 40, 50, 50, BLUE_CAP)
    box(img, 110, 40, 50, 50, (20, 20, 200))  # red
    box(img, 190, 40, 50, 50, (235, 235, 235))  # white: brighter than anything, no hue
    box(img, 30, 140, 50, 50, (200, 170, 150))  # pale blue: the right hue, saturation 64
    box(img, 200, 140, 60, 60, (120, 40, 0))  # dark blue: HSV (110, 255, 120)
    dets = sorted(hue(img, [100, 150, 60], [125, 255, 255], downscale=downscale), key=lambda d: d.bbox[1])
    tol = max(2, downscale)
    assert len(dets) == 2, [d.bbox for d in dets]
    assert np.allclose(dets[0].bbox, (30, 40, 50, 50), atol=tol) and np.allclose(
        dets[1].bbox, (200, 140, 60, 60), atol=tol
    )
    assert abs(dets[0].area - 2500) <= 250
    # the value bound: a lower V of 150 drops the dark blue part
    assert [d.bbox[1] for d in hue(img, [100, 150, 150], [125, 255, 255], downscale=downscale)] == [40]


def test_hue_range_wraps_past_179_for_reds():
    img = frame(bg=(120, 120, 120))
    box(img, 30, 40, 50, 50, (60, 0, 200))  # H 171
    box(img, 130, 40, 50, 50, (0, 40, 200))  # H 6
    box(img, 230, 40, 50, 50, BLUE_CAP)
    assert sorted(d.bbox[0] for d in hue(img, [165, 120, 60], [10, 255, 255], downscale=1)) == [30, 130]
    assert [d.bbox[0] for d in hue(img, [165, 120, 60], [179, 255, 255], downscale=1)] == [30]
    assert [d.bbox[0] for d in hue(img, [0, 120, 60], [10, 255, 255], downscale=1)] == [130]


def test_hue_separates_touching_transparent_bottles_by_their_caps():
    """Touching bright bottles form one blob for brightness; their blue caps, a few px apart, are five parts."""
    img = frame(bg=(70, 70, 70), size=(400, 200))
    for i in range(5):
        box(img, 20 + 70 * i, 60, 70, 120, (215, 220, 210))  # bottle bodies, no belt between them
        box(img, 35 + 70 * i, 30, 40, 30, BLUE_CAP)  # as dark as the belt in grey
    assert len(detect(img, threshold="otsu")) == 1
    caps = sorted(hue(img, [100, 150, 60], [125, 255, 255]), key=lambda d: d.bbox[0])
    assert [d.bbox[0] for d in caps] == pytest.approx([35 + 70 * i for i in range(5)], abs=2)
    assert all(np.allclose(d.bbox[1:], (30, 40, 30), atol=2) for d in caps)


def test_hue_method_needs_a_colour_source():
    with pytest.raises(UserError, match="colour source"):
        hue(frame()[:, :, 0], [100, 150, 60], [125, 255, 255])


@pytest.mark.parametrize(
    "bounds, message",
    [
        ({}, "needs hsv_lower and hsv_upper"),
        ({"hsv_lower": [100, 150, 60]}, "needs hsv_lower and hsv_upper"),
        ({"hsv_lower": [100, 150], "hsv_upper": [125, 255, 255]}, r"expected \[H, S, V\]"),
        ({"hsv_lower": [180, 150, 60], "hsv_upper": [125, 255, 255]}, "H 0-179"),
        ({"hsv_lower": [100, -1, 60], "hsv_upper": [125, 255, 255]}, "S and V 0-255"),
        ({"hsv_lower": [100, 150, 60], "hsv_upper": [125, 255, 256]}, "S and V 0-255"),
        ({"hsv_lower": [100, 200, 60], "hsv_upper": [125, 150, 255]}, "higher S or V than hsv_upper"),
    ],
)
def test_hue_bounds_are_validated(bounds, message):
    with pytest.raises(ValidationError, match=message):
        DetectionConfig(method="hue", **bounds)


def test_hue_bounds_error_names_file_line_and_field(tmp_path):
    path = tmp_path / "line.yaml"
    path.write_text("detection:\n  method: hue\n  hsv_lower: [100, 150, 300]\n  hsv_upper: [125, 255, 255]\n")
    with pytest.raises(UserError) as err:
        load_config(path)
    assert f"{path}:3: field 'detection.hsv_lower'" in str(err.value) and "S and V 0-255" in str(err.value)
    path.write_text("detection:\n  method: hue\n")
    with pytest.raises(UserError, match="needs hsv_lower and hsv_upper"):
        load_config(path)


def test_hue_method_finds_each_blue_cap_on_real_bottling_frames(shared_data, root):
    """The shipped bottling clip configuration on real frames: one blob per cap, at the caps placed by eye.

    Cap centres (x) were read off the frames with the boxes drawn; the cap at the ROI's left edge is clipped.
    """
    cfg = load_config(root / "configs" / "clips" / "bottling_bottles.yaml")
    cap = cv2.VideoCapture(str(shared_data / "videos" / "bottling_line_bottles.mp4"))
    frames = {}
    for i in range(201):
        ok, img = cap.read()
        assert ok, f"bottling clip ended at frame {i}"
        frames[i] = img
    cap.release()
    by_eye = {0: [411, 454, 508], 50: [398, 439, 480], 150: [398, 438, 485], 200: [419, 464]}
    for i, xs in by_eye.items():
        det = Detector(cfg.detection, Roi.from_config(cfg.roi, (596, 336)))
        whole = sorted((d for d in det.detect(frames[i]) if not d.clipped), key=lambda d: d.centroid[0])
        assert [d.centroid[0] for d in whole] == pytest.approx(xs, abs=3), (i, [d.centroid for d in whole])
        assert all(500 <= d.area <= 1000 for d in whole), (i, [d.area for d in whole])

"""Belt speed: measured on a rendered line of known speed through the runtime's detector and tracker."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from calibration.belt import measure_belt, track_speed
from calibration.roi import make_roi, save_roi
from engines.errors import UserError
from inspector.cli import main
from inspector.simulate import render_line


@pytest.fixture(scope="module")
def part_images(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("parts")
    for name in ("ok", "defect"):
        (root / name).mkdir()
        for i in range(3):
            img = np.full((96, 96, 3), 170, np.uint8)
            cv2.circle(img, (48, 48), 38, (210, 210, 210), -1)
            cv2.circle(img, (48, 48), 24, (25, 25, 25), -1)
            if name == "defect":
                cv2.line(img, (48, 6), (58, 22), (20, 20, 20), 2)
            cv2.imwrite(str(root / name / f"{name}_{i}.png"), img)
    return root


@pytest.mark.parametrize("direction, speed", [("right", 300.0), ("up", 170.0)])
def test_belt_speed_of_a_rendered_line(part_images, tmp_path, direction, speed, capsys):
    spec = render_line(
        part_images,
        tmp_path / "line.avi",
        fps=30,
        size=(400, 300),
        speed_px_s=speed,
        parts=5,
        seed=2,
        direction=direction,
    )
    cfg = spec.config_dict()
    cfg["gate"] = {"camera_to_gate_mm": 450.0}
    (tmp_path / "line.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "belt.json"
    rc = main(
        [
            "calibrate",
            "belt",
            "--source",
            spec.video,
            "--config",
            str(tmp_path / "line.yaml"),
            "--px-per-mm",
            "1.5",
            "--json",
            str(out),
        ]
    )
    text = capsys.readouterr().out
    assert rc == 0
    m = json.loads(out.read_text())
    assert m["parts"] >= len(spec.parts) - 1  # every part, give or take one the tracker may lose
    assert m["speed_px_s"] == pytest.approx(speed, rel=0.02)
    assert m["min_px_s"] <= m["speed_px_s"] <= m["max_px_s"]
    assert m["speed_mm_s"] == pytest.approx(m["speed_px_s"] / 1.5)
    assert m["gate_delay_ms"] == pytest.approx(1000 * 450.0 / m["speed_mm_s"])
    assert m["direction"] == direction
    assert "gate delay" in text and "belt_speed_mm_s" in text


def test_px_per_mm_comes_from_the_roi_file(part_images, tmp_path):
    spec = render_line(part_images, tmp_path / "line.avi", fps=25, size=(320, 240), speed_px_s=250, parts=3, seed=4)
    roi_path = save_roi(
        make_roi(spec.size, spec.roi, spec.direction, spec.trigger, ref_px=240, ref_mm=80), tmp_path / "roi.yaml"
    )
    cfg = spec.config_dict()
    cfg["roi"] = {"file": str(roi_path)}
    (tmp_path / "line.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "belt.json"
    assert (
        main(
            [
                "calibrate",
                "belt",
                "--source",
                spec.video,
                "--config",
                str(tmp_path / "line.yaml"),
                "--camera-to-gate-mm",
                "300",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    m = json.loads(out.read_text())
    assert m["px_per_mm"] == pytest.approx(3.0)
    assert m["speed_mm_s"] == pytest.approx(250 / 3.0, rel=0.02)
    assert m["gate_delay_ms"] == pytest.approx(300 / (250 / 3.0) * 1000, rel=0.02)


def test_no_parts_is_a_clear_error(tmp_path, capsys):
    video = tmp_path / "empty.avi"
    wr = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 25, (320, 240))
    for _ in range(20):
        wr.write(np.full((240, 320, 3), 40, np.uint8))
    wr.release()
    (tmp_path / "c.yaml").write_text("detection: {threshold: 100, min_area: 200}\n")
    rc = main(["calibrate", "belt", "--source", str(video), "--config", str(tmp_path / "c.yaml")])
    err = capsys.readouterr().err
    assert rc == 1 and "no part was tracked" in err and "Traceback" not in err


def _track(
    speed: float, n: int = 12, fps: float = 30.0, axis: int = 0, sign: float = 1.0, jitter: float = 0.0, seed: int = 0
) -> list[tuple[float, float, float]]:
    rng = np.random.default_rng(seed)
    pts = []
    for i in range(n):
        t = i / fps
        pos = 50 + sign * speed * t + rng.normal(0, jitter) if jitter else 50 + sign * speed * t
        pts.append((t, pos, 120.0) if axis == 0 else (t, 120.0, pos))
    return pts


def test_spread_and_median_over_parts():
    speeds = [196.0, 200.0, 204.0, 199.0, 201.0]
    tracks = {i: _track(s) for i, s in enumerate(speeds)}
    tracks[99] = _track(500.0, n=3)  # too short to count
    m = measure_belt(tracks, "right", px_per_mm=2.0, camera_to_gate_mm=500.0)
    assert m.parts == 5
    assert m.speed_px_s == pytest.approx(np.median(speeds))
    assert m.std_px_s == pytest.approx(np.std(speeds, ddof=1))
    assert (m.min_px_s, m.max_px_s) == pytest.approx((196.0, 204.0))
    assert m.speed_mm_s == pytest.approx(100.0)
    assert m.gate_delay_ms == pytest.approx(5000.0)
    assert m.spread_pct == pytest.approx(100 * np.std(speeds, ddof=1) / 200.0)


@pytest.mark.parametrize("direction, axis, sign", [("right", 0, 1), ("left", 0, -1), ("down", 1, 1), ("up", 1, -1)])
def test_speed_along_each_direction(direction, axis, sign):
    pts = _track(150.0, n=40, axis=axis, sign=sign, jitter=1.0, seed=1)
    assert track_speed(pts, direction) == pytest.approx(150.0, rel=0.02)
    assert measure_belt({1: pts}, direction).gate_delay_ms is None  # no px/mm given


def test_parts_moving_against_the_belt_are_not_measured():
    with pytest.raises(UserError, match="moving right"):
        measure_belt({1: _track(150.0, sign=-1)}, "right")
    with pytest.raises(UserError, match="direction"):
        measure_belt({1: _track(150.0)}, "sideways")

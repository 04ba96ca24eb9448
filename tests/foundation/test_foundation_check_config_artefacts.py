"""`inspector check-config` also loads the calibration files a configuration refers to."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def check(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "inspector", "check-config", str(path)], capture_output=True, text=True, timeout=60
    )


def test_broken_roi_artefact_is_reported(tmp_path: Path) -> None:
    roi = tmp_path / "roi.yaml"
    roi.write_text("kind: roi\nnot_a_field: 1\n")
    cfg = tmp_path / "line.yaml"
    cfg.write_text("roi:\n  file: roi.yaml\n")
    res = check(cfg)
    assert res.returncode == 1, res.stdout
    assert str(roi) in res.stderr and "Traceback" not in res.stderr


def test_missing_camera_calibration_is_reported(tmp_path: Path) -> None:
    cfg = tmp_path / "line.yaml"
    cfg.write_text("calibration:\n  camera: nowhere.yaml\n")
    res = check(cfg)
    assert res.returncode == 1 and "nowhere.yaml" in res.stderr and "Traceback" not in res.stderr


def test_valid_roi_artefact_passes(tmp_path: Path) -> None:
    made = subprocess.run(
        [
            sys.executable,
            "-m",
            "inspector",
            "calibrate",
            "roi",
            "--frame-size",
            "640x480",
            "--roi",
            "10,20,600,400",
            "--trigger",
            "0.5",
            "--direction",
            "right",
            "--out",
            str(tmp_path / "roi.yaml"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    cfg = tmp_path / "line.yaml"
    cfg.write_text("roi:\n  file: roi.yaml\n")
    res = check(cfg)
    assert res.returncode == 0, res.stderr

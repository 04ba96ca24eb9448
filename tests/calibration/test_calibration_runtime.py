"""The runtime reads the calibration artefacts named in its configuration, and refuses another resolution."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from calibration.camera import Board, CameraCalibration, save_calibration
from calibration.roi import make_roi, save_roi
from engines.checkpoint import save_checkpoint
from engines.meta import ModelMeta
from inspector.cli import main
from inspector.simulate import render_line

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def line(tmp_path_factory) -> tuple[Path, object, Path]:
    """A short rendered line (320x240) and a tiny untrained model: what matters here is the geometry."""
    from engines.archs import build_network

    root = tmp_path_factory.mktemp("rt")
    for name in ("ok_front", "def_front"):
        (root / "imgs" / name).mkdir(parents=True)
        img = np.full((96, 96, 3), 170, np.uint8)
        cv2.circle(img, (48, 48), 38, (210, 210, 210), -1)
        cv2.imwrite(str(root / "imgs" / name / "a.png"), img)
    spec = render_line(root / "imgs", root / "line.avi", fps=25, size=(320, 240), speed_px_s=300, parts=3, seed=1)
    torch.manual_seed(0)
    meta = ModelMeta("seedcnn", ["def_front", "ok_front"], "ok_front", 32, 3, [0.5] * 3, [0.25] * 3)
    save_checkpoint(root / "m.pt", build_network(meta).state_dict(), meta)
    return root, spec, root / "m.pt"


def _camera(path: Path, size: tuple[int, int]) -> Path:
    w, h = size
    calib = CameraCalibration(
        frame_size=size,
        board=Board(cols=9, rows=6, square_mm=25.0),
        camera_matrix=[[400.0, 0, w / 2], [0, 400.0, h / 2], [0, 0, 1]],
        dist_coeffs=[0.0, 0.0, 0.0, 0.0, 0.0],
        rms_px=0.1,
    )
    return save_calibration(calib, path)


def _run(tmp_path: Path, spec, model: Path, extra: dict) -> tuple[int, list[dict]]:
    cfg = spec.config_dict()
    cfg.update(extra)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    events = tmp_path / "ev.jsonl"
    rc = main(
        ["run", "--config", str(tmp_path / "c.yaml"), "--model", str(model), "--no-display", "--events", str(events)]
    )
    rows = [json.loads(x) for x in events.read_text().splitlines()] if events.exists() else []
    return rc, rows


def test_run_uses_the_artefacts(line, tmp_path, capsys):
    root, spec, model = line
    cam = _camera(tmp_path / "calib.yaml", spec.size)  # a distortion-free lens: undistortion changes nothing
    roi = save_roi(make_roi(spec.size, spec.roi, spec.direction, spec.trigger), tmp_path / "roi.yaml")
    # the numeric ROI would see nothing; the artefact overrides it
    wrong = {"x": 0, "y": 0, "width": 16, "height": 16}
    rc, rows = _run(tmp_path, spec, model, {"calibration": {"camera": str(cam)}, "roi": {"file": str(roi), **wrong}})
    assert rc == 0, capsys.readouterr().err
    assert len(rows) == len(spec.parts)


@pytest.mark.parametrize("which", ["camera", "roi"])
def test_run_refuses_an_artefact_for_another_resolution(line, tmp_path, capsys, which):
    root, spec, model = line
    if which == "camera":
        extra = {"calibration": {"camera": str(_camera(tmp_path / "calib.yaml", (640, 480)))}}
    else:
        roi = save_roi(make_roi((640, 480), (0, 0, 640, 480)), tmp_path / "roi.yaml")
        extra = {"roi": {"file": str(roi)}}
    rc, _ = _run(tmp_path, spec, model, extra)
    err = capsys.readouterr().err
    assert rc == 1
    assert "made for 640x480 frames but the source gives 320x240" in err and "Traceback" not in err

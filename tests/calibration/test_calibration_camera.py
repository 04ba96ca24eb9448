"""Camera calibration on chessboards rendered through a known lens: recovered intrinsics, reporting, undistortion."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from calibration.camera import board_points, calibrate, find_corners, list_images, load_calibration, load_undistorter
from calibration.synth import default_poses, render_board, write_board_set
from engines.errors import UserError
from inspector.cli import main

K_TRUE = np.array([[800.0, 0.0, 322.0], [0.0, 805.0, 236.0], [0.0, 0.0, 1.0]])
DIST_TRUE = np.array([-0.25, 0.08, 0.001, -0.0005, 0.0])
BOARD, SQUARE = (9, 6), 25.0


@pytest.fixture(scope="module")
def boards(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("boards")
    write_board_set(d, K_TRUE, DIST_TRUE, n=10, board=BOARD, square_mm=SQUARE)
    return d


def _lens_difference_px(K: np.ndarray, dist: np.ndarray, margin: float = 0.05) -> float:
    """Largest disagreement, in px, between the true and a recovered lens over the image (minus a margin):
    a true ray projected through the recovered model vs where it really lands."""
    w, h = 640, 480
    g = np.stack(
        np.meshgrid(np.linspace(margin * w, (1 - margin) * w, 33), np.linspace(margin * h, (1 - margin) * h, 25)), -1
    ).reshape(-1, 1, 2)
    rays = cv2.undistortPoints(g, K_TRUE, DIST_TRUE).reshape(-1, 2)
    pts3 = np.column_stack([rays, np.ones(len(rays))])
    back, _ = cv2.projectPoints(pts3, np.zeros(3), np.zeros(3), K, dist)
    return float(np.linalg.norm(back.reshape(-1, 2) - g.reshape(-1, 2), axis=1).max())


def test_rendered_corners_are_where_the_lens_puts_them():
    """The renderer itself is exact: detected corners sit on the true projections (what the fit relies on)."""
    obj = board_points(BOARD, SQUARE)
    for i, (rvec, tvec) in enumerate(default_poses(3)):
        img = render_board(K_TRUE, DIST_TRUE, rvec, tvec, board=BOARD, square_mm=SQUARE, seed=i)
        corners = find_corners(img, BOARD)
        assert corners is not None
        proj, _ = cv2.projectPoints(obj, rvec, tvec, K_TRUE, DIST_TRUE)
        err = np.linalg.norm(corners.reshape(-1, 2) - proj.reshape(-1, 2), axis=1)
        assert err.mean() < 0.15, f"view {i}: mean corner error {err.mean():.3f} px"


def test_recovers_focal_length_and_distortion(boards):
    calib = calibrate(list_images(boards), BOARD, SQUARE)
    K = calib.K
    assert abs(K[0, 0] / K_TRUE[0, 0] - 1) < 0.01
    assert abs(K[1, 1] / K_TRUE[1, 1] - 1) < 0.01
    assert abs(K[0, 2] - K_TRUE[0, 2]) < 3 and abs(K[1, 2] - K_TRUE[1, 2]) < 3
    assert calib.rms_px < 0.3
    assert len(calib.per_image) == 10 and not calib.not_found
    # all five coefficients trade off against each other; the lens they describe must match the true one
    assert _lens_difference_px(K, calib.dist) < 1.0
    assert abs(calib.dist_coeffs[0] - DIST_TRUE[0]) < 0.03


def test_fixed_k3_gives_close_coefficients(boards):
    calib = calibrate(list_images(boards), BOARD, SQUARE, fix_k3=True)
    k1, k2, p1, p2, k3 = calib.dist_coeffs
    assert k3 == 0.0
    assert abs(k1 - DIST_TRUE[0]) < 0.01
    assert abs(k2 - DIST_TRUE[1]) < 0.03
    assert abs(p1 - DIST_TRUE[2]) < 5e-4 and abs(p2 - DIST_TRUE[3]) < 5e-4
    assert abs(calib.K[0, 0] / K_TRUE[0, 0] - 1) < 0.01


def test_cli_lists_images_without_a_board_and_writes_the_file(boards, tmp_path, capsys):
    d = tmp_path / "imgs"
    shutil.copytree(boards, d)
    cv2.imwrite(str(d / "blank.png"), np.full((480, 640), 128, np.uint8))
    cut = cv2.imread(str(d / "board_00.png"), cv2.IMREAD_GRAYSCALE)
    cut[:, 320:] = 90  # half the board hidden
    cv2.imwrite(str(d / "half.png"), cut)
    (d / "notes.txt").write_text("not an image")
    out = tmp_path / "calib.yaml"
    rc = main(["calibrate", "camera", "--images", str(d), "--board", "9x6", "--square-mm", "25", "--out", str(out)])
    text = capsys.readouterr().out
    assert rc == 0
    assert "blank.png" in text and "half.png" in text and "not found" in text
    assert "RMS reprojection error" in text and "board_00.png" in text
    data = yaml.safe_load(out.read_text())
    assert sorted(data["not_found"]) == ["blank.png", "half.png"]
    assert data["frame_size"] == [640, 480] and data["board"] == {"cols": 9, "rows": 6, "square_mm": 25.0}
    assert data["created"].endswith("Z") and len(data["per_image"]) == 10
    assert load_calibration(out).rms_px == pytest.approx(data["rms_px"])


@pytest.mark.parametrize(
    "argv_board, files, message",
    [
        ("9x6", "blank", "found in 0 of 2 images"),
        ("7x7", "boards", "found in 0 of"),  # wrong board size: reported, not a crash
        ("9by6", "boards", "expected COLSxROWS"),
        ("9x6", "empty", "no images"),
    ],
)
def test_cli_bad_input_is_one_line(argv_board, files, message, boards, tmp_path, capsys):
    d = tmp_path / "imgs"
    if files == "boards":
        shutil.copytree(boards, d)
    else:
        d.mkdir()
        if files == "blank":
            for i in range(2):
                cv2.imwrite(str(d / f"b{i}.png"), np.full((480, 640), 100 + i, np.uint8))
    rc = main(
        [
            "calibrate",
            "camera",
            "--images",
            str(d),
            "--board",
            argv_board,
            "--square-mm",
            "25",
            "--out",
            str(tmp_path / "c.yaml"),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 1
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "c.yaml").exists()


@pytest.fixture(scope="module")
def calib_file(boards, tmp_path_factory) -> Path:
    from calibration.camera import save_calibration

    out = tmp_path_factory.mktemp("calib") / "calib.yaml"
    save_calibration(calibrate(list_images(boards), BOARD, SQUARE, fix_k3=True), out)
    return out


def _straightness_px(img: np.ndarray) -> float:
    """RMS distance of the detected corners from the best homography of the flat board: 0 for a pinhole view."""
    corners = find_corners(img, BOARD)
    assert corners is not None
    obj = board_points(BOARD, SQUARE)[:, :2]
    H, _ = cv2.findHomography(obj, corners.reshape(-1, 2))
    proj = cv2.perspectiveTransform(obj.reshape(-1, 1, 2), H).reshape(-1, 2)
    return float(np.sqrt(np.mean(np.sum((proj - corners.reshape(-1, 2)) ** 2, axis=1))))


def test_undistorter_straightens_the_board(calib_file):
    und = load_undistorter(calib_file, (640, 480))
    rvec = np.deg2rad([5.0, -8.0, 3.0])  # a close view: the board spans most of the frame
    R, _ = cv2.Rodrigues(rvec)
    tvec = np.array([0.0, 0.0, 360.0]) - R @ np.array([100.0, 62.5, 0.0])
    img = render_board(K_TRUE, DIST_TRUE, rvec, tvec, board=BOARD, square_mm=SQUARE)
    before = _straightness_px(img)
    after_img = und.apply(img)
    after = _straightness_px(after_img)
    assert after_img.shape == img.shape
    assert before > 0.8  # the lens bends the board's lines
    assert after < min(0.15, before / 5), f"after undistortion {after:.3f} px from a flat board (before {before:.3f})"
    # the same result as OpenCV's one-shot undistort with the same new camera matrix
    ref = cv2.undistort(img, load_calibration(calib_file).K, load_calibration(calib_file).dist, None, und.new_K)
    assert np.abs(ref.astype(int) - after_img.astype(int))[20:-20, 20:-20].mean() < 1.5


def test_undistorter_refuses_another_resolution(calib_file):
    with pytest.raises(UserError, match=r"made for 640x480 frames but the source gives 1280x720"):
        load_undistorter(calib_file, (1280, 720))
    und = load_undistorter(calib_file, (640, 480))
    with pytest.raises(UserError, match="320x240"):
        und.apply(np.zeros((240, 320, 3), np.uint8))


def _write_yaml(path: Path, data) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.mark.parametrize(
    "change, message, key",
    [
        (lambda d: d.pop("camera_matrix"), "missing field 'camera_matrix'", None),
        (lambda d: d.update(extra_key=1), "unknown field 'extra_key'", "extra_key"),
        (lambda d: d.update(kind="roi"), "field 'kind': expected 'camera-calibration'", "kind"),
        (
            lambda d: d.update(camera_matrix=[[1, 0], [0, 1]]),
            "field 'camera_matrix': Value error, expected a 3x3",
            "camera_matrix",
        ),
        (lambda d: d.update(dist_coeffs=[0.1, 0.2, 0.3]), "field 'dist_coeffs'", "dist_coeffs"),
        (lambda d: d.update(frame_size=[640, -1]), "field 'frame_size'", "frame_size"),
        (lambda d: d["board"].update(square_mm="big"), "field 'board.square_mm'", "square_mm"),
    ],
)
def test_bad_calibration_file_names_file_line_and_field(calib_file, tmp_path, change, message, key):
    data = yaml.safe_load(calib_file.read_text())
    change(data)
    bad = _write_yaml(tmp_path / "bad.yaml", data)
    with pytest.raises(UserError) as exc:
        load_undistorter(bad, (640, 480))
    text = bad.read_text().splitlines()
    line = 1 if key is None else next(i for i, t in enumerate(text, 1) if t.strip().startswith(f"{key}:"))
    assert str(exc.value).startswith(f"{bad}:{line}: ") and message in str(exc.value), str(exc.value)


def test_unreadable_calibration_files(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_calibration(tmp_path / "missing.yaml")
    (tmp_path / "broken.yaml").write_text("kind: [camera-calibration\n")
    with pytest.raises(UserError, match=r"broken.yaml:\d+: malformed YAML"):
        load_calibration(tmp_path / "broken.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(UserError, match="expected a mapping"):
        load_calibration(tmp_path / "list.yaml")

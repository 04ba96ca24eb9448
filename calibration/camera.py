"""Camera intrinsics and lens distortion from chessboard photos, and the runtime undistorter.

Calibration: find the inner corners of a chessboard in every image (``findChessboardCorners`` refined to
sub-pixel with ``cornerSubPix``), then ``calibrateCamera``. Images where the board is not found are listed,
never fatal. The runtime undistorts with maps precomputed once (``initUndistortRectifyMap``), so each frame
costs one ``cv2.remap``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from calibration.artefact import Artefact, check_frame_size, load_artefact, save_artefact
from ground.errors import UserError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
SUBPIX_CRITERIA = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 50, 1e-4)


class Board(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cols: int = Field(ge=2, description="inner corners along a row")
    rows: int = Field(ge=2, description="inner corners along a column")
    square_mm: float = Field(gt=0, description="side of one square in mm")


class ImageError(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image: str
    error_px: float = Field(description="RMS reprojection error of this image's corners")


class CameraCalibration(Artefact):
    """The camera calibration artefact (``calib.yaml``)."""

    kind: Literal["camera-calibration"] = "camera-calibration"
    board: Board
    camera_matrix: list[list[float]] = Field(description="3x3 intrinsic matrix, px")
    dist_coeffs: list[float] = Field(description="OpenCV distortion coefficients k1 k2 p1 p2 [k3 ...]")
    rms_px: float = Field(ge=0, description="overall RMS reprojection error")
    alpha: float = Field(
        0.0, ge=0, le=1, description="undistorted view: 0 = only valid pixels (cropped), 1 = every source pixel"
    )
    per_image: list[ImageError] = Field(default_factory=list)
    not_found: list[str] = Field(default_factory=list, description="images where the board was not found")

    @field_validator("camera_matrix")
    @classmethod
    def _k(cls, v: list[list[float]]) -> list[list[float]]:
        if len(v) != 3 or any(len(r) != 3 for r in v):
            raise ValueError("expected a 3x3 matrix")
        if v[0][0] <= 0 or v[1][1] <= 0:
            raise ValueError(f"expected positive focal lengths fx, fy, got {v[0][0]}, {v[1][1]}")
        return v

    @field_validator("dist_coeffs")
    @classmethod
    def _d(cls, v: list[float]) -> list[float]:
        if len(v) not in (4, 5, 8, 12, 14):
            raise ValueError(f"expected 4, 5, 8, 12 or 14 coefficients, got {len(v)}")
        return v

    @property
    def K(self) -> np.ndarray:  # noqa: N802 - the usual name
        return np.array(self.camera_matrix, dtype=np.float64)

    @property
    def dist(self) -> np.ndarray:
        return np.array(self.dist_coeffs, dtype=np.float64)


@dataclass
class BoardResult:
    """Per-image outcome of the corner search."""

    found: list[tuple[str, np.ndarray]] = field(default_factory=list)  # (name, Nx1x2 float32 corners)
    not_found: list[str] = field(default_factory=list)
    size: tuple[int, int] | None = None


def parse_board(text: str) -> tuple[int, int]:
    """'9x6' -> (9, 6) inner corners; a clear error otherwise."""
    try:
        cols, rows = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UserError(f"--board {text!r}: expected COLSxROWS inner corners, e.g. 9x6") from None
    if cols < 2 or rows < 2:
        raise UserError(f"--board {text!r}: need at least 2x2 inner corners")
    return cols, rows


def list_images(folder: str | Path) -> list[Path]:
    d = Path(folder)
    if not d.is_dir():
        raise UserError(f"--images {d}: not a folder; give the folder of chessboard photos")
    files = sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UserError(f"--images {d}: no images ({', '.join(IMAGE_SUFFIXES)}) in it")
    return files


def find_corners(gray: np.ndarray, board: tuple[int, int]) -> np.ndarray | None:
    """Inner corners refined to sub-pixel, or None when the board is not found."""
    flags = cv2.CALIB_CB_ADAPTIVE_THRESH | cv2.CALIB_CB_NORMALIZE_IMAGE
    ok, corners = cv2.findChessboardCorners(gray, board, flags=flags)
    if not ok:
        return None
    return cv2.cornerSubPix(gray, corners, (5, 5), (-1, -1), SUBPIX_CRITERIA)


def detect_boards(files: list[Path], board: tuple[int, int]) -> BoardResult:
    """Search every image; unreadable images and images of another size are listed as not found."""
    res = BoardResult()
    for f in files:
        img = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)
        if img is None:
            log.warning("%s: unreadable image, skipped", f)
            res.not_found.append(f.name)
            continue
        size = (img.shape[1], img.shape[0])
        if res.size is None:
            res.size = size
        elif size != res.size:
            log.warning("%s: %dx%d differs from %dx%d, skipped", f, *size, *res.size)
            res.not_found.append(f.name)
            continue
        corners = find_corners(img, board)
        if corners is None:
            res.not_found.append(f.name)
        else:
            res.found.append((f.name, corners))
    return res


def board_points(board: tuple[int, int], square_mm: float) -> np.ndarray:
    """The corners' 3-D positions on the board plane (z = 0), row by row like findChessboardCorners."""
    cols, rows = board
    grid = np.zeros((rows * cols, 3), np.float32)
    grid[:, :2] = np.mgrid[0:cols, 0:rows].T.reshape(-1, 2) * square_mm
    return grid


def calibrate(
    files: list[Path], board: tuple[int, int], square_mm: float, *, min_images: int = 3, fix_k3: bool = False
) -> CameraCalibration:
    """Intrinsics and distortion from the images where the board is found.

    ``fix_k3`` keeps k3 at 0: steadier coefficients for ordinary (non-fisheye) lenses and few views.
    """
    res = detect_boards(files, board)
    if len(res.found) < min_images:
        raise UserError(
            f"chessboard {board[0]}x{board[1]} found in {len(res.found)} of {len(files)} images, need at least "
            f"{min_images}; check --board (inner corners, not squares) and take sharper, fully visible views"
            + (
                f" (not found: {', '.join(res.not_found[:5])}{'...' if len(res.not_found) > 5 else ''})"
                if res.not_found
                else ""
            )
        )
    obj = board_points(board, square_mm)
    objpoints = [obj] * len(res.found)
    imgpoints = [c for _, c in res.found]
    assert res.size is not None
    flags = cv2.CALIB_FIX_K3 if fix_k3 else 0
    rms, K, dist, rvecs, tvecs = cv2.calibrateCamera(objpoints, imgpoints, res.size, None, None, flags=flags)
    per_image = []
    for (name, corners), rvec, tvec in zip(res.found, rvecs, tvecs, strict=True):
        proj, _ = cv2.projectPoints(obj, rvec, tvec, K, dist)
        err = float(np.sqrt(np.mean(np.sum((proj.reshape(-1, 2) - corners.reshape(-1, 2)) ** 2, axis=1))))
        per_image.append(ImageError(image=name, error_px=round(err, 4)))
    return CameraCalibration(
        frame_size=res.size,
        board=Board(cols=board[0], rows=board[1], square_mm=square_mm),
        camera_matrix=K.tolist(),
        dist_coeffs=dist.ravel().tolist(),
        rms_px=float(rms),
        per_image=per_image,
        not_found=res.not_found,
    )


def save_calibration(calib: CameraCalibration, path: str | Path) -> Path:
    return save_artefact(calib, path, "camera calibration from `inspector calibrate camera`")


def load_calibration(path: str | Path, frame_size: tuple[int, int] | None = None) -> CameraCalibration:
    """Validated calibration; refused when made for another frame size."""
    calib = load_artefact(CameraCalibration, path)
    check_frame_size(calib, frame_size, path, "the camera calibration")
    return calib


class Undistorter:
    """One ``cv2.remap`` per frame through maps computed once for this calibration and frame size."""

    def __init__(self, calib: CameraCalibration, source: str = "calibration") -> None:
        w, h = calib.frame_size
        self.size = (w, h)
        self.source = source
        self.new_K, self.valid_roi = cv2.getOptimalNewCameraMatrix(calib.K, calib.dist, (w, h), calib.alpha, (w, h))
        self.map1, self.map2 = cv2.initUndistortRectifyMap(calib.K, calib.dist, None, self.new_K, (w, h), cv2.CV_16SC2)

    def apply(self, frame: np.ndarray) -> np.ndarray:
        if frame.shape[1] != self.size[0] or frame.shape[0] != self.size[1]:
            raise UserError(
                f"{self.source}: frame is {frame.shape[1]}x{frame.shape[0]} but the camera calibration is for "
                f"{self.size[0]}x{self.size[1]}; recalibrate at this resolution"
            )
        return cv2.remap(frame, self.map1, self.map2, cv2.INTER_LINEAR)

    __call__ = apply


def load_undistorter(path: str | Path, frame_size: tuple[int, int]) -> Undistorter:
    """For the runtime (``calibration.camera`` in the config): refuses another resolution with a UserError."""
    return Undistorter(load_calibration(path, frame_size), source=str(path))

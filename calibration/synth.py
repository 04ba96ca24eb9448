"""Chessboard photos rendered with a known lens, to check the camera calibration end to end.

The board is drawn into an ideal pinhole view, then warped through the lens model that ``calibrateCamera``
fits (the inverse distortion maps), so recovered intrinsics can be compared with the true ones.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def default_poses(n: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` varied board poses (rvec, tvec in mm) that keep a 9x6 board of 25 mm squares in a 640x480 view."""
    rng = np.random.default_rng(seed)
    poses = []
    for _ in range(n):
        tilt = np.deg2rad(rng.uniform(-30, 30, 2))
        spin = np.deg2rad(rng.uniform(-15, 15))
        rvec = np.array([tilt[0], tilt[1], spin])
        # board centre (100, 62.5) mm lands near the optical axis, shifted to cover the corners of the view
        centre_cam = np.array([rng.uniform(-80, 80), rng.uniform(-55, 55), rng.uniform(450, 600)])
        R, _ = cv2.Rodrigues(rvec)
        tvec = centre_cam - R @ np.array([100.0, 62.5, 0.0])
        poses.append((rvec, tvec))
    return poses


def board_texture(board: tuple[int, int], square_mm: float, px_per_mm: float) -> tuple[np.ndarray, float]:
    """The printed board (squares plus one white square of margin) as an image; -> (image, margin in mm)."""
    cols, rows = board
    margin = 2 * square_mm  # one black-and-white square beyond the outer corners, then white paper
    sq = int(round(square_mm * px_per_mm))
    tex = np.full((sq * (rows + 3), sq * (cols + 3)), 235, np.uint8)
    for j in range(rows + 1):
        for i in range(cols + 1):
            if (i + j) % 2 == 0:
                tex[(j + 1) * sq : (j + 2) * sq, (i + 1) * sq : (i + 2) * sq] = 25
    return tex, margin


def render_board(
    K: np.ndarray,
    dist: np.ndarray,
    rvec: np.ndarray,
    tvec: np.ndarray,
    size: tuple[int, int] = (640, 480),
    board: tuple[int, int] = (9, 6),
    square_mm: float = 25.0,
    noise: float = 2.0,
    seed: int = 0,
) -> np.ndarray:
    """Grey image of the board seen at pose (rvec, tvec) through lens (K, dist).

    The board is first drawn by a homography into an ideal pinhole view on a padded canvas, then every
    output pixel samples that view where ``initInverseRectificationMap`` says its ray lands.
    """
    w, h = size
    pad = max(w, h) // 2
    P = np.array(K, np.float64).copy()
    P[0, 2] += pad
    P[1, 2] += pad
    tex_ppm = 1.0  # below the board's scale in the image (about 1.3-1.8 px/mm), so edges stay anti-aliased
    tex, margin = board_texture(board, square_mm, tex_ppm)
    R, _ = cv2.Rodrigues(np.asarray(rvec, np.float64))
    H_board = P @ np.column_stack([R[:, 0], R[:, 1], np.asarray(tvec, np.float64).ravel()])
    tex_to_mm = np.array([[1 / tex_ppm, 0, -margin], [0, 1 / tex_ppm, -margin], [0, 0, 1]])
    # texel centres sit at +0.5: shift so texel edges map to exact mm positions
    centre = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1]])
    H = H_board @ tex_to_mm @ centre
    ideal = cv2.warpPerspective(
        tex, H, (w + 2 * pad, h + 2 * pad), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=90
    )
    mx, my = cv2.initInverseRectificationMap(
        np.asarray(K, np.float64), np.asarray(dist, np.float64), np.eye(3), P, (w, h), cv2.CV_32FC1
    )
    img = cv2.remap(ideal, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=90)
    img = img.astype(np.float64)
    if noise > 0:
        img += np.random.default_rng(seed).normal(0, noise, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_board_set(
    folder: str | Path,
    K: np.ndarray,
    dist: np.ndarray,
    n: int = 10,
    size: tuple[int, int] = (640, 480),
    board: tuple[int, int] = (9, 6),
    square_mm: float = 25.0,
    seed: int = 0,
) -> list[Path]:
    """Write ``n`` rendered views as PNG; returns their paths."""
    d = Path(folder)
    d.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (rvec, tvec) in enumerate(default_poses(n, seed)):
        img = render_board(K, dist, rvec, tvec, size, board, square_mm, seed=seed + i)
        p = d / f"board_{i:02d}.png"
        cv2.imwrite(str(p), img)
        paths.append(p)
    return paths

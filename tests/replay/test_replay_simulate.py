"""Simulator: deterministic under a seed, and the truth says where each part really is."""

from __future__ import annotations

import csv
import hashlib
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from engines.errors import UserError
from inspector.simulate import list_images, read_truth, render_line


@pytest.fixture
def castings(tmp_path: Path):
    """Casting-like photos: an impeller (dark ring, bright hub) on a bright grey surround, like the real set."""

    def make(counts: dict[str, int], size: int = 96) -> Path:
        rng = np.random.default_rng(0)
        for name, n in counts.items():
            (tmp_path / "imgs" / name).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = np.full((size, size, 3), int(rng.integers(140, 190)), np.uint8)
                c = size // 2
                cv2.circle(img, (c, c), size * 2 // 5, (210, 210, 210), -1)
                cv2.circle(img, (c, c), size // 4, (25, 25, 25), -1)
                cv2.circle(img, (c, c), size // 10, (200, 200, 200), -1)
                if name != "ok":
                    cv2.line(img, (c, 4), (c + 10, 20), (20, 20, 20), 2)
                cv2.imwrite(str(tmp_path / "imgs" / name / f"{name}_{i}.png"), img)
        return tmp_path / "imgs"

    return make


def _frames(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    out = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        out.append(frame)
    cap.release()
    return out


def _blobs(frame: np.ndarray, spec, min_area: int) -> list[tuple]:
    """Part boxes found independently of the runtime: threshold (or colour distance) in the ROI, contours."""
    x, y, w, h = spec.roi
    roi = cv2.GaussianBlur(frame[y : y + h, x : x + w], (5, 5), 0)
    if spec.belt == "dark":
        _, mask = cv2.threshold(cv2.cvtColor(roi, cv2.COLOR_BGR2GRAY), spec.threshold, 255, cv2.THRESH_BINARY)
    else:
        dist = np.linalg.norm(roi.astype(np.float32) - np.float32(spec.belt_bgr), axis=2)
        mask = (dist > 45).astype(np.uint8) * 255
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    boxes = [cv2.boundingRect(c) for c in contours if cv2.contourArea(c) >= min_area]
    return [(bx + x, by + y, bw, bh) for bx, by, bw, bh in boxes]


@pytest.mark.parametrize(
    "direction, belt, mask",
    [("right", "green", "circle"), ("left", "dark", "square"), ("down", "dark", "circle"), ("up", "green", "square")],
)
def test_truth_matches_rendered_part_positions(castings, tmp_path: Path, direction: str, belt: str, mask: str) -> None:
    images = castings({"ok": 6, "defect": 6})
    spec = render_line(
        images,
        tmp_path / "l.avi",
        fps=25,
        size=(320, 240),
        speed_px_s=300,
        parts=6,
        seed=3,
        direction=direction,
        min_gap_px=30,
        max_gap_px=60,
        belt=belt,
        mask=mask,
    )
    frames = _frames(Path(spec.video))
    assert len(frames) == spec.frames
    truth = read_truth(spec.truth)
    assert [r["part_id"] for r in truth] == [1, 2, 3, 4, 5, 6]
    horizontal = direction in ("right", "left")
    sign = 1 if direction in ("right", "down") else -1
    for row in truth:
        f = row["trigger_frame"]
        tb = (row["x"], row["y"], row["w"], row["h"])

        def centre_of(frame_idx: int, tb: tuple = tb, pid: int = row["part_id"]) -> float:
            boxes = _blobs(frames[frame_idx], spec, spec.part_px**2 // 4)
            cs = [(bx + bw / 2, by + bh / 2) for bx, by, bw, bh in boxes]
            # the part whose lateral position matches the truth box
            lat = tb[1] + tb[3] / 2 if horizontal else tb[0] + tb[2] / 2
            near = [
                c
                for c in cs
                if abs((c[1] if horizontal else c[0]) - lat) < 4
                and abs((c[0] if horizontal else c[1]) - spec.trigger_px) < spec.part_px / 2
            ]
            assert len(near) == 1, f"part {pid} frame {frame_idx}: boxes {boxes}, truth {tb}"
            return near[0][0] if horizontal else near[0][1]

        at, before = centre_of(f), centre_of(f - 1)
        # The rendered centre has just reached the trigger line in the trigger frame, not one frame earlier.
        assert sign * (at - spec.trigger_px) >= -1.0
        assert sign * (before - spec.trigger_px) < 1.0
        # And the truth box is where the part is.
        exp = tb[0] + tb[2] / 2 if horizontal else tb[1] + tb[3] / 2
        assert abs(at - exp) <= 1.5


def test_same_seed_same_video_other_seed_differs(tiny_dataset, tmp_path: Path) -> None:
    images = tiny_dataset({"ok": 4, "bad": 4})
    kw = dict(size=(160, 120), speed_px_s=200, parts=5, min_gap_px=20)
    a = render_line(images, tmp_path / "a.avi", seed=7, **kw)
    b = render_line(images, tmp_path / "b.avi", seed=7, **kw)
    c = render_line(images, tmp_path / "c.avi", seed=8, **kw)

    def digest(p: str) -> str:
        return hashlib.sha256(Path(p).read_bytes()).hexdigest()

    assert digest(a.video) == digest(b.video) != digest(c.video)
    assert Path(a.truth).read_text() == Path(b.truth).read_text()
    assert a.parts == b.parts and a.parts != c.parts
    labels = {p.cls: p.label for p in a.parts}
    assert labels.get("ok", "ok") == "ok" and labels.get("bad", "defect") == "defect"


def test_parts_never_overlap_and_respect_min_gap(tiny_dataset, tmp_path: Path) -> None:
    images = tiny_dataset({"ok": 3, "defect": 3})
    spec = render_line(
        images,
        tmp_path / "g.avi",
        size=(200, 150),
        speed_px_s=400,
        parts=30,
        min_gap_px=25,
        max_gap_px=40,
        noise=False,
        lighting=False,
    )
    px = spec.px_per_frame
    for p, q in zip(spec.parts, spec.parts[1:], strict=False):
        # Along-belt distance between consecutive parts' leading edges, from their trigger frames.
        gap = (q.trigger_frame - p.trigger_frame) * px - spec.part_px
        assert gap >= 25 - px - 1
    with open(spec.truth, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 30 and {r["label"] for r in rows} <= {"ok", "defect"}


def test_mp4_decodes_with_gstreamer(tiny_dataset, tmp_path: Path) -> None:
    gst = shutil.which("gst-launch-1.0")
    if gst is None:
        pytest.skip("gst-launch-1.0 not installed (.ci/run installs it)")
    spec = render_line(tiny_dataset({"ok": 2, "defect": 2}), tmp_path / "v.mp4", size=(160, 120), parts=2)
    proc = subprocess.run(
        [
            gst,
            "-q",
            "filesrc",
            f"location={spec.video}",
            "!",
            "decodebin",
            "!",
            "videoconvert",
            "!",
            "video/x-raw,format=BGR",
            "!",
            "fakesink",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert len(_frames(Path(spec.video))) == spec.frames


def test_bad_input_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not a folder"):
        list_images(tmp_path / "nope")
    (tmp_path / "empty" / "ok").mkdir(parents=True)
    with pytest.raises(UserError, match="no images"):
        list_images(tmp_path / "empty")
    with pytest.raises(UserError, match="direction"):
        render_line([("x.png", "ok")], tmp_path / "x.mp4", direction="sideways")


def test_cli_writes_video_truth_and_valid_config(tiny_dataset, tmp_path: Path) -> None:
    from inspector.cli import main
    from inspector.config import load_config

    images = tiny_dataset({"ok_front": 3, "def_front": 3})
    out = tmp_path / "line.mp4"
    rc = main(
        [
            "simulate",
            "--images",
            str(images),
            "--out",
            str(out),
            "--parts",
            "4",
            "--size",
            "320x240",
            "--seed",
            "2",
            "--direction",
            "down",
        ]
    )
    assert rc == 0
    cfg = load_config(tmp_path / "line.yaml")
    assert cfg.roi.direction == "down" and cfg.detection.method == "color"
    assert cfg.source.uri == str(out.resolve())
    assert len(read_truth(tmp_path / "line.csv")) == 4
    assert main(["simulate", "--images", str(images), "--out", str(tmp_path / "x.gif")]) == 1

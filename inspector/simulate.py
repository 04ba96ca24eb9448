"""Line simulator: render a conveyor video with known ground truth from a labelled image folder.

No recorded line video comes with labels, so end-to-end replay tests and benchmarks render one: a textured
belt that scrolls at the belt speed between two static side rails, parts riding on it at random,
never-overlapping spacing, slow lighting drift, sensor noise and optional motion blur. A part is the labelled
photo pasted as a square tile (the photo's own framing, so the runtime's crop is what the model was trained on)
or as a disc. The truth CSV says, for each part, the frame in which its centre first reaches the trigger line,
which is where the runtime must make its verdict. Rendering is deterministic under ``seed``.

Two belts. ``green`` (default): a saturated green whose brightness matches the grey surround of the casting
photos, so colour difference separates the (grey) parts while a grey-scale model sees belt corners in a crop
as the same grey it was trained on. ``dark``: dark rubber under bright parts, for the brightness threshold.
:class:`LineSpec` carries the ROI (the belt between the rails), trigger and detection settings to match.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ground.errors import UserError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
DIRECTIONS = ("right", "left", "down", "up")
OK_PREFIXES = ("ok", "good", "pass")
TRUTH_FIELDS = ("part_id", "class", "label", "trigger_frame", "image", "x", "y", "w", "h", "enter_frame", "exit_frame")

BELTS = {
    "green": (80, 185, 125),  # luminance ~155 like the photos' surround; >= ~70 away from any grey in BGR
    "dark": (48, 38, 34),  # dark blue-grey rubber: grey ~40, well below the photos' ~120-200 surround
}
RAIL_BGR = (150, 150, 150)  # static steel guides, outside the ROI


@dataclass(frozen=True)
class TruthPart:
    """One rendered part: what it is and when/where its centre crosses the trigger line."""

    part_id: int
    cls: str
    label: str  # ok | defect
    trigger_frame: int
    image: str
    bbox: tuple[int, int, int, int]  # x, y, w, h in the trigger frame (full-frame px)
    enter_frame: int  # first frame any of it is visible
    exit_frame: int  # last frame any of it is visible


@dataclass
class LineSpec:
    """What was rendered, and the runtime settings that match it."""

    video: str
    truth: str
    fps: float
    size: tuple[int, int]  # w, h
    frames: int
    direction: str
    trigger: float
    roi: tuple[int, int, int, int]  # x, y, w, h
    trigger_px: int  # trigger line position in full-frame px (x for left/right, y for up/down)
    speed_px_s: float
    part_px: int
    threshold: int  # brightness between the brightest belt pixel and the darkest part edge
    belt: str = "green"
    belt_bgr: tuple[int, int, int] = BELTS["green"]
    mask: str = "square"
    parts: list[TruthPart] = field(default_factory=list)

    @property
    def px_per_frame(self) -> float:
        return self.speed_px_s / self.fps

    def config_dict(self, model: str | None = None) -> dict:
        """A runtime configuration (the InspectorConfig layout) that finds these parts."""
        x, y, w, h = self.roi
        area = self.part_px * self.part_px
        cfg: dict = {
            "source": {"uri": str(Path(self.video).resolve())},
            "roi": {"x": x, "y": y, "width": w, "height": h, "direction": self.direction, "trigger": self.trigger},
            "detection": {
                **(
                    {"method": "color", "belt_color": list(self.belt_bgr), "color_distance": 45.0}
                    if self.belt == "green"
                    else {"method": "threshold", "threshold": self.threshold, "invert": False}
                ),
                "blur": 5,
                "min_area": int(area * 0.25),
                "max_area": int(area * 1.6),
                # A square part is the photo's own framing: crop it exactly, as the model was trained on it, with
                # boxes from full-resolution segmentation (downscaled boxes are +-N px, and a few px of framing
                # moves the shipped model's score; see docs/BENCHMARKS.md, Runtime (replay)).
                "margin": 0 if self.mask == "square" else 8,
                "downscale": 1 if self.mask == "square" else "auto",
            },
            "tracking": {
                "max_distance_px": float(max(80.0, round(2.5 * self.px_per_frame, 1))),
                "max_missed_frames": 5,
                "classify_at": "trigger",
            },
        }
        if model is not None:
            cfg["model"] = {"path": str(Path(model).resolve())}
        return cfg

    def write_config(self, path: str | Path, model: str | None = None) -> Path:
        import yaml

        p = Path(path)
        header = f"# Rendered line {Path(self.video).name}: {len(self.parts)} parts, {self.frames} frames\n"
        p.write_text(header + yaml.safe_dump(self.config_dict(model), sort_keys=False))
        return p

    def summary(self) -> dict:
        d = asdict(self)
        d.pop("parts")
        d["parts"] = len(self.parts)
        d["defects"] = sum(p.label == "defect" for p in self.parts)
        return d


def label_for(cls: str) -> str:
    """Class folder name -> ok/defect: 'ok_front', 'good', 'pass' are OK, anything else is a defect."""
    return "ok" if cls.lower().startswith(OK_PREFIXES) else "defect"


def list_images(images_dir: str | Path) -> list[tuple[Path, str]]:
    """A class-folder image set -> [(path, class)], sorted so that a seed gives the same line everywhere."""
    root = Path(images_dir)
    if not root.is_dir():
        raise UserError(f"{root}: not a folder; give --images a folder with one sub-folder of images per class")
    out = [
        (f, d.name)
        for d in sorted(root.iterdir())
        if d.is_dir()
        for f in sorted(d.iterdir())
        if f.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not out:
        raise UserError(f"{root}: no images in class sub-folders (e.g. {root}/ok_front/*.jpg); add some")
    return out


def read_truth(path: str | Path) -> list[dict]:
    """The truth CSV as dicts with integer frames and bbox."""
    p = Path(path)
    try:
        with p.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
    except FileNotFoundError:
        raise UserError(f"{p}: truth file not found; render one with `inspector simulate --truth`") from None
    missing = {"part_id", "label", "trigger_frame"} - set(rows[0] if rows else TRUTH_FIELDS)
    if missing:
        raise UserError(f"{p}: truth CSV lacks column(s) {sorted(missing)}; expected {', '.join(TRUTH_FIELDS)}")
    for r in rows:
        for k in ("part_id", "trigger_frame", "x", "y", "w", "h", "enter_frame", "exit_frame"):
            if r.get(k) not in (None, ""):
                r[k] = int(r[k])
    return rows


class _Texture:
    """A belt texture, periodic along the travel axis, so a moving belt is a cheap slice."""

    def __init__(
        self,
        lateral: int,
        along: int,
        rail: int,
        rng: np.random.Generator,
        belt_bgr: tuple[int, int, int],
        period: int = 256,
    ) -> None:
        self.period = period
        noise = rng.normal(0.0, 1.0, (lateral, period)).astype(np.float32)
        wide = cv2.GaussianBlur(np.hstack([noise] * 3), (0, 0), 2.0)[:, period : 2 * period]
        fine = rng.normal(0.0, 1.0, (lateral, period)).astype(np.float32)
        shade = 6.0 * wide / max(1e-6, float(wide.std())) + 2.5 * fine
        shade[:, :3] -= 12.0  # a belt seam every period: makes the motion visible
        tile = np.clip(np.asarray(belt_bgr, np.float32)[None, None, :] + shade[:, :, None], 0, 255)
        # Side rails are uniform along the travel axis, so they stay still while the belt scrolls.
        for rows in (slice(0, rail), slice(lateral - rail, lateral)):
            tile[rows] = RAIL_BGR
        tile[rail - 2 : rail] = tile[lateral - rail : lateral - rail + 2] = 90
        reps = math.ceil((along + period) / period) + 1
        self.strip = np.ascontiguousarray(np.tile(tile.astype(np.uint8), (1, reps, 1)))
        self.along = along

    def view(self, offset_px: int) -> np.ndarray:
        """The visible belt when it has moved ``offset_px`` along +travel (canvas coordinates)."""
        start = self.period - (offset_px % self.period)
        return self.strip[:, start : start + self.along]


def _part_alpha(size: int, mask: str) -> np.ndarray | None:
    if mask == "square":
        return None
    if mask != "circle":
        raise UserError(f"mask '{mask}': expected 'circle' or 'square'")
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    r = np.hypot(xx - (size - 1) / 2, yy - (size - 1) / 2)
    return np.clip(size / 2 - r, 0.0, 1.0)[:, :, None]  # 1 px anti-aliased edge


def _to_frame(canvas: np.ndarray, direction: str) -> np.ndarray:
    """Canvas (lateral x along, travel = +along) -> frame orientation."""
    if direction == "right":
        return canvas
    if direction == "left":
        return canvas[:, ::-1]
    t = canvas.transpose(1, 0, 2)
    return t if direction == "down" else t[::-1]


def _frame_xy(a: int, c: int, s: int, along: int, direction: str) -> tuple[int, int]:
    """Top-left of an s x s part at along-position a, lateral c -> frame x, y."""
    if direction == "right":
        return a, c
    if direction == "left":
        return along - a - s, c
    if direction == "down":
        return c, a
    return c, along - a - s


def _paste(frame: np.ndarray, tile: np.ndarray, alpha: np.ndarray | None, x: int, y: int) -> None:
    h, w = frame.shape[:2]
    s = tile.shape[0]
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + s, w), min(y + s, h)
    if x0 >= x1 or y0 >= y1:
        return
    src = tile[y0 - y : y1 - y, x0 - x : x1 - x]
    if alpha is None:
        frame[y0:y1, x0:x1] = src
        return
    a = alpha[y0 - y : y1 - y, x0 - x : x1 - x]
    dst = frame[y0:y1, x0:x1]
    frame[y0:y1, x0:x1] = (src * a + dst * (1.0 - a)).astype(np.uint8)


def _open_writer(path: Path, fps: float, size: tuple[int, int]) -> cv2.VideoWriter:
    fourcc = "MJPG" if path.suffix.lower() == ".avi" else "mp4v"
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), float(fps), size)
    if not writer.isOpened():
        raise UserError(f"{path}: cannot write a {fourcc} video there; use a .mp4 or .avi name in a writable folder")
    return writer


def render_line(
    images_dir: str | Path | Sequence[tuple[str | Path, str]],
    out_video: str | Path,
    truth_csv: str | Path | None = None,
    *,
    fps: float = 30.0,
    size: tuple[int, int] = (640, 480),
    speed_px_s: float = 320.0,
    parts: int = 20,
    seed: int = 0,
    direction: str = "right",
    trigger: float = 0.5,
    blur: bool = False,
    noise: bool = True,
    lighting: bool = True,
    part_scale: float = 0.3,
    min_gap_px: int = 40,
    max_gap_px: int | None = None,
    mask: str = "square",
    belt: str = "green",
    defect_fraction: float | None = None,
    lead_s: float = 0.3,
    tail_s: float = 0.5,
) -> LineSpec:
    """Render ``parts`` parts from ``images_dir`` (class folders, or a list of (path, class)) to ``out_video``.

    Writes the truth CSV (default: the video path with .csv) and returns the :class:`LineSpec`.
    Parts are ``part_scale`` x the frame's smaller side, at least ``min_gap_px`` apart along the belt.
    """
    if belt not in BELTS:
        raise UserError(f"belt '{belt}': expected one of {', '.join(BELTS)}")
    if direction not in DIRECTIONS:
        raise UserError(f"direction '{direction}': expected one of {', '.join(DIRECTIONS)}")
    if not 0 < trigger < 1:
        raise UserError(f"trigger {trigger}: expected a fraction of the ROI between 0 and 1")
    if fps <= 0 or speed_px_s <= 0 or parts < 1:
        raise UserError(f"fps ({fps}), speed ({speed_px_s} px/s) and parts ({parts}) must all be positive")
    w, h = int(size[0]), int(size[1])
    if w < 64 or h < 64:
        raise UserError(f"frame size {w}x{h}: expected at least 64x64")
    pool = list_images(images_dir) if isinstance(images_dir, (str, Path)) else [(Path(p), c) for p, c in images_dir]
    if not pool:
        raise UserError("no images to render parts from")

    rng = np.random.default_rng(seed)
    horizontal = direction in ("right", "left")
    along, lateral = (w, h) if horizontal else (h, w)
    rail = max(4, lateral // 20)
    s = int(round(part_scale * min(w, h) / 2)) * 2
    band = lateral - 2 * rail
    if s < 16 or s > band - 2 * max(8, lateral // 40):
        raise UserError(f"part_scale {part_scale}: parts of {s} px do not fit a belt {band} px wide")
    max_gap = max(min_gap_px, int(max_gap_px if max_gap_px is not None else 2.5 * s))
    v_frame = speed_px_s / fps
    if v_frame > min(s, min_gap_px + s) / 2:
        log.warning("belt moves %.1f px/frame: more than half a part; tracking may fail", v_frame)

    # Which image each part shows.
    order = _choose(pool, parts, defect_fraction, rng)
    # Along-belt start positions (top-left at frame 0), first part just upstream of the frame.
    a0 = np.empty(parts, np.float64)
    pos = -s - lead_s * speed_px_s
    for i in range(parts):
        a0[i] = pos
        pos -= s + int(rng.integers(min_gap_px, max_gap + 1))
    # Guides keep parts a little off the rails, so no part touches the ROI edge (a clipped part is never judged).
    keep_off = max(8, lateral // 40)
    lat = rng.integers(rail + keep_off, lateral - rail - s - keep_off + 1, size=parts)
    n_frames = int(math.ceil((along - a0[-1]) / v_frame)) + int(round(tail_s * fps))

    # Trigger line in canvas along-coords, measured from the entry edge of the ROI (the whole belt length).
    trig_a = int(round(trigger * along))
    roi = (0, rail, w, band) if horizontal else (rail, 0, band, h)
    trigger_px = trig_a if direction in ("right", "down") else along - trig_a

    def a_at(i: int, f: int) -> int:
        return int(round(a0[i] + speed_px_s * f / fps))

    truth: list[TruthPart] = []
    for i, (path, cls) in enumerate(order):
        # First frame whose rendered centre has reached the trigger line.
        f = max(0, int(math.floor((trig_a - s / 2 - a0[i]) * fps / speed_px_s)) - 2)
        while a_at(i, f) + s // 2 < trig_a:
            f += 1
        x, y = _frame_xy(a_at(i, f), int(lat[i]), s, along, direction)
        enter = max(0, int(math.floor((-s - a0[i]) * fps / speed_px_s)) - 2)
        while a_at(i, enter) + s <= 0:
            enter += 1
        leave = enter
        while a_at(i, leave + 1) < along and leave + 1 < n_frames:
            leave += 1
        truth.append(TruthPart(i + 1, cls, label_for(cls), f, str(path), (x, y, s, s), enter, leave))

    tiles = [_load_tile(p, s) for p, _ in order]
    alpha = _part_alpha(s, mask)
    texture = _Texture(lateral, along, rail, rng, BELTS[belt])
    noise_bank = _noise_bank(rng, (h, w, 3)) if noise else None
    gains = _gains(rng, n_frames, fps) if lighting else None
    kernel = _blur_kernel(v_frame, horizontal) if blur else None

    out_video = Path(out_video)
    truth_path = Path(truth_csv) if truth_csv is not None else out_video.with_suffix(".csv")
    writer = _open_writer(out_video, fps, (w, h))
    first = 0  # parts before this index have left the frame
    try:
        for f in range(n_frames):
            canvas = texture.view(int(round(speed_px_s * f / fps)))
            frame = _to_frame(canvas, direction).copy()  # C-contiguous, never a view of the texture
            for i in range(first, parts):
                a = a_at(i, f)
                if a + s <= 0:
                    break  # this and all later parts are still upstream
                if a >= along:
                    first = i + 1
                    continue
                x, y = _frame_xy(a, int(lat[i]), s, along, direction)
                _paste(frame, tiles[i], alpha, x, y)
            if kernel is not None:
                frame = cv2.filter2D(frame, -1, kernel)
            if gains is not None:
                frame = cv2.convertScaleAbs(frame, alpha=float(gains[f]), beta=0.0)
            if noise_bank is not None:
                pos_n, neg_n = noise_bank[int(rng.integers(len(noise_bank)))]
                frame = cv2.subtract(cv2.add(frame, pos_n), neg_n)
            writer.write(frame)
    finally:
        writer.release()
    _write_truth(truth_path, truth)
    spec = LineSpec(
        video=str(out_video),
        truth=str(truth_path),
        fps=float(fps),
        size=(w, h),
        frames=n_frames,
        direction=direction,
        trigger=trigger,
        roi=roi,
        trigger_px=trigger_px,
        speed_px_s=float(speed_px_s),
        part_px=s,
        threshold=_threshold(),
        belt=belt,
        belt_bgr=BELTS[belt],
        mask=mask,
        parts=truth,
    )
    log.info("rendered %s: %d parts, %d frames", out_video, parts, n_frames)
    return spec


def _threshold() -> int:
    """Between the brightest (blurred) belt pixel under the brightest lighting and the photos' grey surround.

    Belt grey ~40 + 3 sigma texture (~20) at +9% gain is ~70; the casting surround is ~120-200 at -9% gain.
    """
    return 90


def _choose(
    pool: list[tuple[Path, str]], n: int, defect_fraction: float | None, rng: np.random.Generator
) -> list[tuple[Path, str]]:
    """Draw without replacement while the pool lasts; a fixed defect fraction draws by label first."""
    if defect_fraction is None:
        out: list[tuple[Path, str]] = []
        while len(out) < n:
            out.extend(pool[j] for j in rng.permutation(len(pool)))
        return out[:n]
    if not 0 <= defect_fraction <= 1:
        raise UserError(f"defect fraction {defect_fraction}: expected 0 to 1")
    by_label = {lab: [p for p in pool if label_for(p[1]) == lab] for lab in ("ok", "defect")}
    queues: dict[str, list[tuple[Path, str]]] = {"ok": [], "defect": []}
    out = []
    for _ in range(n):
        lab = "defect" if rng.random() < defect_fraction else "ok"
        if not by_label[lab]:
            raise UserError(f"defect fraction {defect_fraction} asks for '{lab}' parts but the images have none")
        if not queues[lab]:
            queues[lab] = [by_label[lab][j] for j in rng.permutation(len(by_label[lab]))]
        out.append(queues[lab].pop())
    return out


def _load_tile(path: Path, s: int) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise UserError(f"{path}: cannot read this image; remove it or replace it")
    h, w = img.shape[:2]
    if h != w:  # centre square crop: parts are pasted square
        m = min(h, w)
        img = img[(h - m) // 2 : (h - m) // 2 + m, (w - m) // 2 : (w - m) // 2 + m]
    interp = cv2.INTER_AREA if img.shape[0] > s else cv2.INTER_LINEAR
    return cv2.resize(img, (s, s), interpolation=interp)


def _noise_bank(rng: np.random.Generator, shape: tuple[int, int, int], n: int = 8, sigma: float = 3.0):
    """Precomputed sensor noise frames (positive and negative halves), so noise costs two saturating adds."""
    bank = []
    for _ in range(n):
        z = rng.normal(0.0, sigma, shape)
        bank.append((np.clip(z, 0, 255).astype(np.uint8), np.clip(-z, 0, 255).astype(np.uint8)))
    return bank


def _gains(rng: np.random.Generator, n: int, fps: float) -> np.ndarray:
    """Lighting: a slow +-8% drift (a few seconds' period) plus +-1% flicker."""
    t = np.arange(n) / fps
    period = float(rng.uniform(4.0, 8.0))
    drift = 0.08 * np.sin(2 * np.pi * t / period + rng.uniform(0, 2 * np.pi))
    return 1.0 + drift + rng.uniform(-0.01, 0.01, n)


def _blur_kernel(v_frame: float, horizontal: bool) -> np.ndarray:
    """Motion blur for an exposure of half the frame interval: a 1-D box along the travel (cheap to filter)."""
    k = max(3, int(round(v_frame * 0.5)) | 1)
    kern = np.full((1, k) if horizontal else (k, 1), 1.0 / k, np.float32)
    return kern


def _write_truth(path: Path, truth: list[TruthPart]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        wr = csv.writer(fh)
        wr.writerow(TRUTH_FIELDS)
        for t in truth:
            wr.writerow([t.part_id, t.cls, t.label, t.trigger_frame, t.image, *t.bbox, t.enter_frame, t.exit_frame])

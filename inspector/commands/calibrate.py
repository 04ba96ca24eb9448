"""`inspector calibrate camera|roi|belt|threshold|sharpness`: commission a line.

camera: intrinsics and distortion from chessboard photos -> calib.yaml (``calibration.camera`` in the config).
roi: region, trigger line, direction and px/mm, in a window or from flags -> roi.yaml (``roi.file``).
belt: belt speed measured on tracked parts of a recording, and the gate delay it implies.
threshold: the decision threshold for a target defect recall, written into the model's metadata.
sharpness: a model.min_sharpness from recordings of the line's own parts (sharp, and optionally blurred).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ground.errors import UserError
from inspector.commands.argtypes import count, positive

if TYPE_CHECKING:
    from inspector.config import InspectorConfig
    from inspector.records import Part


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("calibrate", help="calibrate camera, ROI/trigger, belt speed, decision threshold or blur limit")
    cal = p.add_subparsers(dest="what", metavar="WHAT", required=True)

    c = cal.add_parser("camera", help="intrinsics and lens distortion from chessboard photos")
    c.add_argument("--images", required=True, help="folder of chessboard photos taken with the line camera")
    c.add_argument("--board", required=True, help="inner corners COLSxROWS, e.g. 9x6 (squares minus one)")
    c.add_argument("--square-mm", type=positive, required=True, help="side of one square, mm")
    c.add_argument("--out", default="calib.yaml", help="calibration file to write (default: calib.yaml)")
    c.add_argument("--fix-k3", action="store_true", help="keep k3 = 0 (ordinary lenses, few views)")
    c.add_argument("--min-images", type=count, default=3, help="views with the board found that are required")
    c.set_defaults(func=run_camera)

    r = cal.add_parser("roi", help="ROI, trigger line, belt direction and px/mm (window, or flags headless)")
    r.add_argument("--source", help="video, camera index, image or folder to take a frame from")
    r.add_argument("--frame-size", help="WxH when there is no --source (headless flags only)")
    r.add_argument("--config", help="runtime configuration: source settings and the starting ROI")
    r.add_argument("--roi", help="x,y,w,h in px: headless, no window")
    r.add_argument("--trigger", type=float, help="trigger line as a fraction of the ROI along the belt (0-1)")
    r.add_argument("--direction", choices=("right", "left", "down", "up"), help="belt travel in the image")
    r.add_argument("--ref-px", type=positive, help="a length measured on the image, px (headless)")
    r.add_argument("--ref-mm", type=positive, help="the real length of the reference, mm")
    r.add_argument("--out", default="roi.yaml", help="ROI file to write (default: roi.yaml)")
    r.add_argument("--timeout", type=positive, help="window: give up after this many seconds")
    r.set_defaults(func=run_roi)

    b = cal.add_parser("belt", help="belt speed from tracked parts in a recording, and the gate delay")
    b.add_argument("--source", required=True, help="recording (or camera) of parts riding the belt")
    b.add_argument("--config", help="runtime configuration: ROI, detection, tracking, gate distance")
    b.add_argument("--px-per-mm", type=positive, help="image scale (default: from the config's roi.file)")
    b.add_argument("--camera-to-gate-mm", type=positive, help="trigger line to gate (default: from the config)")
    b.add_argument("--max-frames", type=count, help="stop after this many frames (live cameras)")
    b.add_argument("--min-points", type=count, default=5, help="frames a part must be tracked in to count")
    b.add_argument("--json", help="also write the measurement to this JSON file")
    b.set_defaults(func=run_belt)

    t = cal.add_parser("threshold", help="decision threshold for a target defect recall, into the model")
    t.add_argument("--model", required=True, help="model file (.pt, .onnx, .engine) whose metadata to update")
    t.add_argument("--data", required=True, help="labelled validation images: one sub-folder per model class")
    t.add_argument("--target-recall", type=float, required=True, help="share of defects to catch, e.g. 0.99")
    t.add_argument("--dry-run", action="store_true", help="report the threshold, write nothing")
    t.set_defaults(func=run_threshold)

    h = cal.add_parser("sharpness", help="model.min_sharpness from recordings of the line's own parts")
    h.add_argument("--source", required=True, help="recording (or camera) of good parts passing in focus")
    h.add_argument("--blurred", help="recording of parts as blurred as the line must not pass (optional)")
    h.add_argument("--config", help="runtime configuration: model, ROI, detection, tracking")
    h.add_argument("--model", help="model file (default: the config's model.path); only its input size matters")
    h.add_argument("--max-frames", type=count, help="stop each recording after this many frames (live cameras)")
    h.add_argument("--json", help="also write the figures to this JSON file")
    h.set_defaults(func=run_sharpness)


# --- camera -------------------------------------------------------------------------------------------------


def run_camera(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from calibration.camera import calibrate, list_images, parse_board, save_calibration
    from ground.errors import UserError

    board = parse_board(args.board)
    if args.square_mm <= 0:
        raise UserError(f"--square-mm {args.square_mm}: must be positive")
    files = list_images(args.images)
    calib = calibrate(files, board, args.square_mm, min_images=args.min_images, fix_k3=args.fix_k3)
    out = save_calibration(calib, args.out)

    con = Console()
    table = Table(title=f"Reprojection error per image ({len(calib.per_image)} of {len(files)} used)")
    table.add_column("image")
    table.add_column("RMS error, px", justify="right")
    worst = max(e.error_px for e in calib.per_image)
    for e in calib.per_image:
        mark = " (worst)" if e.error_px == worst and len(calib.per_image) > 1 else ""
        table.add_row(e.image, f"{e.error_px:.3f}{mark}")
    con.print(table)
    if calib.not_found:
        con.print(f"[yellow]board not found in {len(calib.not_found)} image(s):[/] {', '.join(calib.not_found)}")
    K = calib.K
    con.print(
        f"frame {calib.frame_size[0]}x{calib.frame_size[1]}  fx={K[0, 0]:.2f} fy={K[1, 1]:.2f} "
        f"cx={K[0, 2]:.2f} cy={K[1, 2]:.2f} px"
    )
    con.print("distortion k1 k2 p1 p2 k3: " + " ".join(f"{v:.5f}" for v in calib.dist_coeffs))
    high = "  [yellow](high: > 1 px; check the board size and image sharpness)[/]" if calib.rms_px > 1 else ""
    con.print(f"RMS reprojection error: {calib.rms_px:.3f} px{high}")
    con.print(f"wrote {out}; set `calibration: {{camera: {out}}}` in the configuration")
    return 0


# --- roi ----------------------------------------------------------------------------------------------------


def _first_frame(uri: str, cfg) -> object:
    from ground.errors import UserError
    from inspector.capture.sources import open_source

    src = open_source(uri, cfg.source)
    try:
        frame = None
        for _ in range(50):  # cameras may need a few frames before the first good one
            frame = src.read()
            if frame is not None:
                break
    finally:
        src.close()
    if frame is None:
        raise UserError(f"--source {uri}: no frame could be read")
    return frame


def _undistort(cfg, frame_size: tuple[int, int]):
    if not cfg.calibration.camera:
        return None
    from calibration.camera import load_undistorter

    return load_undistorter(cfg.calibration.camera, frame_size)


def _config(path: str | None):
    from inspector.config import InspectorConfig, load_config

    return load_config(path) if path else InspectorConfig()


def run_roi(args: argparse.Namespace) -> int:
    from calibration.roi import EditorState, make_roi, parse_rect, save_roi
    from ground.errors import UserError

    cfg = _config(args.config)
    frame = None
    if args.source:
        frame = _first_frame(args.source, cfg)
        size = (frame.shape[1], frame.shape[0])
        und = _undistort(cfg, size)
        if und is not None:
            frame = und.apply(frame)
    elif args.frame_size:
        try:
            size = tuple(int(v) for v in args.frame_size.lower().split("x"))
            assert len(size) == 2 and min(size) > 0
        except (ValueError, AssertionError):
            raise UserError(f"--frame-size {args.frame_size!r}: expected WxH, e.g. 1280x720") from None
    else:
        raise UserError("give --source (a video, camera or image) or, headless, --frame-size WxH with --roi")
    start = cfg.roi
    if cfg.roi.file:  # recalibrating: start from the artefact the config uses
        from calibration.roi import load_roi

        start = load_roi(cfg.roi.file, size)
    direction = args.direction or start.direction
    trigger = start.trigger if args.trigger is None else args.trigger
    if args.roi:
        roi = make_roi(size, parse_rect(args.roi), direction, trigger, args.ref_px, args.ref_mm)
    else:
        if frame is None:
            raise UserError("the ROI window needs a frame: give --source, or --roi x,y,w,h to run headless")
        from calibration.roi_window import edit_roi

        w0 = start.width or size[0] - start.x
        h0 = start.height or size[1] - start.y
        st = EditorState(size, (start.x, start.y, w0, h0), direction, trigger)
        ref_mm = args.ref_mm
        reference = getattr(start, "reference", None)
        if reference is not None:
            st.ref_points = (reference.p1, reference.p2)
            ref_mm = reference.mm if ref_mm is None else ref_mm
        roi = edit_roi(frame, st, ref_mm, timeout_s=args.timeout)
    out = save_roi(roi, args.out)
    scale = f"{roi.px_per_mm:.4f} px/mm" if roi.px_per_mm else "no px/mm (give --ref-px/--ref-mm)"
    print(
        f"ROI {roi.x},{roi.y} {roi.width}x{roi.height} in {size[0]}x{size[1]}, direction {roi.direction}, "
        f"trigger {roi.trigger:.3f}, {scale}"
    )
    print(f"wrote {out}; set `roi: {{file: {out}}}` in the configuration")
    return 0


# --- belt ---------------------------------------------------------------------------------------------------


def collect_tracks(cfg: InspectorConfig, uri: str, max_frames: int | None = None) -> tuple[dict, str, int]:
    """Run the runtime's own detector and tracker over ``uri``; -> ({part: [(t_s, x, y)]}, direction, frames).

    Positions are recorded only while a part's box is clear of the ROI edge: a clipped box's centre lags.
    """
    from inspector.capture.sources import open_source
    from inspector.detect import Detector, Roi
    from inspector.track import Tracker

    src = open_source(uri, cfg.source)
    tracks: dict[int, list[tuple[float, float, float]]] = {}
    n = 0
    roi = detector = tracker = und = None
    t0 = time.monotonic()
    try:
        while max_frames is None or n < max_frames:
            frame = src.read()
            if frame is None:
                break
            if roi is None:
                size = (frame.shape[1], frame.shape[0])
                und = _undistort(cfg, size)
                roi = Roi.from_config(cfg.roi, size)
                detector, tracker = Detector(cfg.detection, roi), Tracker(cfg.tracking, roi)
            if und is not None:
                frame = und.apply(frame)
            t = n / src.fps if (not src.live and src.fps) else time.monotonic() - t0
            tracker.update(detector.detect(frame), n)
            for tr in tracker.tracks:
                if tr.last_frame == n and not tr.det.clipped:
                    tracks.setdefault(tr.track_id, []).append((t, *tr.det.centroid))
            n += 1
    finally:
        src.close()
    return tracks, (roi.direction if roi else cfg.roi.direction), n


def _px_per_mm(args: argparse.Namespace, cfg) -> float | None:
    if args.px_per_mm is not None:
        return args.px_per_mm
    if cfg.roi.file:
        from calibration.roi import load_roi

        return load_roi(cfg.roi.file).px_per_mm
    return None


def run_belt(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from calibration.belt import measure_belt

    cfg = _config(args.config)
    ppm = _px_per_mm(args, cfg)
    gate_mm = args.camera_to_gate_mm
    if gate_mm is None and args.config:
        gate_mm = cfg.gate.camera_to_gate_mm
    tracks, direction, frames = collect_tracks(cfg, args.source, args.max_frames)
    m = measure_belt(tracks, direction, px_per_mm=ppm, camera_to_gate_mm=gate_mm, min_points=args.min_points)

    table = Table(title=f"Belt speed from {m.parts} parts ({frames} frames, moving {direction})")
    for col in ("", "median", "std", "min", "max"):
        table.add_column(col, justify="right")
    table.add_row("px/s", *(f"{v:.2f}" for v in (m.speed_px_s, m.std_px_s, m.min_px_s, m.max_px_s)))
    if ppm:
        table.add_row("mm/s", *(f"{v / ppm:.2f}" for v in (m.speed_px_s, m.std_px_s, m.min_px_s, m.max_px_s)))
    con = Console()
    con.print(table)
    con.print(f"spread across parts: {m.spread_pct:.2f} % (std / median)")
    if m.speed_mm_s is None:
        con.print("no px/mm: give --px-per-mm or a config whose roi.file has a reference, for mm/s and the gate delay")
    elif m.gate_delay_ms is None:
        con.print(f"belt speed {m.speed_mm_s:.1f} mm/s; give --camera-to-gate-mm for the gate delay")
    else:
        con.print(
            f"gate delay {m.gate_delay_ms:.1f} ms for {m.camera_to_gate_mm:g} mm trigger-to-gate; "
            f"set `gate: {{belt_speed_mm_s: {m.speed_mm_s:.1f}}}` in the configuration"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({**m.to_dict(), "frames": frames, "direction": direction}, indent=2))
    return 0


# --- threshold ----------------------------------------------------------------------------------------------


def run_threshold(args: argparse.Namespace) -> int:
    from calibration.threshold import calibrate_threshold, write_threshold

    choice = calibrate_threshold(args.model, args.data, args.target_recall)
    print(
        f"threshold {choice.threshold:.4f} for target recall {choice.target_recall:.3f}: recall {choice.recall:.4f}, "
        f"precision {choice.precision:.4f}, false rejects {100 * choice.false_reject_rate:.2f} % "
        f"({choice.n_defect} defect / {choice.n_ok} OK images)"
    )
    if args.dry_run:
        print("dry run: nothing written")
        return 0
    out = write_threshold(args.model, choice, args.data)
    print(f"wrote the threshold into {out}")
    return 0


# --- sharpness ----------------------------------------------------------------------------------------------


def collect_sharpness(cfg: InspectorConfig, uri: str, max_frames: int | None = None) -> list[float]:
    """Each part's sharpness as the runtime measures it (its pipeline, model input size), over ``uri``."""
    from inspector.line import Line, LineRequest

    c = cfg.model_copy(deep=True)
    c.source.uri, c.source.realtime, c.model.min_sharpness = uri, False, None
    values: list[float] = []

    class _Collect:
        def on_part(self, part: Part) -> None:
            if part.sharpness is not None:
                values.append(part.sharpness)

        def close(self) -> None:
            pass

    with Line(c, LineRequest(view=False, with_outputs=False), sinks=[_Collect()], keep_crops=False) as line:
        line.run(max_frames=max_frames)
    if line.capture is not None and line.capture.error:
        raise UserError(f"{uri}: {line.capture.error}")
    return values


def run_sharpness(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from calibration.sharpness import suggest_min_sharpness

    cfg = _config(args.config)
    if args.model:
        cfg.model.path = args.model
    sharp = collect_sharpness(cfg, args.source, args.max_frames)
    blurred = collect_sharpness(cfg, args.blurred, args.max_frames) if args.blurred else None
    ch = suggest_min_sharpness(sharp, blurred)
    table = Table(title="Part sharpness (variance of the Laplacian at the model's input size)")
    for col in ("recording", "parts", "min", "p1", "p5", "p50", "max"):
        table.add_column(col, justify="right")
    q = np.percentile(sharp, [0, 1, 5, 50, 100])
    table.add_row("sharp", str(ch.n_sharp), *(f"{v:.1f}" for v in q))
    if blurred:
        q = np.percentile(blurred, [0, 1, 5, 50, 100])
        table.add_row("blurred", str(ch.n_blurred), *(f"{v:.1f}" for v in q))
    con = Console()
    con.print(table)
    con.print(
        f"min_sharpness {ch.value:g} ({ch.rule}): rejects {100 * ch.sharp_rejected:.1f} % of the sharp parts"
        + ("" if ch.blurred_passed is None else f", passes {100 * ch.blurred_passed:.1f} % of the blurred")
    )
    if ch.separable is False:
        con.print(
            "[bold red]warning:[/] the blurred parts overlap the sharp ones: no threshold separates them; "
            "shorten the exposure, light the belt better or refocus, then measure again"
        )
    con.print(f"set `model: {{min_sharpness: {ch.value:g}}}` in the configuration")
    if args.json:
        Path(args.json).write_text(json.dumps(ch.to_dict(), indent=2) + "\n")
    return 0

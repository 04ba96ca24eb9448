"""`inspector simulate`: render a conveyor video with ground truth from a labelled image folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from ground.errors import UserError
from inspector.commands.argtypes import count, index, inside, positive, share
from inspector.resources import demo_dir


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}': expected WIDTHxHEIGHT, e.g. 640x480") from None
    return w, h


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate",
        help="render a conveyor line video with ground truth (for replay tests and benchmarks)",
        description="Render a moving belt carrying parts from a class-folder image set. Writes the video, a "
        "truth CSV (part_id, class, label, trigger_frame, image, bbox) and a matching runtime config.",
    )
    p.add_argument("--images", default=str(demo_dir()), help="class-folder image set (default: demo/)")
    p.add_argument("--out", default="line.mp4", help="video to write: .mp4 (mp4v) or .avi (MJPG)")
    p.add_argument("--truth", default=None, help="truth CSV (default: the video path with .csv)")
    p.add_argument("--config-out", default=None, help="matching runtime config (default: the video path with .yaml)")
    p.add_argument("--model", default=None, help="model path to put in the written config")
    p.add_argument("--fps", type=positive, default=30.0, help="frame rate")
    p.add_argument("--size", type=_size, default=(640, 480), help="frame size WxH")
    p.add_argument("--speed", type=positive, default=320.0, help="belt speed in px/s")
    p.add_argument("--parts", type=count, default=20, help="how many parts")
    p.add_argument("--seed", type=index, default=0, help="random seed: the same seed renders the same line")
    p.add_argument("--direction", choices=("right", "left", "down", "up"), default="right", help="belt travel")
    p.add_argument("--trigger", type=inside, default=0.5, help="trigger line as a fraction of the ROI along travel")
    p.add_argument("--min-gap", type=index, default=40, help="smallest gap between parts along the belt, px")
    p.add_argument("--max-gap", type=index, default=None, help="largest gap, px (default: 2.5 part sizes)")
    p.add_argument("--part-scale", type=inside, default=0.3, help="part size as a fraction of the smaller frame side")
    p.add_argument(
        "--mask",
        choices=("square", "circle"),
        default="square",
        help="part outline: square = the whole photo (as trained), circle = the part alone",
    )
    p.add_argument(
        "--belt",
        choices=("green", "dark"),
        default="green",
        help="green: colour segmentation; dark: brightness threshold",
    )
    p.add_argument("--defect-fraction", type=share, default=None, help="fraction of defects (default: as in --images)")
    p.add_argument("--blur", action="store_true", help="motion blur (half-frame exposure)")
    p.add_argument("--no-noise", action="store_true", help="no sensor noise")
    p.add_argument("--no-lighting", action="store_true", help="no lighting drift")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from inspector.simulate import render_line

    out = Path(args.out)
    if out.suffix.lower() not in (".mp4", ".avi"):
        raise UserError(f"--out {out}: expected a .mp4 or .avi file name")
    from inspector.outputs import check_distinct

    check_distinct(
        {
            "--out": out,
            "--truth": args.truth or out.with_suffix(".csv"),
            "--config-out": args.config_out or out.with_suffix(".yaml"),
        },
        {"--images": args.images, "--model": args.model},
    )
    spec = render_line(
        args.images,
        out,
        args.truth,
        fps=args.fps,
        size=args.size,
        speed_px_s=args.speed,
        parts=args.parts,
        seed=args.seed,
        direction=args.direction,
        trigger=args.trigger,
        blur=args.blur,
        noise=not args.no_noise,
        lighting=not args.no_lighting,
        part_scale=args.part_scale,
        min_gap_px=args.min_gap,
        max_gap_px=args.max_gap,
        mask=args.mask,
        belt=args.belt,
        defect_fraction=args.defect_fraction,
    )
    cfg = spec.write_config(args.config_out or out.with_suffix(".yaml"), model=args.model)
    defects = sum(p.label == "defect" for p in spec.parts)
    print(
        f"{spec.video}: {len(spec.parts)} parts ({defects} defect), {spec.frames} frames "
        f"({spec.frames / spec.fps:.1f} s at {spec.fps:g} fps, {spec.size[0]}x{spec.size[1]})"
    )
    print(f"truth: {spec.truth}")
    print(f"config: {cfg}   run: inspector run --source {spec.video} --config {cfg} --truth {spec.truth}")
    return 0

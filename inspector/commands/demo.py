"""`inspector demo`: the first command to try. Renders a short line from the bundled `demo/` images with the
line simulator (cached, so the second run starts at once), then inspects it with the shipped ONNX model: a
window when a display exists, a terminal dashboard otherwise; summary and scorecard at the end.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

from ground.errors import UserError

log = logging.getLogger(__name__)

DEMO_PARTS = 24
DEMO_SEED = 0
DEMO_FPS = 30.0
DEMO_SIZE = (640, 480)


def register(sub: argparse._SubParsersAction) -> None:
    from inspector.commands.run import add_arguments

    p = sub.add_parser(
        "demo",
        help="render a short demo line from the bundled sample and inspect it (no camera needed)",
        description="Render a short demo line from demo/ and inspect it with the shipped model.",
    )
    add_arguments(p, sources=False)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from inspector.commands.run import build_config, inspect

    args.source = None
    args.camera = None
    cfg = build_config(args)
    cfg, truth = prepare_demo(cfg)
    args.watch_pace = True
    return inspect(cfg, args, truth=args.truth or truth)


def demo_images() -> Path:
    from inspector.commands.run import ROOT

    d = ROOT / "demo"
    if not d.is_dir() or not any(p.is_dir() and any(p.iterdir()) for p in d.iterdir()):
        raise UserError(f"demo images not found in {d} (class folders such as ok_front/, def_front/); "
                        "reinstall, or run `inspector run --source VIDEO` on your own line")
    return d


def cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "inspector" / "demo"
    try:
        base.mkdir(parents=True, exist_ok=True)
        probe = base / ".write-test"
        probe.write_text("")
        probe.unlink()
        return base
    except OSError:
        return Path(tempfile.mkdtemp(prefix="inspector-demo-"))


def prepare_demo(cfg):
    """Render (or reuse) the demo line and return a configuration that matches it, plus its truth CSV.

    Model, threshold, gate, log and display settings come from ``cfg``; the source, ROI, detection and
    tracking come from the rendered line.
    """
    try:
        from inspector.simulate import render_line
    except ImportError:
        raise UserError("the line simulator (inspector.simulate) is not available in this install, so there "
                        "is no demo line to render; run `inspector run --source VIDEO` instead") from None
    from inspector.config import InspectorConfig

    images = demo_images()
    out = cache_dir()
    stem = f"demo_{DEMO_PARTS}p_s{DEMO_SEED}_{DEMO_SIZE[0]}x{DEMO_SIZE[1]}"
    video, truth = out / f"{stem}.mp4", out / f"{stem}.csv"
    stamp = out / f"{stem}.json"
    key = {"images": sorted(str(q.relative_to(images)) for q in images.rglob("*") if q.is_file())}
    line = _cached(stamp, key) if video.is_file() and truth.is_file() else None
    if line is None:
        print(f"rendering the demo line ({DEMO_PARTS} parts from {images}) to {video} ...", file=sys.stderr)
        spec = render_line(images, video, truth, fps=DEMO_FPS, size=DEMO_SIZE, parts=DEMO_PARTS, seed=DEMO_SEED)
        line = spec.config_dict()
        stamp.write_text(json.dumps({**key, "config": line}))
    merged = cfg.model_dump()
    for key in ("source", "roi", "detection", "tracking"):
        merged[key] = {**merged[key], **line.get(key, {})}
    merged["roi"]["file"] = None
    merged["source"]["uri"] = str(video)
    demo_cfg = InspectorConfig.model_validate(merged)
    return demo_cfg, str(truth)


def _cached(stamp: Path, key: dict) -> dict | None:
    """The rendered line's config when the cache was made from the same demo images."""
    try:
        data = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return None
    if data.get("images") != key["images"]:
        return None
    return data.get("config")

"""The demo line: a short line rendered from the bundled sample with the line simulator, cached so the second
run starts at once, and the configuration that matches it. `inspector demo` and `inspector run --source demo`
both inspect it; a library module (not a command) so that neither command imports the other.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from ground.errors import UserError
from inspector.config import InspectorConfig
from inspector.resources import demo_dir

log = logging.getLogger(__name__)

DEMO_PARTS = 24
DEMO_SEED = 0
DEMO_FPS = 30.0
DEMO_SIZE = (640, 480)


def demo_images() -> Path:
    """The bundled sample, or a UserError saying what to do when this install lacks it."""
    d = demo_dir()
    if not d.is_dir() or not any(p.is_dir() and any(p.iterdir()) for p in d.iterdir()):
        raise UserError(
            f"demo images not found in {d} (class folders such as ok_front/, def_front/); "
            "reinstall, or run `inspector run --source VIDEO` on your own line"
        )
    return d


def cache_dir() -> Path:
    """Where the rendered demo line is kept between runs (a fresh temporary folder when that is not writable)."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "inspector" / "demo"
    try:
        base.mkdir(parents=True, exist_ok=True)
        probe = base / ".write-test"
        probe.write_text("")
        probe.unlink()
        return base
    except OSError:
        return Path(tempfile.mkdtemp(prefix="inspector-demo-"))


def prepare_demo(cfg: InspectorConfig, announce: Callable[[str], None] | None = None) -> tuple[InspectorConfig, str]:
    """Render (or reuse) the demo line and return a configuration that matches it, plus its truth CSV.

    Model, threshold, gate, log and display settings come from ``cfg``; the source, ROI, detection and
    tracking come from the rendered line. ``announce`` is told when a render starts (it takes a while).
    """
    from inspector.simulate import render_line  # cv2 drawing code: loaded only when the demo runs

    images = demo_images()
    out = cache_dir()
    stem = f"demo_{DEMO_PARTS}p_s{DEMO_SEED}_{DEMO_SIZE[0]}x{DEMO_SIZE[1]}"
    video, truth = out / f"{stem}.mp4", out / f"{stem}.csv"
    stamp = out / f"{stem}.json"
    key = {"images": sorted(str(q.relative_to(images)) for q in images.rglob("*") if q.is_file())}
    line = _cached(stamp, key) if video.is_file() and truth.is_file() else None
    if line is None:
        log.info("rendering the demo line (%d parts from %s) to %s", DEMO_PARTS, images, video)
        if announce is not None:
            announce(f"rendering the demo line ({DEMO_PARTS} parts from {images}) to {video} ...")
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

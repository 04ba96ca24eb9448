"""`inspector check-config FILE`: validate a runtime configuration; exit 0 (valid) or 1.

Valid means the line would start with it: the schema, and every file the configuration names (the model, a
recorded source, the calibration artefacts, the MQTT CA file) is there and loads. Hardware that may be absent
where the file is checked (the camera, the serial port) is not opened.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check-config", help="validate a configuration file (exit 0 valid, 1 invalid)")
    p.add_argument("file", help="YAML configuration")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ground.yamlconf import all_errors, read_yaml
    from inspector.config import InspectorConfig, load_config

    errors = all_errors(InspectorConfig, args.file)
    if not errors:
        errors = _artefact_errors(load_config(args.file))
    for line in errors:
        print(f"error: {line}", file=sys.stderr)
    if errors:
        return 1
    data, _ = read_yaml(args.file)
    if not data:
        print(f"{args.file}: valid, but empty (no settings): the built-in defaults apply to every section")
        return 0
    print(f"{args.file}: valid")
    return 0


def _artefact_errors(cfg) -> list[str]:
    """The files the configuration refers to must exist (and the calibration files load); their frame size is
    checked at run time."""
    from calibration.camera import load_calibration
    from calibration.roi import load_roi
    from engines.base import BACKENDS
    from ground.errors import UserError
    from inspector.resources import resolve_model

    errors = []
    model = resolve_model(cfg.model.path)
    if model.suffix.lower() not in BACKENDS:
        errors.append(
            f"model.path {model}: unknown model file type {model.suffix or '(none)'!r}; supported: "
            f"{', '.join(BACKENDS)}"
        )
    elif not model.is_file():
        errors.append(f"model.path {model}: model file not found; check the path or train/export one first")
    if (problem := source_file_problem(cfg.source.uri)) is not None:
        errors.append(problem)
    if cfg.mqtt.tls_ca and not Path(cfg.mqtt.tls_ca).is_file():
        errors.append(f"mqtt.tls_ca {cfg.mqtt.tls_ca}: CA certificate file not found; give the broker's CA (PEM)")
    for path, load in ((cfg.calibration.camera, load_calibration), (cfg.roi.file, load_roi)):
        if path:
            try:
                load(path)
            except UserError as exc:
                errors.append(str(exc))
    return errors


def source_file_problem(uri: str) -> str | None:
    """source.uri names a recording or an image folder that is not there (None: fine, or not a file at all)."""
    from inspector.capture.sources import camera_index_problem, scheme_problem

    u = uri.strip()
    if (problem := camera_index_problem(u)) is not None:
        return f"source.uri: {problem}"
    if "://" in u and not u.startswith("gst:") and (problem := scheme_problem(u)) is not None:
        return problem
    if u == "demo" or u.isdigit() or u.startswith(("gst:", "/dev/video")) or "://" in u:
        return None
    if not Path(u).expanduser().exists():
        return f"source.uri {u}: no such file or folder; give a video file, an image folder, a camera index or a URL"
    return None

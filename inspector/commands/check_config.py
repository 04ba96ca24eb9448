"""`inspector check-config FILE`: validate a runtime configuration; exit 0 (valid) or 1."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check-config", help="validate a configuration file (exit 0 valid, 1 invalid)")
    p.add_argument("file", help="YAML configuration")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ground.yamlconf import all_errors
    from inspector.config import InspectorConfig, load_config

    errors = all_errors(InspectorConfig, args.file)
    if not errors:
        errors = _artefact_errors(load_config(args.file))
    for line in errors:
        print(f"error: {line}", file=sys.stderr)
    if errors:
        return 1
    print(f"{args.file}: valid")
    return 0


def _artefact_errors(cfg) -> list[str]:
    """The calibration files the configuration refers to must load too (their frame size is checked at run time)."""
    from calibration.camera import load_calibration
    from calibration.roi import load_roi
    from ground.errors import UserError

    errors = []
    for path, load in ((cfg.calibration.camera, load_calibration), (cfg.roi.file, load_roi)):
        if path:
            try:
                load(path)
            except UserError as exc:
                errors.append(str(exc))
    return errors

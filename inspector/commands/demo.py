"""`inspector demo`: the first command to try. Renders a short line from the bundled `demo/` images with the
line simulator (cached, so the second run starts at once), then inspects it with the shipped ONNX model: a
window when a display exists, a terminal dashboard otherwise; summary and scorecard at the end.
"""

from __future__ import annotations

import argparse
import sys

from inspector.commands.lineargs import add_arguments, build_config, check_truth, inspect


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="render a short demo line from the bundled sample and inspect it (no camera needed)",
        description="Render a short demo line from demo/ and inspect it with the shipped model.",
    )
    add_arguments(p, sources=False)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from inspector.demoline import prepare_demo

    check_truth(args.truth)
    cfg, truth = prepare_demo(build_config(args), announce=lambda msg: print(msg, file=sys.stderr))
    return inspect(cfg, args, truth=args.truth or truth, watch_pace=True)

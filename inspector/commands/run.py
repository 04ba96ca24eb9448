"""`inspector run`: inspect a line - find each part, classify it once, signal the gate, log every verdict.

A thin adapter: flags -> configuration -> :class:`inspector.line.Line` (which starts the stages in order and
stops them in reverse, on the source's end, q in the window, Ctrl-C or SIGTERM). With no source (or
``source.uri: demo``) it runs the demo line, like `inspector demo`.
"""

from __future__ import annotations

import argparse
import sys

from inspector.commands.lineargs import add_arguments, build_config, check_truth, inspect


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="inspect a line: find each part, classify it once, signal the gate",
        description="Inspect a line. CLI flags override the configuration file.",
    )
    add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = build_config(args)
    truth = args.truth
    check_truth(truth)
    if cfg.source.uri != "demo":
        return inspect(cfg, args, truth=truth, reloadable=True)
    from inspector.demoline import prepare_demo

    cfg, demo_truth = prepare_demo(cfg, announce=lambda msg: print(msg, file=sys.stderr))
    return inspect(cfg, args, truth=truth or demo_truth, watch_pace=True)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use: inspector run")

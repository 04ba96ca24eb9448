"""`inspector` command line. Each sub-command lives in :mod:`inspector.commands` and imports its heavy
dependencies (torch, onnxruntime, ...) only when it runs, so `inspector --help` is instant and the
runtime never needs torch.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from ground.errors import UserError

# Explicit table: sub-command module names under inspector.commands, in --help order.
COMMANDS = (
    "run",
    "demo",
    "simulate",
    "train",
    "evaluate",
    "build_engine",
    "bench_engine",
    "calibrate",
    "gate_sim",
    "log",
    "review",
    "check_config",
    "service",
    "doctor",
    "serve",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="inspector", description="Real-time camera line inspection for manufacturing quality control."
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:  # every one ships: a missing module is a broken install and fails loudly
        importlib.import_module(f"inspector.commands.{name}").register(sub)
    _verbose_everywhere(sub)
    return parser


def _verbose_everywhere(sub: argparse._SubParsersAction) -> None:
    """`-v` after the sub-command too (`inspector run -v`, `inspector log export -v`), as people type it.

    SUPPRESS as the default: a sub-command without -v leaves the count given before it alone."""
    for parser in set(sub.choices.values()):
        if not any("-v" in a.option_strings for a in parser._actions):  # noqa: SLF001
            parser.add_argument(
                "-v", "--verbose", action="count", default=argparse.SUPPRESS, help="more log output (-vv: debug)"
            )
        for action in parser._actions:  # noqa: SLF001 - nested sub-commands (log export, calibrate roi)
            if isinstance(action, argparse._SubParsersAction):
                _verbose_everywhere(action)


#: OpenCV's and FFmpeg's own log lines ("[ WARN:0@0.01] ...", "moov atom not found") go to stderr ahead of our one
#: `error:` line and say the same thing less clearly: quiet unless -v (an operator's own setting wins)
QUIET_NATIVE_LOGS = {"OPENCV_LOG_LEVEL": "ERROR", "OPENCV_FFMPEG_LOGLEVEL": "8"}  # 8: AV_LOG_FATAL


def quiet_native_logs(argv: list[str]) -> list[str]:
    """Set before any command imports cv2 (OpenCV reads them once) -> the variables set here."""
    if any(a == "--verbose" or (a.startswith("-v") and set(a[1:]) == {"v"}) for a in argv):
        return []
    added = [key for key in QUIET_NATIVE_LOGS if key not in os.environ]
    for key in added:
        os.environ[key] = QUIET_NATIVE_LOGS[key]
    return added


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    added = quiet_native_logs(argv)
    try:
        return _main(argv)
    finally:  # a caller in the same process (a test, a tool) keeps its own environment for what it starts next
        for key in added:
            os.environ.pop(key, None)


def _main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(_default_to_run(argv, _registered(parser)))
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _default_to_run(argv: list[str], commands: set[str]) -> list[str]:
    """`inspector [-v] [run options]` with no sub-command means `inspector [-v] run [run options]`."""
    n = 0
    while n < len(argv) and (argv[n] == "--verbose" or (argv[n].startswith("-v") and set(argv[n][1:]) == {"v"})):
        n += 1
    rest = argv[n:]
    if "run" not in commands or (rest and (rest[0] in commands or rest[0] in ("-h", "--help"))):
        return argv
    return [*argv[:n], "run", *rest]


def _registered(parser: argparse.ArgumentParser) -> set[str]:
    for action in parser._actions:  # noqa: SLF001 - argparse has no public accessor
        if isinstance(action, argparse._SubParsersAction):
            return set(action.choices)
    return set()


if __name__ == "__main__":
    sys.exit(main())

"""`inspector gate-sim`: a simulated gate controller on a pty, for commissioning a line without hardware."""

from __future__ import annotations

import argparse
import signal
import sys
import threading


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "gate-sim",
        help="run a simulated reject-gate controller on a pty (speaks the real protocol, records diversions)",
        description="Creates a pty pair and serves the gate protocol on it. Point the inspector at the printed "
        "path (`inspector run --serial PATH`). With --port, the pty is reached through that path (a symlink "
        "that stays the same across restarts). Diversions and mode changes go to --record as JSON lines.",
    )
    p.add_argument("--port", help="symlink path to create for the pty (default: print the /dev/pts path)")
    p.add_argument("--record", help="append every diversion, mode change and received line here (JSONL)")
    p.add_argument("--fail-safe", choices=("divert", "stop"), default="divert",
                   help="what to do when the host's heartbeats stop, until the host sends RUN (default divert)")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds (default: Ctrl-C)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from engines.errors import UserError
    from inspector.gate.sim import run_simulator

    if args.port and Path(args.port).exists() and not Path(args.port).is_symlink():
        raise UserError(f"--port {args.port}: exists and is not a symlink; give a new path (it is created)")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if args.duration is not None:
        threading.Timer(args.duration, stop.set).start()

    def ready(port: str) -> None:
        print(f"gate simulator listening on {port} (fail-safe {args.fail_safe}); Ctrl-C to stop", flush=True)

    try:
        counters = run_simulator(args.port, args.record, "DIVERT" if args.fail_safe == "divert" else "STOP",
                                 stop, ready)
    except KeyboardInterrupt:
        stop.set()
        return 130
    print("gate simulator stopped: " + ", ".join(f"{k} {v}" for k, v in counters.items()), file=sys.stderr)
    return 0

"""`inspector gate-sim`: a simulated gate controller on a pty, for commissioning a line without hardware."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from inspector.commands.argtypes import positive


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "gate-sim",
        help="run a simulated reject-gate controller on a pty (speaks the real protocol, records diversions)",
        description="Serves the gate protocol as a controller would. Without --port it creates a pty and prints "
        "its path; point the inspector at it (`inspector run --serial PATH`). --port NEW_PATH: the same, reached "
        "through a symlink at that path (stable across restarts). --port DEVICE: serve on an existing serial "
        "device or pty (a USB-serial cable to the inspector's PC, one end of a socat pair). Diversions and mode "
        "changes go to --record as JSON lines.",
    )
    p.add_argument("--port", help="a serial device or pty to serve on, or a new symlink path for a fresh pty")
    p.add_argument("--record", help="append every diversion, mode change and received line here (JSONL)")
    p.add_argument(
        "--fail-safe",
        choices=("divert", "stop"),
        default="divert",
        help="what to do when the host's heartbeats stop, until the host sends RUN (default divert)",
    )
    p.add_argument("--duration", type=positive, default=None, help="stop after this many seconds (default: Ctrl-C)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from inspector.gate.sim import run_simulator

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if args.duration is not None:
        threading.Timer(args.duration, stop.set).start()

    def ready(port: str) -> None:
        print(f"gate simulator listening on {port} (fail-safe {args.fail_safe}); Ctrl-C to stop", flush=True)

    try:
        counters = run_simulator(
            args.port, args.record, "DIVERT" if args.fail_safe == "divert" else "STOP", stop, ready
        )
    except KeyboardInterrupt:
        stop.set()
        return 130
    print("gate simulator stopped: " + ", ".join(f"{k} {v}" for k, v in counters.items()), file=sys.stderr)
    return 0

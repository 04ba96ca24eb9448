#!/usr/bin/env python3
"""Cost of the notifier on the line's hot path: ServiceNotifier.frame_arrived() / inspection_progressed()
per call, next to a bare time.monotonic() and an empty method call, and the whole per-frame hook the line's run
loop calls (Line._progressed: the progress clock plus the check for a pending SIGHUP reload, none pending).
(The WATCHDOG=1 datagrams go out on the notifier's own thread, every half watchdog period, so they are not on
the hot path and not measured here.)

    .venv/bin/python bench/notify_hotpath.py [--calls 2000000]

Prints one table; nothing is asserted (figures go to docs/BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inspector.service.notify import ServiceNotifier  # noqa: E402


class _Empty:
    def call(self) -> None:
        pass


def per_call_ns(fn, calls: int, repeats: int = 5) -> float:
    """Best of ``repeats`` runs: the least disturbed by other jobs on the machine."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter_ns() - t0) / calls)
    return best


def _line_hook_ns(svc: ServiceNotifier, calls: int) -> float:
    """The real Line's per-frame hook, with a real Reloader armed (its thread waiting for a SIGHUP)."""
    from inspector.config import InspectorConfig
    from inspector.line import Line
    from inspector.service.reload import Reloader

    cfg = InspectorConfig()
    line = Line(cfg)  # not started: only its hook is timed
    line.notifier = svc
    line.reloader = Reloader(
        lambda: cfg, cfg, label="bench", model_threshold=0.5, frame_size=lambda: None, current_roi=lambda: None
    )
    try:
        return per_call_ns(line._progressed, calls)  # noqa: SLF001 - the hook itself is what is measured
    finally:
        line.reloader.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=2_000_000)
    args = ap.parse_args()
    svc = ServiceNotifier(env={"NOTIFY_SOCKET": "@inspector-bench-unbound", "WATCHDOG_USEC": "10000000"})
    rows = [
        ("empty method call", per_call_ns(_Empty().call, args.calls)),
        ("time.monotonic()", per_call_ns(time.monotonic, args.calls)),
        ("frame_arrived()", per_call_ns(svc.frame_arrived, args.calls)),
        ("inspection_progressed()", per_call_ns(svc.inspection_progressed, args.calls)),
    ]
    rows.append(("Line._progressed() (reload armed)", _line_hook_ns(svc, args.calls)))
    svc.close()
    print(f"{'call':34} {'ns per call':>12}")
    for name, ns in rows:
        print(f"{name:34} {ns:12.1f}")
    print(f"(best of 5 x {args.calls} calls; Python {sys.version.split()[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

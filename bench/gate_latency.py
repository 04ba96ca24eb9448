#!/usr/bin/env python3
"""Reject gate latency: verdict -> REJ bytes on the wire, and fire-time accuracy, over a real pty.

The controller is `inspector gate-sim` in its own process (as a real controller is its own device); it stamps
each received line with time.monotonic_ns() - the same clock the inspector stamps verdicts with - so
"on the wire" = the instant the line is readable at the controller's end of the pty. Every part is a defect,
so every part produces a REJ. Also reported: the host-side "write() returned" latency, and the fire-time error
of the command (receipt + delay - gate time) and of the simulator's actual firing (its own wake-up lateness
included: a microcontroller has microseconds of that, a loaded PC more).

    .venv/bin/python bench/gate_latency.py [--parts 1000] [--rate 30] [--timebase clock|time] [--json out.json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from inspector.config import GateConfig  # noqa: E402
from inspector.gate.actuator import GateActuator  # noqa: E402
from inspector.records import Part, Verdict  # noqa: E402


def pct(values: list[float], q: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, round(q / 100 * (len(v) - 1)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=30.0, help="parts per second, all defects (default: 30 fps line)")
    ap.add_argument(
        "--timebase",
        choices=("clock", "time"),
        default="clock",
        help="REJT on the controller's clock (default) or REJ 'N ms after receipt'",
    )
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="gate-bench-"))
    port, record = tmp / "ttyGATE", tmp / "gate.jsonl"
    sim = subprocess.Popen(
        [sys.executable, "-m", "inspector", "gate-sim", "--port", str(port), "--record", str(record)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert "listening" in sim.stdout.readline()
    # the defaults: 300 mm at 200 mm/s = 1.5 s of travel, 115200 baud
    cfg = GateConfig(queue_size=4096, timebase=args.timebase)
    done = threading.Event()
    results = {}

    def on_result(r) -> None:
        results[r.part_id] = r
        if len(results) == args.parts:
            done.set()

    act = GateActuator(cfg, str(port), on_result)
    try:
        if not act.running.wait(10):
            raise SystemExit("controller never reached RUN")
        parts = []
        t0 = time.monotonic()
        for i in range(args.parts):
            now = time.monotonic_ns()
            p = Part(i, i, now - 30_000_000, (0, 0, 1, 1), Verdict.DEFECT, 0.9, "defect", t_verdict_ns=now)
            parts.append(p)
            act.on_part(p)
            delay = t0 + (i + 1) / args.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        done.wait(10 + args.parts / args.rate)
    finally:
        act.close(drain_s=0.0)
        sim.terminate()
        sim.wait(timeout=10)
    events = [json.loads(x) for x in record.read_text().splitlines()]
    rx: dict[int, int] = {}
    for e in events:  # the first copy of each command (a retry would measure the retry, not the verdict)
        if e["event"] == "rx" and e["type"] in ("REJ", "REJT", "REJE"):
            rx.setdefault(int(e["fields"][0]), e["t_rx_ns"])
    fire = {e["part"]: e for e in events if e["event"] == "fire"}
    wire = [(rx[p.part_id] - p.t_verdict_ns) / 1e6 for p in parts if p.part_id in rx]
    host = [ns / 1e6 for ns in act.wire_ns]
    sched = [
        (fire[p.part_id]["scheduled_ns"] - p.t_capture_ns - act.travel_ns) / 1e6 for p in parts if p.part_id in fire
    ]
    actual = [(fire[p.part_id]["t_ns"] - p.t_capture_ns - act.travel_ns) / 1e6 for p in parts if p.part_id in fire]
    out = {
        "date": dt.date.today().isoformat(),
        "machine": platform.node(),
        "python": platform.python_version(),
        "parts": args.parts,
        "rate_hz": args.rate,
        "timebase": args.timebase,
        "verdict_to_wire_ms": {"p50": pct(wire, 50), "p99": pct(wire, 99), "max": max(wire), "n": len(wire)},
        "verdict_to_write_returned_ms": {"p50": pct(host, 50), "p99": pct(host, 99), "max": max(host)},
        "fire_error_commanded_ms": {
            "p50": pct(sched, 50),
            "p99": pct([abs(x) for x in sched], 99),
            "max_abs": max(abs(x) for x in sched),
        },
        "fire_error_actual_ms": {
            "p50": pct(actual, 50),
            "p99": pct([abs(x) for x in actual], 99),
            "max_abs": max(abs(x) for x in actual),
        },
        "fired": len(fire),
        "statuses": {
            s: sum(1 for r in results.values() if r.status == s) for s in {r.status for r in results.values()}
        },
        "retries": act.stats["retries"],
        "missed": act.stats["missed"],
    }
    print(json.dumps(out, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0 if out["missed"] == 0 and len(fire) == args.parts else 1


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""The gate controller's compiled firmware in simavr: fire accuracy, emulator speed, size, cycles per command.

Figures (docs/BENCHMARKS.md, "Gate firmware in an AVR emulator"):

- size: flash and RAM of gate_controller.elf (avr-size; ATmega328P: 32 KiB flash, 2 KiB RAM);
- speed: the emulator flat out (--free-run, firmware idle) as emulated seconds per wall second, and the paced
  line run's CPU use and how far emulated time fell behind wall time;
- line: ``--parts`` parts (all defects, every one a REJT) at ``--rate`` parts/s through the inspector's
  actuator on the emulator's pty; each fire read off the diverter pin (pulse 20 ms, so fires 33 ms apart
  stay separate edges):
  fire - commanded on the emulated clock (the diverter edge minus the cycle millis() turned to the commanded
  value) and fire - gate time on the host's clock (the part's capture time + belt travel);
- cycles: the CPU cycles the firmware's loop() spends on each command type (the pass that handled it, less
  an idle pass; each type sent ``--per-command`` times, 15 ms apart, straight onto the pty; the rejects fire
  200 ms later, so a few are queued at any time).

    .venv/bin/python bench/firmware_emu.py [--parts 1000] [--rate 30] [--free-run-s 10] [--json out.json]
"""

from __future__ import annotations

import argparse
import bisect
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "firmware" / "emu"))

import gate_emu  # noqa: E402

from inspector.config import GateConfig  # noqa: E402
from inspector.gate import protocol as P  # noqa: E402
from inspector.gate.actuator import GateActuator  # noqa: E402
from inspector.gate.sim import PtyLink  # noqa: E402
from inspector.records import Part, Verdict  # noqa: E402

DIVERTER = 7
CYC_PER_US = gate_emu.F_CPU // 1_000_000


def pct(values: list[float], q: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, round(q / 100 * (len(v) - 1)))]


def summary(values: list[float], digits: int = 3) -> dict:
    return {
        "p50": round(pct(values, 50), digits),
        "p99": round(pct(values, 99), digits),
        "max": round(max(values), digits),
        "min": round(min(values), digits),
        "n": len(values),
    }


def size(elf: Path) -> dict:
    out = subprocess.run(["avr-size", "-A", str(elf)], capture_output=True, text=True, check=True).stdout
    sec = {w[0]: int(w[1]) for w in (ln.split() for ln in out.splitlines()) if len(w) >= 3 and w[0].startswith(".")}
    flash, ram = sec[".text"] + sec.get(".data", 0), sec.get(".data", 0) + sec.get(".bss", 0)
    return {
        "flash_bytes": flash,
        "flash_pct": round(100 * flash / 32768, 1),
        "ram_bytes": ram,
        "ram_pct": round(100 * ram / 2048, 1),
        "text": sec[".text"],
        "data": sec.get(".data", 0),
        "bss": sec.get(".bss", 0),
    }


def free_run(elf: Path, exe: Path, tmp: Path, seconds: float) -> dict:
    link = PtyLink(tmp / "ttyFREE")
    emu = gate_emu.Emulator(elf, exe, tmp / "free.trace", fd=link.master, free_run=True, seconds=seconds)
    try:
        emu.wait(timeout=seconds * 20 + 30)
    finally:
        emu.close()
        link.close()
    end = emu.trace().end
    return {
        "emulated_s": end["emu_s"],
        "wall_s": round(end["wall_s"], 3),
        "cpu_s": round(end["cpu_s"], 3),
        "speed_x_real_time": round(end["emu_s"] / end["wall_s"], 2),
        "loop_pass_cycles_min": int(end["loop_min"]),
        "loop_pass_cycles_median": int(end["loop_median"]),
    }


def line(elf: Path, exe: Path, tmp: Path, n: int, rate: float) -> dict:
    link = PtyLink(tmp / "ttyLINE")
    emu = gate_emu.Emulator(elf, exe, tmp / "line.trace", fd=link.master, loop_log=True)
    results: dict = {}
    done = threading.Event()

    def on_result(r) -> None:
        results[r.part_id] = r
        if len(results) == n:
            done.set()

    cfg = GateConfig(queue_size=4096, pulse_ms=20.0)  # defaults otherwise: 1.5 s of belt travel, REJT
    act = GateActuator(cfg, link.port, on_result)
    parts: list[Part] = []
    try:
        if not act.running.wait(10):
            raise SystemExit("the emulated controller never reached RUN")
        t0 = time.monotonic()
        for i in range(n):
            now = time.monotonic_ns()
            p = Part(i, i, now - 30_000_000, (0, 0, 1, 1), Verdict.DEFECT, 0.9, "defect", t_verdict_ns=now)
            parts.append(p)
            act.on_part(p)
            delay = t0 + (i + 1) / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # the line's pace
        done.wait(10 + n / rate)
    finally:
        act.close(drain_s=0.0)
        emu.close()
        link.close()
    tr = emu.trace()
    commanded: dict[int, int] = {}
    for ln in tr.rx:
        if ln.valid and len(ln.fields) == 4 and ln.type == P.REJT:
            commanded.setdefault(int(ln.fields[2]), int(ln.fields[3]))  # the first copy (a retry: the same time)
    t_first = parts[0].t_capture_ns + act.travel_ns - 200_000_000
    ups = [e for e in tr.pin(DIVERTER) if e.value == 1 and e.wall_ns >= t_first]
    up_ms = [e.millis for e in ups]  # non-decreasing (no reset in a run)
    pin7 = [e for e in tr.pin(DIVERTER) if e.wall_ns >= t_first]
    pin7_ms = [e.millis for e in pin7]
    emu_us, host_ms, merged, ms_late, no_fire = [], [], 0, 0, 0
    for p in parts:
        t = commanded.get(p.part_id)
        k = bisect.bisect_left(up_ms, t) if t is not None else len(ups)
        if k == len(ups):
            no_fire += 1
            continue
        e = ups[k]
        reached = e.reached_cycle(t)
        if reached is None:  # no edge of its own: inside the pulse before it, or a millisecond or more late
            j = bisect.bisect_right(pin7_ms, t) - 1  # the pin's last change at or before millis() read t
            if j >= 0 and pin7[j].value == 1:
                merged += 1  # the diverter was already out (a pulse extended): its fire has no edge to read
            else:
                ms_late += 1
            continue
        emu_us.append((e.cycle - reached) / CYC_PER_US)
        host_ms.append((e.wall_ns - p.t_capture_ns - act.travel_ns) / 1e6)
    # millis() against the emulated clock: least squares over every (cycle millis() took its value, value)
    slope = statistics.linear_regression([float(e.millis) for e in ups], [float(e.millis_cycle) for e in ups]).slope
    drift_ppm = (slope / (1000 * CYC_PER_US) - 1) * 1e6  # > 0: millis() slow
    statuses: dict[str, int] = {}
    for r in results.values():
        statuses[r.status] = statuses.get(r.status, 0) + 1
    end = tr.end
    fire_cost = [c for c in (pass_cost(sorted(tr.loops), end["loop_median"], e.cycle) for e in ups) if c is not None]
    return {
        "fire_cycles (the pass that set the pin and queued FIRED)": cost_summary(fire_cost) if fire_cost else None,
        "parts": n,
        "rate_hz": rate,
        "diverter_edges": len(ups),
        "rejt_commands": len(commanded),
        "fire_minus_commanded_emulated_us": summary(emu_us, 1),
        "fired_a_ms_or_more_late": ms_late,
        "fired_inside_the_previous_pulse": merged,
        "no_edge_at_or_after_its_time": no_fire,
        "fire_minus_gate_time_host_ms": summary(host_ms, 2),
        "fired_late_ms_reported": {
            str(k): sum(1 for r in results.values() if r.fire_late_ms == k)
            for k in sorted({r.fire_late_ms for r in results.values()}, key=str)
        },
        "statuses": statuses,
        "missed": act.stats["missed"],
        "retries": act.stats["retries"],
        "millis_vs_emulated_drift_ppm": round(drift_ppm, 1),
        "paced": {
            "emulated_s": round(end["emu_s"], 3),
            "wall_s": round(end["wall_s"], 3),
            "cpu_s": round(end["cpu_s"], 3),
            "cpu_pct_of_one_core": round(100 * end["cpu_s"] / end["wall_s"], 1),
            "max_lag_behind_wall_us": int(end["max_lag_us"]),
            "slices_more_than_1ms_behind": int(end["behind_1ms"]),
            "slices": int(end["slices"]),
        },
    }


def bad_crc(seq: int) -> bytes:
    good = P.encode(seq, P.HB, 1)
    wrong = b"01" if good[-3:-1] == b"00" else b"00"
    return good[:-3] + wrong + b"\n"


COMMANDS = {  # name -> (seq, part id, controller ms now) -> line; part ids unique so none is taken for a retry
    "HB": lambda s, i, ms: P.encode(s, P.HB, 123456),
    "REJ (scheduled)": lambda s, i, ms: P.encode(s, P.REJ, i, 200),
    "REJT (scheduled)": lambda s, i, ms: P.encode(s, P.REJT, i, ms + 200),
    "ST?": lambda s, i, ms: P.encode(s, P.STQ),
    "CFG": lambda s, i, ms: P.encode(s, P.CFG, "D", 600, 20, 1000),
    "HOLD": lambda s, i, ms: P.encode(s, P.HOLD, "BENCH"),
    "RUN": lambda s, i, ms: P.encode(s, P.RUN),
    "bad CRC (NAK)": lambda s, i, ms: bad_crc(s),
}


def pass_cost(passes: list[tuple[int, int]], idle: float, at_cycle: int) -> float | None:
    """Cycles beyond an idle pass of the loop() pass that handled an event at ``at_cycle``: the pass it
    happened in (if that one was long) or the next one (a line is read at the top of loop())."""
    cand = [n for s, n in passes if s <= at_cycle < s + n]
    cand += [n for s, n in passes if at_cycle <= s <= at_cycle + 2 * idle][:1]
    return max(cand) - idle if cand else None


def cost_summary(vals: list[float]) -> dict:
    return {
        "cycles_p50": int(statistics.median(vals)),
        "cycles_max": int(max(vals)),
        "n": len(vals),
        "us_p50": round(statistics.median(vals) / CYC_PER_US, 1),
    }


def cycles(elf: Path, exe: Path, tmp: Path, per: int) -> dict:
    link = PtyLink(tmp / "ttyCYC")
    emu = gate_emu.Emulator(elf, exe, tmp / "cycles.trace", fd=link.master, loop_log=True)
    sent: list[tuple[str, int]] = []  # (command name, seq)
    try:
        if not emu.wait_for(lambda t: t.tx, 5.0):
            raise SystemExit("the emulated firmware never spoke")
        fd = os.open(link.port, os.O_RDWR | os.O_NOCTTY)  # the host's end of the pty
        seq, part = 1, 1
        os.write(fd, P.encode(0, P.CFG, "D", 600, 20, 1000))  # heartbeats once a second: fewer busy passes
        time.sleep(0.05)
        for _ in range(per):  # a line every 15 ms keeps the link up (link timeout 600 ms)
            for name, make in COMMANDS.items():
                hb = [ln for ln in emu.trace().tx if ln.type == P.HB][-1]  # its clock, as of its last heartbeat
                ms = int(hb.fields[5]) + (time.monotonic_ns() - hb.wall_ns) // 1_000_000
                os.write(fd, make(seq, part, ms))
                sent.append((name, seq))
                seq, part = seq + 1, part + 1
                time.sleep(0.015)  # one command at a time: its pass stands alone
        time.sleep(0.3)
        os.close(fd)
    finally:
        emu.close()
        link.close()
    tr = emu.trace()
    idle = tr.end["loop_median"]
    passes = sorted(tr.loops)  # only passes longer than 1.5x the shortest are logged
    by_seq = {int(ln.fields[0]): ln for ln in tr.rx if ln.fields[0].isdigit()}  # bad CRC lines too, on purpose
    out: dict[str, dict] = {}
    for name in COMMANDS:
        vals = [pass_cost(passes, idle, by_seq[s].cycle) for n, s in sent if n == name and s in by_seq]
        vals = [v for v in vals if v is not None]
        if vals:
            out[name] = cost_summary(vals)
    out["idle pass"] = {"cycles_p50": int(idle), "us_p50": round(idle / CYC_PER_US, 1)}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=30.0, help="parts per second, all defects (default 30)")
    ap.add_argument("--free-run-s", type=float, default=10.0, help="emulated seconds flat out (default 10)")
    ap.add_argument("--per-command", type=int, default=40, help="samples per command type (default 40)")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()
    why = gate_emu.missing_tools()
    if why:
        print(f"firmware_emu: cannot run: {why}", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="fw-emu-bench-"))
    elf, exe = gate_emu.build(tmp)
    out = {
        "date": dt.date.today().isoformat(),
        "machine": platform.node(),
        "python": platform.python_version(),
        "size": size(elf),
    }
    print(json.dumps({"size": out["size"]}), flush=True)
    out["free_run"] = free_run(elf, exe, tmp, args.free_run_s)
    print(json.dumps({"free_run": out["free_run"]}), flush=True)
    out["cycles_per_command"] = cycles(elf, exe, tmp, args.per_command)
    print(json.dumps({"cycles_per_command": out["cycles_per_command"]}), flush=True)
    out["line"] = line(elf, exe, tmp, args.parts, args.rate)
    print(json.dumps(out, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    ln = out["line"]
    # every part fired: an edge of its own in its millisecond, or inside the previous part's pulse
    ok = (
        ln["missed"] == 0
        and ln["fired_a_ms_or_more_late"] == 0
        and ln["no_edge_at_or_after_its_time"] == 0
        and ln["statuses"].get("fired", 0) == args.parts
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Soak: `inspector run --realtime` on a looped rendered line for a long time, watching the process for leaks.

A line is rendered once from casting images (demo/ by default) and replayed in a loop at the recorded pace
(``source.loop``), through the whole runtime: capture thread, pipeline, the ONNX engine, the reject gate
actuator over a real pty to `inspector gate-sim` (the simulated controller, in its own process like a real
one, so the inspector process is measured alone) and the SQLite defect log.
Every ``--sample-s`` seconds the child's RSS, open file descriptors and thread count are read with psutil.
At the end the child gets SIGTERM (a clean stop: parts in flight are flushed, the gate drains, the log closes).

Pass/fail (stated bounds):
  - RSS: least-squares slope over the samples after the warm-up (the last 20 min of a 30-min run; the last
    2/3 of a shorter one) below ``--rss-slope-mb`` MB per 10 min (default 5);
  - file descriptors and threads: the median of the last 5 samples no higher than the median of the first 5
    after the warm-up (no steady growth), and the spread after the warm-up at most 2 (transient fds/threads);
  - no lost part: the events, matched to the truth unrolled over the loops, have no missed, split,
    duplicated or spurious part; every event has a defect log row; every rejected part has a gate result.

Writes ``summary.json`` and ``samples.csv`` to ``--out`` and prints a short table. Exit 0 when every bound
holds, 1 otherwise.

    .venv/bin/python bench/soak.py [--duration-min 30] [--model models/casting_seedcnn.onnx] [--out soak-out]
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import platform
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from inspector.events import read_events  # noqa: E402
from inspector.scorecard import score  # noqa: E402
from inspector.simulate import read_truth, render_line  # noqa: E402


def count_frames(video: str) -> int:
    cap = cv2.VideoCapture(video)
    n = 0
    while cap.grab():
        n += 1
    cap.release()
    return n


def unrolled_truth(truth: list[dict], frames_per_loop: int, cutoff: int) -> list[dict]:
    """The truth of every loop (seq keeps counting across loops), parts triggered before frame ``cutoff``."""
    out = []
    loop = 0
    while loop * frames_per_loop < cutoff:
        shift = loop * frames_per_loop
        for t in truth:
            if int(t["trigger_frame"]) + shift < cutoff:
                r = dict(t)
                r["part_id"] = len(out) + 1
                for k in ("trigger_frame", "enter_frame", "exit_frame"):
                    r[k] = int(t[k]) + shift
                out.append(r)
        loop += 1
    return out


def slope_per_10min(t_s: list[float], v: list[float]) -> float:
    if len(t_s) < 3:
        return 0.0
    return float(np.polyfit(np.asarray(t_s), np.asarray(v), 1)[0] * 600.0)


def sample(proc: psutil.Process, t0: float) -> dict:
    with proc.oneshot():
        return {
            "t_s": round(time.monotonic() - t0, 1),
            "rss_mb": round(proc.memory_info().rss / 2**20, 2),
            "fds": proc.num_fds(),
            "threads": proc.num_threads(),
            "cpu_s": round(sum(proc.cpu_times()[:2]), 2),
        }


def log_rows(db: Path) -> tuple[int, int, dict[str, int]]:
    """(rows, rows with a gate status, count per gate status) in the defect log."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT count(*), count(gate_status) FROM parts").fetchone()
        status = dict(con.execute("SELECT COALESCE(gate_status, '-'), count(*) FROM parts GROUP BY 1"))
    finally:
        con.close()
    return int(rows[0]), int(rows[1]), status


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration-min", type=float, default=30.0, help="how long to run (minutes)")
    ap.add_argument("--sample-s", type=float, default=10.0, help="sampling period (s)")
    ap.add_argument(
        "--warmup-s",
        type=float,
        default=None,
        help="samples ignored at the start (default: a third of the run, at most 10 min)",
    )
    ap.add_argument("--model", default=str(ROOT / "models" / "casting_seedcnn.onnx"))
    ap.add_argument("--images", default=str(ROOT / "demo"), help="class folders of part images")
    ap.add_argument("--parts", type=int, default=40, help="parts per loop of the rendered line")
    ap.add_argument("--out", default="soak-out", help="folder for the line, events, log, samples and summary")
    ap.add_argument("--rss-slope-mb", type=float, default=5.0, help="bound: RSS growth, MB per 10 min")
    args = ap.parse_args()

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if not Path(args.model).is_file():
        print(f"error: model {args.model} not found; pass --model", file=sys.stderr)
        return 2
    spec = render_line(args.images, out / "line.mp4", out / "truth.csv", parts=args.parts, seed=7)
    cfg = spec.config_dict(model=args.model)
    cfg["source"]["loop"] = True
    cfg["log"] = {"db": str(out / "log" / "defects.db")}
    import yaml

    (out / "line.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    per_loop = count_frames(spec.video)
    events_path = out / "events.jsonl"
    port = out / "ttyGATE"
    cmd = [
        sys.executable,
        "-m",
        "inspector",
        "run",
        "--config",
        str(out / "line.yaml"),
        "--no-display",
        "--realtime",
        "--events",
        str(events_path),
        "--serial",
        str(port),
    ]
    duration = args.duration_min * 60.0
    warmup = args.warmup_s if args.warmup_s is not None else min(600.0, duration / 3)
    print(
        f"soak: {args.duration_min:g} min of {spec.video} ({per_loop} frames, {len(spec.parts)} parts per "
        f"loop) with {args.model}; sampling every {args.sample_s:g} s",
        flush=True,
    )

    for f in (events_path, out / "gate.jsonl", out / "log" / "defects.db"):
        f.unlink(missing_ok=True)
    gate = subprocess.Popen(
        [sys.executable, "-m", "inspector", "gate-sim", "--port", str(port), "--record", str(out / "gate.jsonl")],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=out,
    )
    first = gate.stdout.readline()
    if "listening on" not in first:
        gate.kill()
        print(f"error: inspector gate-sim did not start: {first!r}", file=sys.stderr)
        return 2
    with (out / "run.log").open("w") as logf:
        child = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, cwd=out)
        proc = psutil.Process(child.pid)
        t0 = time.monotonic()
        samples: list[dict] = []
        try:
            while time.monotonic() - t0 < duration and child.poll() is None:
                samples.append(sample(proc, t0))
                s = samples[-1]
                print(
                    f"  t {s['t_s']:7.1f} s  rss {s['rss_mb']:7.1f} MB  fds {s['fds']:3d}  threads "
                    f"{s['threads']:3d}  cpu {s['cpu_s']:7.1f} s",
                    flush=True,
                )
                time.sleep(max(0.0, min(args.sample_s, duration - (time.monotonic() - t0))))
            if child.poll() is None:
                samples.append(sample(proc, t0))
                child.send_signal(signal.SIGTERM)
            rc = child.wait(timeout=120)
        except BaseException:
            child.kill()
            child.wait()
            raise
        finally:
            gate.terminate()
            gate.wait(timeout=10)
    ran_s = time.monotonic() - t0

    problems: list[str] = []
    if rc != 0:
        problems.append(f"inspector run exited {rc} (see {out / 'run.log'})")
    with (out / "samples.csv").open("w", newline="") as fh:
        wr = csv.DictWriter(fh, fieldnames=list(samples[0]))
        wr.writeheader()
        wr.writerows(samples)
    steady = [s for s in samples if s["t_s"] >= warmup] or samples
    slope = slope_per_10min([s["t_s"] for s in steady], [s["rss_mb"] for s in steady])
    if slope > args.rss_slope_mb:
        problems.append(f"RSS grows {slope:.2f} MB/10 min after the warm-up (bound {args.rss_slope_mb:g})")
    growth = {}
    for key in ("fds", "threads"):
        vals = [s[key] for s in steady]
        first, last = float(np.median(vals[:5])), float(np.median(vals[-5:]))
        growth[key] = {"first": first, "last": last, "min": min(vals), "max": max(vals)}
        if last > first or max(vals) - min(vals) > 2:
            problems.append(f"{key}: {first:g} -> {last:g} (min {min(vals)}, max {max(vals)}) after the warm-up")

    summary_file = out / "events.summary.json"
    run_summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    events = read_events(events_path) if events_path.is_file() else []
    frames = int(run_summary.get("frames", 0))
    # the end of the run: score up to a cut-off frame that falls between parts (no trigger within 5 frames of
    # it), so a part judged just before the stop is neither counted missing nor mistaken for its neighbour
    every = unrolled_truth(read_truth(spec.truth), per_loop, frames)
    cutoff = frames - 8
    while any(abs(int(t["trigger_frame"]) - cutoff) <= 5 for t in every):
        cutoff -= 1
    truth = [t for t in every if int(t["trigger_frame"]) < cutoff]
    # parts on the belt at SIGTERM get a no-verdict with the stop reason: accounted for, not scored
    at_stop = [e for e in events if e["verdict"] == "no_verdict" and (e.get("reason") or "").startswith("run stopped")]
    scored = [e for e in events if e not in at_stop and int(e["frame_index"]) < cutoff]
    sc = score(scored, truth)
    card = sc.to_dict()
    lost = {k: card[k] for k in ("missed", "split", "duplicated", "spurious") if card.get(k)}
    if lost:
        problems.append(f"parts not judged exactly once: {lost}")
    db = out / "log" / "defects.db"
    rows, gated, gate_status = log_rows(db) if db.is_file() else (0, 0, {})
    if gate_status.get("missed"):
        problems.append(f"{gate_status['missed']} reject(s) never reached the gate controller")
    if rows != len(events):
        problems.append(f"defect log has {rows} rows for {len(events)} events")
    if gated != rows:
        problems.append(f"{rows - gated} log rows without a gate result")

    rss = [s["rss_mb"] for s in samples]
    result = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}",
        "command": " ".join(sys.argv),
        "child": " ".join(cmd),
        "model": args.model,
        "duration_s": round(ran_s, 1),
        "loops": round(frames / per_loop, 2) if per_loop else None,
        "frames": frames,
        "parts_expected": len(truth),
        "events": len(events),
        "in_flight_at_stop": len(at_stop),
        "scored_up_to_frame": cutoff,
        "log_rows": rows,
        "log_rows_with_gate_result": gated,
        "gate_status": gate_status,
        "verdicts": {k: run_summary.get(k) for k in ("ok", "defect", "no_verdict")},
        "dropped_frames": run_summary.get("dropped_frames"),
        "latency_p50_ms": run_summary.get("latency_p50_ms"),
        "latency_p99_ms": run_summary.get("latency_p99_ms"),
        "scorecard": {k: card.get(k) for k in ("found", "missed", "split", "duplicated", "spurious", "accuracy")},
        "samples": len(samples),
        "warmup_s": warmup,
        "rss_mb": {"start": rss[0], "after_warmup": steady[0]["rss_mb"], "end": rss[-1], "max": max(rss)},
        "rss_slope_mb_per_10min": round(slope, 3),
        "rss_slope_bound": args.rss_slope_mb,
        **growth,
        "cpu_s": samples[-1]["cpu_s"],
        "exit_code": rc,
        "problems": problems,
        "ok": not problems,
    }
    (out / "summary.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n| {'measure':<34} | {'value':>28} |\n| {'-' * 34} | {'-' * 28} |")
    for key, val in (
        ("duration s / loops", f"{result['duration_s']} / {result['loops']}"),
        ("frames / parts expected / events", f"{frames} / {len(truth)} / {len(events)}"),
        ("log rows (with gate result)", f"{rows} ({gated})"),
        ("gate outcomes", ", ".join(f"{k} {v}" for k, v in sorted(gate_status.items()))),
        (
            "missed / split / dup / spurious",
            "/".join(str(card.get(k)) for k in ("missed", "split", "duplicated", "spurious")),
        ),
        ("RSS start / after warm-up / end MB", f"{rss[0]:.1f} / {steady[0]['rss_mb']:.1f} / {rss[-1]:.1f}"),
        ("RSS slope MB/10 min (bound)", f"{slope:.2f} ({args.rss_slope_mb:g})"),
        ("fds first / last (min-max)", "{first:g} / {last:g} ({min}-{max})".format(**growth["fds"])),
        ("threads first / last (min-max)", "{first:g} / {last:g} ({min}-{max})".format(**growth["threads"])),
        ("latency p50 / p99 ms", f"{result['latency_p50_ms']} / {result['latency_p99_ms']}"),
    ):
        print(f"| {key:<34} | {val:>28} |")
    print("\nPASS" if not problems else "\nFAIL:\n  " + "\n  ".join(problems))
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())

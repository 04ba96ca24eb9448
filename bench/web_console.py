#!/usr/bin/env python3
"""What the live console costs the inspection: the demo line replayed flat out through the real Line, without
``--web`` and with ``--web`` while one client (a separate process) pulls the MJPEG stream and polls the JSON routes
at the page's own cadence (state 0.5 s, defects 1.5 s, scores 2 s), in the same run, alternating, ``--rounds``
times each.

Reported: frames/s of each run and the median ratio (goal: with --web at most 5% slower), the stream's frames/s
as the client received them, the inspection thread's time handing stream frames over (a snapshot) and the
encoder thread's time rendering and encoding them.

    .venv/bin/python bench/web_console.py [--frames 1500] [--rounds 3] [--stream-fps 10] [--json out.json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def client(port: int) -> int:
    """The client process: pull the stream and poll like the page until the console closes; JSON on stdout."""
    import threading

    stop = threading.Event()
    polls = {"n": 0, "errors": 0}

    def poll() -> None:
        due = {"/api/state": 0.0, "/api/defects": 0.0, "/api/scores": 0.0}
        every = {"/api/state": 0.5, "/api/defects": 1.5, "/api/scores": 2.0}
        while not stop.is_set():
            now = time.monotonic()
            for path, t in due.items():
                if now >= t:
                    due[path] = now + every[path]
                    try:
                        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                        c.request("GET", path)
                        c.getresponse().read()
                        c.close()
                        polls["n"] += 1
                    except OSError:
                        polls["errors"] += 1
            stop.wait(0.05)

    t = threading.Thread(target=poll, daemon=True)
    t.start()
    con = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    con.request("GET", "/stream.mjpg")
    resp = con.getresponse()
    frames, nbytes = 0, 0
    stamps: list[float] = []
    buf = b""
    while True:
        try:
            chunk = resp.read1(65536)
        except (OSError, http.client.HTTPException):
            break
        if not chunk:
            break
        buf += chunk
        while (i := buf.find(b"\xff\xd9")) >= 0:  # one JPEG ends
            frames += 1
            nbytes += i + 2
            stamps.append(time.monotonic())
            buf = buf[i + 2 :]
    stop.set()
    t.join(5)
    steady = stamps[5:]  # the rate once streaming: the first frames carry the encoder's start-up
    span = steady[-1] - steady[0] if len(steady) > 1 else 0.0
    fps = (len(steady) - 1) / span if span > 0 else 0.0
    print(json.dumps({"frames": frames, "bytes": nbytes, "span_s": span, "fps": fps, **polls}))
    return 0


def one_run(cfg, frames: int, web: bool, stream_fps: float, realtime: bool = False) -> dict:
    from inspector.line import Line, LineRequest

    c = cfg.model_copy(deep=True)
    c.web.enabled, c.web.port, c.web.stream_fps = web, 0, stream_fps
    c.source.realtime = realtime
    line = Line(c, LineRequest(view=False)).start()
    proc = None
    try:
        if web:
            proc = subprocess.Popen(
                [sys.executable, __file__, "--client", str(line.console.server.port)],
                stdout=subprocess.PIPE,
                text=True,
            )
            deadline = time.monotonic() + 30
            while line.console.state.clients < 1:  # the client is watching before the clock starts
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the stream client did not connect")
                time.sleep(0.02)
        w0, c0, t0 = time.perf_counter(), time.process_time(), time.thread_time()
        line.run(max_frames=frames)  # on this thread: the inspection thread
        wall, cpu, own = time.perf_counter() - w0, time.process_time() - c0, time.thread_time() - t0
        out = {"web": web, "realtime": realtime, "frames": line.stats.frames, "wall_s": wall, "cpu_s": cpu}
        out["inspection_thread_cpu_s"] = own
        out["fps"] = line.stats.frames / wall
        out["parts"] = line.summary.parts
        out["latency_p50_ms"] = line.summary.latency_pct(50)
        out["latency_p99_ms"] = line.summary.latency_pct(99)
        if web:
            st = line.console.state
            out["offered"] = st.frames_offered
            out["encoded"] = st.jpeg_seq
            out["handoff_ms_per_frame"] = 1e3 * st.handoff_s / max(1, st.frames_offered)  # inspection thread
            out["handoff_share_pct"] = 100.0 * st.handoff_s / wall
            out["render_encode_ms_per_frame"] = 1e3 * st.render_s / max(1, st.jpeg_seq)  # encoder thread
    finally:
        line.stop()
    if proc is not None:
        got, _ = proc.communicate(timeout=30)
        out["client"] = json.loads(got.strip().splitlines()[-1])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=1500, help="frames per run (the demo line, looped)")
    ap.add_argument("--rounds", type=int, default=3, help="runs of each kind, alternating")
    ap.add_argument("--stream-fps", type=float, default=10.0, help="web.stream_fps")
    ap.add_argument(
        "--realtime-frames",
        type=int,
        default=600,
        help="then one run of each at the recorded 30 frames/s: capture-to-verdict latency (0: skip)",
    )
    ap.add_argument("--json", help="write the figures here too")
    ap.add_argument("--client", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.client:
        return client(args.client)

    import logging

    logging.basicConfig(level=logging.ERROR)
    from inspector.config import InspectorConfig
    from inspector.demoline import prepare_demo

    cfg, _ = prepare_demo(InspectorConfig())
    cfg.display.enabled = "off"
    cfg.source.loop = True
    runs = []
    one_run(cfg, 100, False, args.stream_fps)  # warm-up: engine, caches
    for r in range(args.rounds):
        for web in (False, True) if r % 2 == 0 else (True, False):
            res = one_run(cfg, args.frames, web, args.stream_fps)
            runs.append(res)
            extra = ""
            if web:
                cl = res["client"]
                extra = (
                    f"  stream {cl['fps']:.1f} fps ({cl['frames']} frames); hand-off {res['handoff_ms_per_frame']:.3f}"
                    f" ms, render+encode {res['render_encode_ms_per_frame']:.2f} ms per stream frame"
                )
            print(f"round {r + 1} {'web   ' if web else 'no web'}: {res['fps']:7.1f} frames/s{extra}", flush=True)
    paced = []
    if args.realtime_frames:
        for web in (False, True):
            res = one_run(cfg, args.realtime_frames, web, args.stream_fps, realtime=True)
            paced.append(res)
            print(
                f"realtime {'web   ' if web else 'no web'}: latency p50 {res['latency_p50_ms']:.1f} ms, "
                f"p99 {res['latency_p99_ms']:.1f} ms over {res['parts']} parts, CPU {res['cpu_s']:.2f} s"
                + (f", stream {res['client']['fps']:.1f} fps" if web else ""),
                flush=True,
            )
    pairs = [runs[i : i + 2] for i in range(0, len(runs), 2)]  # the two runs of one round, back to back
    pair_ratio = statistics.median(
        next(x["fps"] for x in p if x["web"]) / next(x["fps"] for x in p if not x["web"]) for p in pairs
    )
    own_base = statistics.median(x["inspection_thread_cpu_s"] / x["frames"] for x in runs if not x["web"])
    own_web = statistics.median(x["inspection_thread_cpu_s"] / x["frames"] for x in runs if x["web"])
    base = statistics.median(x["fps"] for x in runs if not x["web"])
    webbed = statistics.median(x["fps"] for x in runs if x["web"])
    slower = 100.0 * (1.0 - webbed / base)
    cpu_base = statistics.median(x["cpu_s"] / x["frames"] for x in runs if not x["web"])
    cpu_web = statistics.median(x["cpu_s"] / x["frames"] for x in runs if x["web"])
    stream = statistics.median(x["client"]["fps"] for x in runs if x["web"])
    summary = {
        "date": dt.date.today().isoformat(),
        "machine": f"{platform.machine()} {platform.python_version()}",
        "frames_per_run": args.frames,
        "rounds": args.rounds,
        "stream_fps_setting": args.stream_fps,
        "fps_without_web_median": round(base, 1),
        "fps_with_web_median": round(webbed, 1),
        "slower_pct": round(slower, 1),
        "cpu_ms_per_frame_without": round(1e3 * cpu_base, 3),
        "cpu_ms_per_frame_with": round(1e3 * cpu_web, 3),
        "inspection_thread_cpu_ms_per_frame_without": round(1e3 * own_base, 3),
        "inspection_thread_cpu_ms_per_frame_with": round(1e3 * own_web, 3),
        "median_round_ratio_web_to_without": round(pair_ratio, 3),
        "stream_fps_delivered_median": round(stream, 2),
        "runs": runs,
        "realtime_runs": paced,
    }
    print(
        f"without --web {base:.1f} frames/s, with --web + 1 client {webbed:.1f} frames/s (medians): with/without "
        f"{webbed / base:.3f}; median of the rounds' ratios {pair_ratio:.3f} (goal >= 0.95: at most 5% slower); "
        "inspection thread CPU per frame "
        f"{1e3 * own_base:.3f} -> {1e3 * own_web:.3f} ms; process CPU per frame {1e3 * cpu_base:.2f} -> "
        f"{1e3 * cpu_web:.2f} ms; "
        f"stream delivered {stream:.1f} frames/s (max {args.stream_fps:g})"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

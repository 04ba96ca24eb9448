#!/usr/bin/env python3
"""MQTT publishing cost: what `mqtt` adds to the inspection thread, and how fast parts reach a subscriber.

Starts a real Mosquitto on a free localhost port (apt-get install mosquitto), a paho subscriber on PREFIX/parts,
and the runtime's own publisher (inspector.mqtt.MqttPublisher). Then:
  1. ``on_part`` time on the calling (inspection) thread, per part, for N parts offered as fast as possible
     (the queue is bounded: any part not accepted is counted as dropped, not waited for; the publisher thread
     competes for the interpreter lock meanwhile, which is what the p99 shows);
  2. at a line-like pace (``--rate`` parts/s): ``on_part`` time, parts received by the subscriber / offered,
     and publish-to-receipt latency p50/p99;
  3. the same ``on_part`` time with no broker at all (the line must not notice).

    .venv/bin/python bench/mqtt_publish.py [--parts 20000] [--rate 30] [--seconds 5]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import paho.mqtt.client as paho  # noqa: E402

from inspector.config import MqttConfig  # noqa: E402
from inspector.mqtt import MqttPublisher  # noqa: E402
from inspector.records import Part, Verdict  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def part(i: int) -> Part:
    t = time.monotonic_ns()
    return Part(
        i,
        i,
        t,
        (10, 20, 120, 120),
        Verdict.DEFECT if i % 3 == 0 else Verdict.OK,
        0.42,
        "def_front",
        t_infer_start_ns=t,
        t_verdict_ns=t + 3_000_000,
        sharpness=512.0,
    )


def offer(pub: MqttPublisher, n: int) -> np.ndarray:
    """Per-call on_part time, microseconds, on this thread."""
    out = np.empty(n)
    for i in range(n):
        p = part(i)
        t0 = time.perf_counter_ns()
        pub.on_part(p)
        out[i] = (time.perf_counter_ns() - t0) / 1e3
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", type=int, default=20000, help="parts offered flat out (step 1 and 3)")
    ap.add_argument("--rate", type=float, default=30.0, help="parts/s in the delivery step")
    ap.add_argument("--seconds", type=float, default=5.0, help="length of the delivery step")
    ap.add_argument("--json", type=Path, help="write the figures here too")
    a = ap.parse_args()
    mosquitto = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
    if mosquitto is None:
        print("mosquitto not found: apt-get install mosquitto")
        return 1
    res: dict = {
        "machine": f"{platform.node()} {platform.machine()}, Python {platform.python_version()}",
        "paho": __import__("paho.mqtt").mqtt.__version__,
        "date": time.strftime("%F %T"),
    }
    port = free_port()
    with tempfile.TemporaryDirectory() as d:
        conf = Path(d) / "m.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 0\n")
        broker = subprocess.Popen([mosquitto, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(100):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    time.sleep(0.05)
            got: list[tuple[float, int]] = []
            sub = paho.Client(paho.CallbackAPIVersion.VERSION2)
            ready = threading.Event()
            sub.on_connect = lambda c, *x: c.subscribe("bench/parts", qos=1)
            sub.on_subscribe = lambda *x: ready.set()
            sub.on_message = lambda c, u, m: got.append((time.time(), json.loads(m.payload)["part_id"]))
            sub.connect("127.0.0.1", port)
            sub.loop_start()
            ready.wait(5)
            cfg = MqttConfig(enabled=True, port=port, topic="bench", stats_interval_s=1.0, max_queued=100000)
            pub = MqttPublisher(cfg, model="bench")
            pub.connected.wait(5)
            # 1. flat out
            us = offer(pub, a.parts)
            deadline = time.monotonic() + 60
            while len(got) < a.parts - pub.dropped_queue and time.monotonic() < deadline:
                time.sleep(0.1)
            res["flat_out"] = {
                "parts": a.parts,
                "on_part_us_p50": round(float(np.percentile(us, 50)), 2),
                "on_part_us_p99": round(float(np.percentile(us, 99)), 2),
                "received": len(got),
                "dropped_at_queue": pub.dropped_queue,
            }
            # 2. at a line's pace: publish-to-receipt latency
            got.clear()
            sent: dict[int, float] = {}
            n = int(a.rate * a.seconds)
            paced_us = np.empty(n)
            t_next = time.monotonic()
            for i in range(n):
                p = part(10_000_000 + i)
                sent[p.part_id] = time.time()
                t0 = time.perf_counter_ns()
                pub.on_part(p)
                paced_us[i] = (time.perf_counter_ns() - t0) / 1e3
                t_next += 1.0 / a.rate
                time.sleep(max(0.0, t_next - time.monotonic()))
            time.sleep(1.0)
            lat = np.array([(t - sent[pid]) * 1e3 for t, pid in got if pid in sent])
            res["paced"] = {
                "rate": a.rate,
                "parts": n,
                "received": len(lat),
                "on_part_us_p50": round(float(np.percentile(paced_us, 50)), 2),
                "on_part_us_p99": round(float(np.percentile(paced_us, 99)), 2),
                "latency_ms_p50": round(float(np.percentile(lat, 50)), 2) if len(lat) else None,
                "latency_ms_p99": round(float(np.percentile(lat, 99)), 2) if len(lat) else None,
            }
            pub.close()
            sub.loop_stop()
            sub.disconnect()
        finally:
            broker.terminate()
            broker.wait(10)
    # 3. no broker at all
    pub = MqttPublisher(MqttConfig(enabled=True, port=free_port(), topic="bench", max_queued=100000), model="bench")
    us = offer(pub, a.parts)
    pub.close(timeout_s=0.5)
    res["no_broker"] = {
        "parts": a.parts,
        "on_part_us_p50": round(float(np.percentile(us, 50)), 2),
        "on_part_us_p99": round(float(np.percentile(us, 99)), 2),
        "dropped_at_queue": pub.dropped_queue,
        "connects": pub.stats["connects"],
    }
    print(json.dumps(res, indent=2))
    if a.json:
        a.json.write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Classify API throughput and latency at 1, 4 and 16 concurrent clients, next to the engine's own batched
throughput measured in the same run (docs/BENCHMARKS.md, "Classify API").

    .venv/bin/python bench/serve_api.py                      # shipped model, demo/ 300x300 JPEGs
    .venv/bin/python bench/serve_api.py --clients 1,4,16 --requests 3000 --seconds 30 --out runs/serve_api.json

The server is the real `inspector serve` in a child process on 127.0.0.1 (a free port); the load generator is
bounded in count (``--requests`` per level) and time (``--seconds`` per level) and talks to localhost only.
Each client thread keeps one HTTP/1.1 connection and sends one image per request, waiting for each answer
(closed loop). Goals (issue 14): API images/s at 16 clients >= 70% of the engine's batched images/s; p99 <= 25 ms
at 4 clients.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def engine_throughput(model: Path, jpegs: list[bytes], batch: int, seconds: float, threads: int | None) -> dict:
    """The engine alone on preprocessed batches of ``batch``, and decode + preprocess + engine (the offline
    path evaluate takes), in images/s."""
    from engines.base import load_engine
    from engines.decode import decode_image
    from engines.preprocess import infer_crops, preprocess_views

    opts = {"threads": threads} if threads else {}
    with load_engine(model, **opts) as engine:
        engine.warm_up(batch)
        imgs = [decode_image(jpegs[i % len(jpegs)]) for i in range(batch)]
        x, _ = preprocess_views(imgs, engine.meta)
        n, t0, c0 = 0, time.perf_counter(), time.process_time()
        while time.perf_counter() - t0 < seconds:
            engine.infer(x)
            n += batch
        engine_only = n / (time.perf_counter() - t0)
        engine_cpu = (time.process_time() - c0) / n
        n, t0, c0 = 0, time.perf_counter(), time.process_time()
        while time.perf_counter() - t0 < seconds:
            infer_crops(engine, [decode_image(jpegs[(n + i) % len(jpegs)]) for i in range(batch)])
            n += batch
        full = n / (time.perf_counter() - t0)
        full_cpu = (time.process_time() - c0) / n
    return {
        "batch": batch,
        "engine_images_per_s": engine_only,
        "decode_preprocess_engine_images_per_s": full,
        "engine_cpu_ms_per_image": engine_cpu * 1e3,
        "decode_preprocess_engine_cpu_ms_per_image": full_cpu * 1e3,
    }


def _request(jpeg: bytes) -> bytes:
    head = (
        "POST /v1/classify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
        f"Content-Length: {len(jpeg)}\r\n\r\n"
    )
    return head.encode() + jpeg


def _read_response(sock: socket.socket, buf: bytearray) -> tuple[int, bytes]:
    """One HTTP/1.1 response with a Content-Length (uvicorn's JSON answers): (status, body)."""
    while b"\r\n\r\n" not in buf:
        got = sock.recv(65536)
        if not got:
            raise ConnectionError("server closed the connection")
        buf += got
    end = buf.index(b"\r\n\r\n")
    head = bytes(buf[:end])
    status = int(head[9:12])
    m = re.search(rb"(?i)content-length:\s*(\d+)", head)
    n = int(m.group(1)) if m else 0
    while len(buf) < end + 4 + n:
        got = sock.recv(65536)
        if not got:
            raise ConnectionError("server closed the connection")
        buf += got
    body = bytes(buf[end + 4 : end + 4 + n])
    del buf[: end + 4 + n]
    return status, body


def load(port: int, requests: list[bytes], clients: int, max_requests: int, seconds: float) -> dict:
    """``clients`` closed-loop clients until ``max_requests`` answers or ``seconds`` pass (whichever first)."""
    lock = threading.Lock()
    issued = [0]
    lat: list[float] = []
    statuses: dict[int, int] = {}
    bodies: list[tuple[int, bytes]] = []
    deadline = time.perf_counter() + seconds
    start = threading.Barrier(clients + 1)

    def run(k: int) -> None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = bytearray()
        mine: list[float] = []
        start.wait()
        try:
            while time.perf_counter() < deadline:
                with lock:
                    i = issued[0]
                    if i >= max_requests:
                        break
                    issued[0] += 1
                t0 = time.perf_counter()
                sock.sendall(requests[i % len(requests)])
                status, body = _read_response(sock, buf)
                mine.append(time.perf_counter() - t0)
                with lock:
                    statuses[status] = statuses.get(status, 0) + 1
                    if i % 50 == 0:
                        bodies.append((i % len(requests), body))
        finally:
            sock.close()
            with lock:
                lat.extend(mine)

    threads = [threading.Thread(target=run, args=(k,), daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join(seconds + 60)
    wall = time.perf_counter() - t0
    a = np.array(lat) * 1e3
    return {
        "clients": clients,
        "requests": len(lat),
        "seconds": wall,
        "images_per_s": len(lat) / wall,
        "p50_ms": float(np.percentile(a, 50)),
        "p99_ms": float(np.percentile(a, 99)),
        "max_ms": float(a.max()),
        "statuses": statuses,
        "sampled_bodies": bodies,
    }


def overhead(port: int, server, n: int = 300) -> dict[str, float]:
    """Server CPU ms per request for routes that do no image work: the HTTP stack's own cost (one client)."""
    reqs = {
        "healthz": b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        "rejected_415": b"POST /v1/classify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\n"
        b"Content-Length: 1\r\n\r\nx",
    }
    out = {}
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = bytearray()
        for name, req in reqs.items():
            for _ in range(20):
                s.sendall(req)
                _read_response(s, buf)
            c0 = _cpu(server)
            for _ in range(n):
                s.sendall(req)
                _read_response(s, buf)
            out[name] = (_cpu(server) - c0) / n * 1e3
    return out


def _cpu(proc) -> float:
    """CPU seconds (user + system) the server process has used so far: a figure less bent by other jobs on a
    shared machine than wall time."""
    t = proc.cpu_times()
    return t.user + t.system


def scrape(port: int) -> dict[str, float]:
    """Batch-size sum and count from /metrics: the mean batch the engine saw."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        _, body = _read_response(s, bytearray())
    out = {}
    for line in body.decode().splitlines():
        for key in ("inspector_api_batch_size_sum", "inspector_api_batch_size_count"):
            if line.startswith(key + " "):
                out[key] = float(line.split()[-1])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "casting_seedcnn.onnx")
    ap.add_argument("--images", type=Path, default=ROOT / "demo", help="folder of JPEGs (default demo/: 300x300)")
    ap.add_argument("--clients", default="1,4,16")
    ap.add_argument("--requests", type=int, default=3000, help="most requests per level (default 3000)")
    ap.add_argument("--seconds", type=float, default=30.0, help="most seconds per level (default 30)")
    ap.add_argument("--engine-seconds", type=float, default=5.0)
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--max-wait-ms", type=float, default=2.0)
    ap.add_argument("--threads", type=int, default=1, help="engine threads, server and engine figure alike (default 1)")
    ap.add_argument("--http", default="auto", choices=("auto", "httptools", "h11"), help="the server's HTTP parser")
    ap.add_argument("--loop", default="auto", choices=("auto", "uvloop", "asyncio"), help="the server's event loop")
    ap.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = ap.parse_args()

    paths = sorted(p for p in args.images.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))
    if not paths:
        sys.exit(f"no JPEGs under {args.images}")
    jpegs = [p.read_bytes() for p in paths]
    import cv2

    shapes = {cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_UNCHANGED).shape[:2] for j in jpegs}
    levels = [int(c) for c in args.clients.split(",")]

    cmd = [sys.executable, "-m", "inspector", "serve", "--model", str(args.model), "--port", "0"]
    cmd += ["--max-batch", str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms)]
    cmd += ["--max-queue", str(max(64, 2 * max(levels)))]
    cmd += ["--threads", str(args.threads), "--http", args.http, "--loop", args.loop]
    child = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    port = None
    for line in child.stderr:
        m = re.search(r"on http://127\.0\.0\.1:(\d+) ", line)
        if m:
            port = int(m.group(1))
            break
    if port is None:
        sys.exit(f"the server did not start: {child.wait()}")
    threading.Thread(target=lambda: [None for _ in child.stderr], daemon=True).start()
    import psutil

    server = psutil.Process(child.pid)

    reqs = [_request(j) for j in jpegs]
    rows = []
    engines = []
    try:
        load(port, reqs, 4, 200, 10)  # warm-up: connections, the engine's first batches
        http_cpu = overhead(port, server)
        for c in levels:
            # the engine's own figure right before each level (the server idle meanwhile): on a machine shared
            # with other jobs the ratio is only fair between figures taken close together
            engines.append(engine_throughput(args.model, jpegs, args.max_batch, args.engine_seconds, args.threads))
            before = scrape(port)
            cpu0, mine0 = _cpu(server), time.process_time()
            r = load(port, reqs, c, args.requests, args.seconds)
            r["server_cpu_ms_per_image"] = (_cpu(server) - cpu0) / r["requests"] * 1e3
            r["client_cpu_ms_per_request"] = (time.process_time() - mine0) / r["requests"] * 1e3
            r["server_cores_used"] = r["server_cpu_ms_per_image"] * r["images_per_s"] / 1e3
            after = scrape(port)
            n = after["inspector_api_batch_size_count"] - before["inspector_api_batch_size_count"]
            r["mean_batch"] = (after["inspector_api_batch_size_sum"] - before["inspector_api_batch_size_sum"]) / max(
                n, 1
            )
            rows.append(r)
    finally:
        child.terminate()
        child.wait(20)

    # every sampled answer must be a verdict for the image that was sent (checked against the offline path)
    from engines.base import load_engine
    from engines.decode import decode_image
    from engines.preprocess import infer_crops

    with load_engine(args.model) as engine:
        meta = engine.meta
        want = meta.defect_scores(infer_crops(engine, [decode_image(j) for j in jpegs]))
    wrong = 0
    for r in rows:
        for idx, body in r.pop("sampled_bodies"):
            res = json.loads(body)["results"][0]
            wrong += int(abs(res["score"] - float(want[idx])) > 1e-4)

    print(
        f"model {args.model.name}; {len(jpegs)} JPEGs {sorted(shapes)}; max_batch {args.max_batch}, max_wait "
        f"{args.max_wait_ms:g} ms, threads {args.threads}, http {args.http}, loop {args.loop}; {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print(f"engine images/s (batch {args.max_batch}): alone / with decode + preprocess, measured before each level")
    print(
        "clients  requests  images/s  p50 ms  p99 ms  max ms  mean batch  engine  +decode  vs engine"
        "  server CPU ms/img  (cores)  engine CPU ms/img  client CPU ms/req  statuses"
    )
    for r, eng in zip(rows, engines, strict=True):
        ratio = r["images_per_s"] / eng["engine_images_per_s"]
        r["engine"] = eng
        r["vs_engine"] = ratio
        r["vs_decode_preprocess_engine"] = r["images_per_s"] / eng["decode_preprocess_engine_images_per_s"]
        print(
            f"{r['clients']:>7}  {r['requests']:>8}  {r['images_per_s']:>8.0f}  {r['p50_ms']:>6.2f}"
            f"  {r['p99_ms']:>6.2f}  {r['max_ms']:>6.1f}  {r['mean_batch']:>10.2f}"
            f"  {eng['engine_images_per_s']:>6.0f}  {eng['decode_preprocess_engine_images_per_s']:>7.0f}"
            f"  {ratio:>8.0%}  {r['server_cpu_ms_per_image']:>17.2f}  {r['server_cores_used']:>7.2f}"
            f"  {eng['engine_cpu_ms_per_image']:>17.2f}  {r['client_cpu_ms_per_request']:>17.2f}  {r['statuses']}"
        )
    print(
        "server CPU ms per request without image work (HTTP stack, one client): "
        + ", ".join(f"{k} {v:.2f}" for k, v in http_cpu.items())
    )
    print(f"sampled answers checked against the offline path: {wrong} wrong")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps({"levels": rows, "http_cpu_ms": http_cpu, "wrong": wrong, "argv": sys.argv[1:]}, indent=2) + "\n"
        )
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())

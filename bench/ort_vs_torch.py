#!/usr/bin/env python3
"""ONNX Runtime vs PyTorch eager on this CPU: same model, same run, batch 1 and 32; plus verdict identity
on the checkpoint's held-out test split (every image of it).

Speed rounds are interleaved (torch, ORT, torch, ORT, ...) so the shared machine's load hits both alike;
the figure per backend is the median over rounds. Goal: ORT >= 2x PyTorch at batch 1.

    .venv/bin/python bench/ort_vs_torch.py models/casting_seedcnn.pt [--threads 2] [--seconds 3] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engines.base import load_engine  # noqa: E402
from engines.bench import bench_batch  # noqa: E402
from engines.export import export_onnx, file_sha256  # noqa: E402
from engines.meta import read_sidecar, sidecar_path  # noqa: E402
from engines.verify import check_images, compare_engines  # noqa: E402


def onnx_for(ckpt: Path, tmp: Path) -> Path:
    """The checkpoint's sibling .onnx when its sidecar says it was exported from this very file, else a fresh one."""
    sibling = ckpt.with_suffix(".onnx")
    if sibling.is_file() and sidecar_path(sibling).is_file():
        if (read_sidecar(sibling).extra or {}).get("source_sha256") == file_sha256(ckpt):
            return sibling
    return export_onnx(ckpt, tmp / f"{ckpt.stem}.onnx")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--threads", type=int, default=2, help="CPU threads for both backends (default 2)")
    ap.add_argument("--seconds", type=float, default=3.0, help="seconds per measurement")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median is reported")
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--split", default="test", help="split named in the checkpoint metadata for the verdict check")
    ap.add_argument("--data-root", type=Path, help="the data set's folder here (default: recorded at training)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = onnx_for(args.checkpoint, Path(tmp))
        torch_eng = load_engine(args.checkpoint, device="cpu", fp16=False, threads=args.threads)
        ort_eng = load_engine(onnx_path, threads=args.threads, providers=["CPUExecutionProvider"])
        images = check_images(torch_eng.meta, split=args.split, limit=None, data_root=args.data_root)
        t0 = time.perf_counter()
        cmp = compare_engines(torch_eng, ort_eng, images, batch_size=32)
        check_s = time.perf_counter() - t0
        rows: dict[str, dict[int, list]] = {n: {b: [] for b in batches} for n in ("pytorch", "onnxruntime")}
        for _ in range(args.rounds):
            for b in batches:
                for name, eng in (("pytorch", torch_eng), ("onnxruntime", ort_eng)):
                    rows[name][b].append(bench_batch(eng, b, args.seconds))
    print(
        f"model {args.checkpoint} ({torch_eng.meta.arch}, {torch_eng.meta.input_size} px, "
        f"{torch_eng.meta.channels} ch); {args.threads} threads; {os.cpu_count()} CPUs "
        f"{platform.machine()}; load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after"
    )
    print("\n".join(cmp.lines("PyTorch", "ONNX Runtime")) + f"  [{check_s:.0f} s]")
    print(f"{'backend':>12} {'batch':>5} {'p50 ms':>8} {'p99 ms':>8} {'images/s':>9}")
    summary: dict = {"verdicts": cmp.__dict__, "speed": {}}
    for b in batches:
        med = {}
        for name in rows:
            r = rows[name][b]
            med[name] = {k: float(np.median([getattr(x, k) for x in r])) for k in ("p50_ms", "p99_ms", "images_per_s")}
            print(
                f"{name:>12} {b:>5} {med[name]['p50_ms']:8.3f} {med[name]['p99_ms']:8.3f} "
                f"{med[name]['images_per_s']:9.0f}"
            )
        ratio = med["onnxruntime"]["images_per_s"] / med["pytorch"]["images_per_s"]
        print(f"{'':>12} batch {b}: ONNX Runtime / PyTorch throughput = {ratio:.2f}x")
        summary["speed"][b] = {**med, "ratio": ratio}
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""GPU check (a machine with an NVIDIA GPU and PyTorch; one run of a few minutes).

Trains the default architecture (SeedCNN, 128 px) for a few epochs on CUDA with mixed precision, on the real
casting images when found (else synthetic ones), then runs the PyTorch backend in FP32 and FP16 on CUDA over
the same held-out images and prints: verdict agreement FP16 vs FP32, throughput at batch 1/32/256 and batch-1
latency. Without CUDA it says so and exits 0 having measured nothing.

    .venv/bin/python bench/gpu_check.py [--data ../shared/data/casting/train] [--epochs 3] [--images 3000]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engines.imagesets import folder_images, preprocessed_batches  # noqa: E402
from engines.meta import ModelMeta, default_ok_class  # noqa: E402

DEFAULT_DATA = Path(os.environ.get("INSPECTOR_DATA", ROOT.parent / "shared" / "data")) / "casting" / "train"


def load_data(data: Path | None, n_images: int, size: int, seed: int = 0):
    """(meta, x float32 NCHW, y int class index, source) from class folders, or synthetic parts if absent."""
    if data is not None and data.is_dir():
        classes = sorted(d.name for d in data.iterdir() if d.is_dir())
        ok = default_ok_class(classes)
        meta = ModelMeta("seedcnn", classes, ok, size, 1, [0.5], [0.25])
        images = folder_images(data, classes, limit=n_images, seed=seed)
        x = np.concatenate(list(preprocessed_batches(images.paths, meta, 256)))
        y = np.array([classes.index(lab) for lab in images.labels])
        return meta, x, y, f"{len(x)} real images from {data}"
    import cv2

    rng = np.random.default_rng(seed)
    meta = ModelMeta("seedcnn", ["defect", "ok"], "ok", size, 1, [0.5], [0.25])
    imgs, y = [], []
    for i in range(n_images):
        img = np.full((size, size, 3), 30, np.uint8)
        cv2.circle(img, (size // 2, size // 2), size // 3, (200, 200, 200), -1)
        if i % 2 == 0:
            x0, y0 = (int(v) for v in rng.integers(size // 3, 2 * size // 3, 2))
            cv2.rectangle(img, (x0 - 6, y0 - 6), (x0 + 6, y0 + 6), (20, 20, 20), -1)
        imgs.append(cv2.add(img, rng.integers(0, 25, img.shape, dtype=np.uint8)))
        y.append(0 if i % 2 == 0 else 1)
    from engines.preprocess import preprocess

    return meta, preprocess(imgs, meta), np.array(y), f"{n_images} synthetic images (no data at {data})"


def split(n: int, test_fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    k = max(1, int(n * test_fraction))
    return order[k:], order[:k]


def train(meta: ModelMeta, x: np.ndarray, y: np.ndarray, epochs: int, device: str, batch: int = 64) -> dict:
    """A few epochs with autocast + GradScaler (mixed precision) on ``device``; returns the state dict."""
    import torch

    from engines.archs import build_network

    net = build_network(meta).to(device)
    opt = torch.optim.AdamW(net.parameters(), 1e-3)
    amp = device == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    xt = torch.from_numpy(x).to(device)
    target = (y != meta.classes.index(meta.ok_class)).astype(np.float32) if meta.binary else y
    yt = torch.from_numpy(target).to(device)
    net.train()
    for epoch in range(epochs):
        t0, order, total = time.perf_counter(), torch.randperm(len(xt), device=device), 0.0
        for i in range(0, len(xt), batch):
            idx = order[i : i + batch]
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device_type=device, dtype=torch.float16, enabled=amp):
                out = net(xt[idx])
                loss = (
                    torch.nn.functional.binary_cross_entropy_with_logits(out[:, 0], yt[idx])
                    if meta.binary
                    else torch.nn.functional.cross_entropy(out, yt[idx].long())
                )
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            total += float(loss.detach()) * len(idx)
        print(f"epoch {epoch + 1}/{epochs}: loss {total / len(xt):.4f} ({time.perf_counter() - t0:.1f} s)")
    return {k: v.detach().cpu() for k, v in net.state_dict().items()}


def agreement(meta: ModelMeta, p32: np.ndarray, p16: np.ndarray, y: np.ndarray) -> dict:
    v32, v16 = meta.predicted_classes(p32), meta.predicted_classes(p16)
    truth = [meta.classes[i] for i in y]
    return {
        "images": len(v32),
        "verdicts_differ": int(sum(a != b for a, b in zip(v32, v16, strict=True))),
        "agreement": float(np.mean([a == b for a, b in zip(v32, v16, strict=True)])),
        "max_score_diff": float(np.abs(p32 - p16).max()),
        "accuracy_fp32": float(np.mean([a == t for a, t in zip(v32, truth, strict=True)])),
        "accuracy_fp16": float(np.mean([a == t for a, t in zip(v16, truth, strict=True)])),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="class folders (default: the casting set)")
    ap.add_argument("--images", type=int, default=3000, help="images to use (sampled, both classes)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--size", type=int, default=128, help="input size (the training default)")
    ap.add_argument("--seconds", type=float, default=3.0, help="seconds per throughput measurement")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    try:
        import torch
    except ImportError:
        print("gpu_check: PyTorch is not installed; nothing measured")
        return 0
    if not torch.cuda.is_available():
        print(
            f"gpu_check: no CUDA GPU visible to PyTorch {torch.__version__} (CUDA build "
            f"{torch.version.cuda}); run this on a machine with an NVIDIA GPU. Nothing measured."
        )
        return 0
    from engines.base import load_engine
    from engines.bench import bench_batch
    from engines.checkpoint import save_checkpoint

    gpu = torch.cuda.get_device_name(0)
    print(f"gpu_check on {gpu}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    meta, x, y, source = load_data(args.data, args.images, args.size)
    tr, te = split(len(x))
    print(f"data: {source}; train {len(tr)}, held out {len(te)}")
    t0 = time.perf_counter()
    state = train(meta, x[tr], y[tr], args.epochs, "cuda")
    train_s = time.perf_counter() - t0
    results: dict = {"gpu": gpu, "torch": torch.__version__, "data": source, "train_seconds": round(train_s, 1)}
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "gpu_check.pt"
        save_checkpoint(ckpt, state, meta)
        probs, speed = {}, {}
        for name, fp16 in (("fp32", False), ("fp16", True)):
            with load_engine(ckpt, device="cuda", fp16=fp16) as eng:
                probs[name] = np.concatenate([eng.infer(x[te][i : i + 256]) for i in range(0, len(te), 256)])
                speed[name] = {b: bench_batch(eng, b, args.seconds).__dict__ for b in (1, 32, 256)}
    results["agreement"] = agreement(meta, probs["fp32"], probs["fp16"], y[te])
    results["speed"] = speed
    a = results["agreement"]
    print(f"trained {args.epochs} epochs (mixed precision) in {train_s:.1f} s")
    print(
        f"FP16 vs FP32 on {a['images']} held-out images: {a['verdicts_differ']} verdicts differ "
        f"(agreement {a['agreement']:.4%}), largest score difference {a['max_score_diff']:.2e}; "
        f"accuracy FP32 {a['accuracy_fp32']:.4f}, FP16 {a['accuracy_fp16']:.4f}"
    )
    print(f"{'precision':>9} {'batch':>5} {'p50 ms':>8} {'p99 ms':>8} {'images/s':>10}")
    for name in ("fp32", "fp16"):
        for b, r in speed[name].items():
            print(f"{name:>9} {b:>5} {r['p50_ms']:8.3f} {r['p99_ms']:8.3f} {r['images_per_s']:10.0f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

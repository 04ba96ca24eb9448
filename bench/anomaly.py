#!/usr/bin/env python3
"""Anomaly mode benchmark: train on good images only, judge on held-out images of both classes, time the model.

One run:
  1. `inspector train --anomaly --data DIR --out RUN` as a subprocess: wall time and peak memory (the child's
     VmHWM, polled);
  2. `inspector evaluate` of RUN/model.onnx (ONNX Runtime, the runtime's loader and preprocessing) on the
     model's held-out test split: held-out good images + the test share of the defect images;
  3. per-crop cost of RUN/model.onnx on ONNX Runtime, 1 thread, batch 1 and 8, against the 33 ms frame budget
     of a 30 fps line; and the memory bank's size.

ELPV (``--elpv``): trains on p000_ok with p100_defect as the defect class (a folder of links to the shared
data, nothing copied), then scores every p033 and p067 image and reports each level's ROC AUC against the
held-out good test images separately.
Goal: casting test ROC AUC >= 0.99.

    .venv/bin/python bench/anomaly.py --data ../shared/data/casting/train --out runs/anomaly_casting
    .venv/bin/python bench/anomaly.py --elpv --out runs/anomaly_elpv
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engines.base import load_engine  # noqa: E402
from engines.bench import bench_batch  # noqa: E402
from engines.imagesets import read_image  # noqa: E402
from engines.preprocess import preprocess  # noqa: E402

FRAME_BUDGET_MS = 1000 / 30


def shared() -> Path:
    return Path(os.environ.get("INSPECTOR_DATA", ROOT.parent / "shared" / "data"))


def run_child(cmd: list[str]) -> tuple[float, float, str]:
    """(wall s, peak RSS MB, output) of a child process; the peak is its VmHWM, polled while it runs."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT)
    box: list[bytes] = []
    reader = threading.Thread(target=lambda: box.append(proc.stdout.read()), daemon=True)
    reader.start()
    hwm = 0
    status = Path(f"/proc/{proc.pid}/status")
    while proc.poll() is None:
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    hwm = max(hwm, int(line.split()[1]))
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    reader.join(timeout=10)
    out = (box or [b""])[0].decode(errors="replace")
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{out[-3000:]}")
    return time.perf_counter() - t0, hwm / 1024, out


def elpv_links(work: Path) -> Path:
    """A dataset folder of links: p000_ok (good) and p100_defect, pointing at the shared ELPV images."""
    src = shared() / "elpv"
    if not (src / "p000_ok").is_dir():
        sys.exit(f"{src}: ELPV not found (set INSPECTOR_DATA)")
    d = work / "elpv_ok_vs_p100"
    for name in ("p000_ok", "p100_defect"):
        (d / name).mkdir(parents=True, exist_ok=True)
        for f in sorted((src / name).iterdir()):
            link = d / name / f.name
            if not link.exists():
                link.symlink_to(f.resolve())
    return d


def scores_of(engine, paths: list[Path], batch: int = 32) -> np.ndarray:
    out = []
    for a in range(0, len(paths), batch):
        out.append(engine.infer(preprocess([read_image(p) for p in paths[a : a + batch]], engine.meta))[:, 0])
    return np.concatenate(out)


def sampled_eval(onnx_path: Path, data: Path, side: dict, limit: int) -> dict:
    """ONNX Runtime figures on a fixed-seed sample of the test split (each class in proportion, at most ``limit``)."""
    from engines.meta import ModelMeta
    from training.metrics import compute_metrics

    meta = ModelMeta.from_dict(side)
    keys = side["extra"]["split"]["test"]
    rng = np.random.default_rng(0)
    picked = sorted(rng.choice(len(keys), size=min(limit, len(keys)), replace=False))
    paths = [data / keys[i] for i in picked]
    true = [p.parent.name for p in paths]
    with load_engine(onnx_path, threads=2) as engine:
        scores = scores_of(engine, paths)
    m = compute_metrics(meta, scores[:, None], true)
    m["judged"] = f"ONNX Runtime on a fixed-seed sample of {len(paths)} of the {len(keys)} test images"
    return m


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=None, help="class folders: the OK class and optional defects")
    ap.add_argument("--elpv", action="store_true", help="ELPV: p000_ok good-only, judged on p100 (p033/p067 too)")
    ap.add_argument("--out", type=Path, required=True, help="run folder for the trained model")
    ap.add_argument("--train-args", default="", help="extra arguments for inspector train, e.g. '--bank-size 4096'")
    ap.add_argument("--seconds", type=float, default=5.0, help="timing per batch size")
    ap.add_argument(
        "--reuse",
        action="store_true",
        help="RUN was already trained by `inspector train --anomaly`: take its training time and peak "
        "memory from its metadata (measured in that process, before the export) instead of training",
    )
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument(
        "--eval-limit",
        type=int,
        default=None,
        help="judge the ONNX model on a fixed-seed sample of this many test images (default: all, "
        "through `inspector evaluate`)",
    )
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-anomaly-"))
    data = elpv_links(work) if args.elpv else args.data
    if data is None:
        sys.exit("give --data DIR or --elpv")
    py = sys.executable
    ok_args = ["--ok-class", "p000_ok"] if args.elpv else []
    if args.reuse:  # trained before with the same command: its own figures (wall time, ru_maxrss) from the metadata
        t = json.loads(Path(str(args.out / "model.onnx") + ".json").read_text())["extra"]["training"]
        train_s, train_mb = t["train_seconds"], t["peak_rss_mb"]
    else:
        train_s, train_mb, out = run_child(
            [
                py,
                "-m",
                "inspector",
                "train",
                "--anomaly",
                "--data",
                str(data),
                "--out",
                str(args.out),
                *ok_args,
                "--allow-weak",  # a weak model is measured all the same (its metadata says weak)
                *args.train_args.split(),
            ]
        )
        print(out.strip(), flush=True)
    onnx_path = args.out / "model.onnx"
    side = json.loads(Path(str(onnx_path) + ".json").read_text())
    if args.eval_limit:
        metrics = sampled_eval(onnx_path, data, side, args.eval_limit)
    else:
        ev_dir = args.out / "eval_onnx"
        _, _, ev_out = run_child(
            [
                py,
                "-m",
                "inspector",
                "evaluate",
                "--model",
                str(onnx_path),
                "--data",
                str(data),
                "--out",
                str(ev_dir),
                *ok_args,
            ]
        )
        print(ev_out.strip(), flush=True)
        metrics = json.loads((ev_dir / "metrics.json").read_text())
        metrics["judged"] = "inspector evaluate, the whole test split"
    res: dict = {
        "date": dt.date.today().isoformat(),
        "machine": f"{platform.node()} {os.cpu_count()} CPU(s), {platform.processor() or platform.machine()}",
        "data": str(data),
        "train_wall_s": round(train_s, 1),
        "train_figures_from": "the run's metadata (in-process, before export)" if args.reuse else "this script",
        "train_peak_rss_mb": round(train_mb, 1),
        "memory_bank": side["extra"]["anomaly"]["bank_shape"],
        "memory_bank_mb": side["extra"]["anomaly"]["bank_mb"],
        "input_size": side["input_size"],
        "onnx_mb": round(onnx_path.stat().st_size / 1e6, 2),
        "split": side["extra"]["split"]["counts"],
        "threshold": side["threshold"],
        "threshold_rule": side["extra"]["threshold_choice"]["rule"],
        "val": side["extra"]["metrics"]["val"],
        "test_torch": side["extra"]["metrics"]["test"],
        "test_onnx": {
            k: metrics["defect_vs_ok"].get(k)
            for k in (
                "roc_auc",
                "average_precision",
                "recall",
                "precision",
                "missed_defects",
                "false_rejects",
                "n_defect",
                "n_ok",
            )
        },
        "test_onnx_accuracy": metrics["accuracy"],
        "test_onnx_judged": metrics["judged"],
        "parity": side["extra"]["parity"],
    }
    with load_engine(onnx_path, threads=1) as engine:
        rows = [bench_batch(engine, b, seconds=args.seconds) for b in (1, 8)]
        res["ort_1_thread"] = {
            f"batch {r.batch}": {
                "p50_ms": round(r.p50_ms, 2),
                "p99_ms": round(r.p99_ms, 2),
                "per_crop_ms": round(r.per_image_ms, 2),
            }
            for r in rows
        }
        if args.elpv:
            from sklearn.metrics import roc_auc_score

            test_ok = [data / k for k in side["extra"]["split"]["test"] if k.startswith("p000_ok/")]
            s_ok = scores_of(engine, test_ok)
            levels = {}
            for level in ("p033", "p067", "p100_defect"):
                if level == "p100_defect":
                    paths = [data / k for k in side["extra"]["split"]["test"] if k.startswith("p100_defect/")]
                else:
                    paths = sorted((shared() / "elpv" / level).glob("*.png"))
                s = scores_of(engine, paths)
                y = np.r_[np.zeros(len(s_ok)), np.ones(len(s))]
                levels[level] = {
                    "n": len(s),
                    "roc_auc_vs_test_ok": round(float(roc_auc_score(y, np.r_[s_ok, s])), 4),
                    "flagged_at_threshold": round(float((s >= engine.meta.threshold).mean()), 4),
                }
            res["elpv_levels"] = {"n_test_ok": len(s_ok), **levels}
    res["per_crop_vs_33ms_budget"] = {
        k: round(v["per_crop_ms"] / FRAME_BUDGET_MS, 3) for k, v in res["ort_1_thread"].items()
    }
    print(json.dumps(res, indent=2))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    auc = res["test_onnx"]["roc_auc"] or 0.0
    print(f"{'PASS' if auc >= 0.99 else 'FAIL'}  test ROC AUC >= 0.99 ({auc:.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

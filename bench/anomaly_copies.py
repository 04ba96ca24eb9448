#!/usr/bin/env python3
"""Does a held-out good image score low only because a near copy of it was trained? An anomaly model's test ROC
AUC over the held-out good images with and without a near copy among its good training images.

A data set shipped already augmented (casting: rotated and mirrored views of the same parts) can leave a
rotated sibling of a test image in training, which the split's pHash grouping does not always see. For each
held-out good image this takes the best Pearson correlation of its gray 64x64 version with any good training
image under the 8 rotations/flips (training.conflicts' measure), then scores the model's test split through
the runtime's engine loader and reports the ROC AUC against all test defects for the good images below and
above each cut-off. If the AUC holds without the copies, the model did not rely on them.

    .venv/bin/python bench/anomaly_copies.py --run /tmp/anom/c5/run --data ../shared/data/casting/train
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sklearn.metrics import roc_auc_score  # noqa: E402

from engines.base import load_engine  # noqa: E402
from engines.preprocess import infer_crops  # noqa: E402
from training.conflicts import dihedral_vectors, small_gray  # noqa: E402
from training.data import read_image  # noqa: E402


def best_copy(held: np.ndarray, train_variants: list[np.ndarray], chunk: int = 512) -> np.ndarray:
    """Each held-out image's best correlation with any training image under any rotation/flip."""
    base, _ = dihedral_vectors(held)
    out = np.full(len(held), -1.0, np.float32)
    for a in range(0, len(base), chunk):
        for v in train_variants:
            np.maximum(out[a : a + chunk], (base[a : a + chunk] @ v.T).max(axis=1), out=out[a : a + chunk])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, required=True, help="a trained anomaly model's folder (model.onnx + sidecar)")
    ap.add_argument("--data", type=Path, required=True, help="the folder it was trained on")
    ap.add_argument("--cuts", default="0.95,0.975,0.99", help="correlation cut-offs: a near copy at or above")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    side = json.loads((args.run / "model.onnx.json").read_text())
    ok = side["ok_class"]
    split = side["extra"]["split"]
    held = set(split["val"]) | set(split["test"])
    train = [p for p in sorted((args.data / ok).iterdir()) if f"{ok}/{p.name}" not in held]
    good = [k for k in split["test"] if k.startswith(f"{ok}/")]
    bad = [k for k in split["test"] if not k.startswith(f"{ok}/")]
    if len(train) != split["counts"]["train"]:
        sys.exit(f"{args.data}: {len(train)} good training images, the model's split says {split['counts']['train']}")
    _, variants = dihedral_vectors(np.stack([small_gray(read_image(p)) for p in train]))
    corr_good = best_copy(np.stack([small_gray(read_image(args.data / k)) for k in good]), variants)
    corr_bad = best_copy(np.stack([small_gray(read_image(args.data / k)) for k in bad]), variants)
    with load_engine(args.run / "model.onnx", threads=2) as engine:
        keys = good + bad
        batches = (keys[a : a + 16] for a in range(0, len(keys), 16))  # the runtime's per-crop path
        scores = np.concatenate([infer_crops(engine, [read_image(args.data / k) for k in b]) for b in batches])[:, 0]
    y = np.r_[np.zeros(len(good)), np.ones(len(bad))]
    res = {
        "run": str(args.run),
        "score_rule": side["extra"].get("anomaly", {}).get("score_rule", "patch"),
        "train_good": len(train),
        "test_good": len(good),
        "test_defects": len(bad),
        "good_best_corr_quantiles_50_75_90_99": [
            round(float(q), 4) for q in np.quantile(corr_good, [0.5, 0.75, 0.9, 0.99])
        ],
        "test_roc_auc": round(float(roc_auc_score(y, scores)), 4),
        "cuts": {},
    }
    for cut in (float(c) for c in args.cuts.split(",")):
        row = {"good_with_copy": int((corr_good >= cut).sum()), "defects_with_copy": int((corr_bad >= cut).sum())}
        for name, sel in (("auc_without_copies", corr_good < cut), ("auc_with_copies", corr_good >= cut)):
            keep = np.r_[sel, np.ones(len(bad), bool)]
            row[name] = round(float(roc_auc_score(y[keep], scores[keep])), 4) if sel.any() else None
        res["cuts"][cut] = row
        print(
            f"near copy >= {cut}: {row['good_with_copy']} of {len(good)} held-out good images have one "
            f"({row['defects_with_copy']} of {len(bad)} defects); test ROC AUC without them "
            f"{row['auc_without_copies']}, "
            f"with them only {row['auc_with_copies']} (all: {res['test_roc_auc']})"
        )
    print(json.dumps(res, indent=2))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

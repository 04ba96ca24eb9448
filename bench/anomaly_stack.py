#!/usr/bin/env python3
"""Does a good-only anomaly score add to a trained classifier? A two-input stack fitted on validation only.

Takes a classifier's ONNX model and the folder it was trained on. An anomaly model (`inspector train --anomaly`,
defaults) is trained on the classifier's own good training images only, through a folder of links under
--work, so none of the classifier's validation or test images reaches either model. Both score the classifier's
validation and test splits. A logistic regression is fitted on validation alone for each of three inputs: the
classifier's logit, the anomaly score's logit, and both together. It reports the ROC AUC and the false-reject
rate at 95% defect recall on validation and test.

    .venv/bin/python bench/anomaly_stack.py --model /tmp/td9/elpv/onnx/model.onnx \\
        --data /tmp/td9/elpv/elpv_ok_vs_defect --work /tmp/an/stk
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from engines.base import load_engine  # noqa: E402
from engines.preprocess import infer_crops  # noqa: E402
from training.data import read_image  # noqa: E402


def logits(onnx: Path, data: Path, keys: list[str]) -> np.ndarray:
    with load_engine(onnx, threads=2) as e:
        batches = (keys[a : a + 16] for a in range(0, len(keys), 16))  # the runtime's per-crop path
        probs = np.concatenate([infer_crops(e, [read_image(data / k) for k in b]) for b in batches])
        p = np.clip(e.meta.defect_scores(probs).astype(np.float64), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def false_rejects_at(y: np.ndarray, s: np.ndarray, recall: float = 0.95) -> float:
    d = np.sort(s[y])
    return float(np.mean(s[~y] >= d[int(np.floor((1 - recall) * len(d)))]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True, help="the classifier's model.onnx (with its sidecar)")
    ap.add_argument("--data", type=Path, required=True, help="the folder it was trained on")
    ap.add_argument("--work", type=Path, required=True, help="where the links and the anomaly model go")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    side = json.loads(Path(str(args.model) + ".json").read_text())
    split, ok = side["extra"]["split"], side["ok_class"]
    held = set(split["val"]) | set(split["test"])
    train_ok = [p for p in sorted((args.data / ok).iterdir()) if f"{ok}/{p.name}" not in held]
    links = args.work / "anomaly_data" / "ok"
    links.mkdir(parents=True, exist_ok=True)
    for p in train_ok:
        if not (links / p.name).exists():
            (links / p.name).symlink_to(p.resolve())
    run = args.work / "anomaly_run"
    if not (run / "model.onnx").exists():
        cmd = [sys.executable, "-m", "inspector", "train", "--anomaly", "--data", str(links.parent), "--out", str(run)]
        subprocess.run([*cmd, "--allow-weak"], check=True)
    scored = {}
    for s in ("val", "test"):
        keys = split[s]
        y = np.array([not k.startswith(f"{ok}/") for k in keys])
        scored[s] = (y, logits(args.model, args.data, keys), logits(run / "model.onnx", args.data, keys))
    (yv, cv, av), (yt, ct, at) = scored["val"], scored["test"]
    res = {"classifier_train_ok": len(train_ok), "n_val": len(yv), "n_test": len(yt), "rows": {}}
    for name, fv, ft in (
        ("classifier", cv[:, None], ct[:, None]),
        ("anomaly", av[:, None], at[:, None]),
        ("stack", np.c_[cv, av], np.c_[ct, at]),
    ):
        lr = LogisticRegression(C=1.0).fit(fv, yv)
        pv, pt = lr.decision_function(fv), lr.decision_function(ft)
        row = {
            "val_auc": round(float(roc_auc_score(yv, pv)), 4),
            "val_fr95": round(false_rejects_at(yv, pv), 3),
            "test_auc": round(float(roc_auc_score(yt, pt)), 4),
            "test_fr95": round(false_rejects_at(yt, pt), 3),
            "coef": lr.coef_.round(3).tolist()[0],
        }
        res["rows"][name] = row
        print(f"{name:10s} {row}")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

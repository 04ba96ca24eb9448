#!/usr/bin/env python3
"""Ablation of the default recipe's tuning step on a two-class set: what lifts validation ROC AUC past the
cached-trunk tuning of training/cached.py?

Step 1 (``cache``) runs the frozen EfficientNet-Lite0 stem and stages 0-4 (stride 16) once over the recipe's own
split (group-aware, seed 0) and stores the maps, plus ``--aug-views`` image-space augmented views of the
training photos (training.augment: rotation, scale, shift, flips, brightness/contrast). Step 2 (``tail``) fits
the probe head (logistic regression) and tunes the stages from ``--from-stage`` on, with the recipe's optimiser
(AdamW, onecycle, backbone at 0.3x the head's rate, pos_weight balanced), and reports validation and test
ROC AUC and false rejects at 95% defect recall for: the best validation epoch (the recipe's rule), the last
epoch, the average of the last ``--swa`` epochs' weights, and each of those with 8-view dihedral averaging
of the cached maps at test time (feature-space test-time augmentation). ``--pool`` swaps the head's global
average pooling for max, their mean (avgmax) or both side by side (catavgmax): a small defect is one spot of
the map, which an average dilutes. ``cache --stage N`` stores the maps after blocks[:N] instead (N = 2: after
stage 1, stride 4), so that ``tail --from-stage`` can tune from an earlier stage; ``--freeze-bn`` keeps the tuned
stages' BatchNorm statistics at their ImageNet values.

    .venv/bin/python bench/tail_ablation.py cache /tmp/elpv_sel --size 288 --aug-views 3 --out /tmp/c288.pt
    .venv/bin/python bench/tail_ablation.py tail /tmp/c288.pt --from-stage 6 --aug dihedral --epochs 20

The data folder is what `inspector train --data` takes (ELPV: bench/train_default.py's symlink selection).
Choices are meant to be made on the validation figures; the test ones are printed to show the noise.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CACHED = 5  # the default: blocks[:5], stem + stages 0-4, stride 16 (``cache --stage`` sets another)


def cache(args: argparse.Namespace) -> None:
    from engines.archs import build_network
    from training.augment import augment_batch
    from training.train import Trainer, TrainOptions

    o = TrainOptions(
        data=args.data, out=args.out.parent / "ablation_run", arch="efficientnet_lite0", img_size=args.size, lr=None
    )
    tr = Trainer(o)
    tr.load()
    net = build_network(tr.meta, tr.weights_path).eval()

    def trunk(x: torch.Tensor) -> torch.Tensor:
        x = net.bn1(net.conv_stem(x))
        for b in list(net.blocks)[: args.stage]:
            x = b(x)
        return x

    ok = tr.meta.classes.index(tr.meta.ok_class)
    out: dict[str, torch.Tensor] = {"stage": torch.tensor(args.stage)}
    rng = np.random.default_rng(1)
    t0 = time.perf_counter()
    with torch.inference_mode():
        for s in ("train", "val", "test"):
            out[f"y_{s}"] = torch.from_numpy((tr.data.labels[tr.idx[s]] != ok).astype(np.float32))
        for name, split, aug in [(s, s, False) for s in ("train", "val", "test")] + [
            (f"aug{k}", "train", True) for k in range(args.aug_views)
        ]:
            maps = []
            for a in range(0, len(tr.idx[split]), 32):
                x, _, _ = tr.data.views(tr.idx[split][a : a + 32])
                if aug:
                    x = augment_batch(x, rng, rotate_deg=180.0, scale=0.1, shift=0.05)
                maps.append(trunk(tr.tensor(x)).half())
            out[name] = torch.cat(maps)
            print(f"{name}: {tuple(out[name].shape)} {time.perf_counter() - t0:.0f} s", flush=True)
    torch.save(out, args.out)


def tail(args: argparse.Namespace) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    from engines.lite0 import build_lite0, packaged_weights
    from training.cached import _dihedral

    c = torch.load(args.cache, weights_only=True)
    cached = int(c.get("stage", CACHED))
    y = {s: c[f"y_{s}"].numpy() for s in ("train", "val", "test")}
    net = build_lite0(3, 1, packaged_weights()).eval()
    if args.pool != "avg":  # the head's global pooling; a new (probe-initialised) classifier of the pooled width
        net.reset_classifier(1, global_pool=args.pool)
    blocks = list(net.blocks)
    st = args.from_stage
    if st < cached:
        raise SystemExit(f"--from-stage {st}: the cache holds the maps after stage {cached - 1}; use >= {cached}")
    naug = sum(1 for k in c if k.startswith("aug"))

    def advance(m: torch.Tensor) -> torch.Tensor:  # cached maps -> the input of stage ``st``
        with torch.inference_mode():
            out = []
            for a in range(0, len(m), 128):
                f = m[a : a + 128].float().contiguous(memory_format=torch.channels_last)
                for b in blocks[cached:st]:
                    f = b(f)
                out.append(f.half())
            return torch.cat(out)

    maps = {s: advance(c[s]) for s in ("train", "val", "test")}
    augs = [advance(c[f"aug{k}"]) for k in range(naug)]

    def run_tail(f: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        for b in blocks[st:]:
            f = b(f)
        return net.forward_head(net.bn2(net.conv_head(f)), pre_logits=pre_logits)

    def scores(split: str, views: int = 1) -> np.ndarray:
        net.eval()
        out = []
        with torch.inference_mode():
            for a in range(0, len(maps[split]), 128):
                f, acc = maps[split][a : a + 128].float(), 0
                for v in range(views):
                    g = torch.rot90(f, v // 2, dims=(2, 3))
                    g = torch.flip(g, dims=(3,)) if v % 2 else g
                    acc = acc + run_tail(g.contiguous(memory_format=torch.channels_last))[:, 0]
                out.append((acc / views).numpy())
        return np.concatenate(out)

    def fr95(sc: np.ndarray, yy: np.ndarray) -> float:
        d = np.sort(sc[yy == 1])
        return float((sc[yy == 0] >= d[int(np.floor(0.05 * len(d)))]).mean())

    def report(tag: str) -> None:
        for views, name in ((1, tag), (8, f"{tag} + dihedral TTA")):
            v, t = scores("val", views), scores("test", views)
            acc = float(((t >= 0) == (y["test"] == 1)).mean())
            print(
                f"{name}: val ROC AUC {roc_auc_score(y['val'], v):.4f} fr95 {fr95(v, y['val']):.3f} | "
                f"test ROC AUC {roc_auc_score(y['test'], t):.4f} fr95 {fr95(t, y['test']):.3f} acc {acc:.4f}",
                flush=True,
            )

    t0 = time.perf_counter()
    with torch.inference_mode():
        feats = np.concatenate(
            [
                run_tail(maps["train"][a : a + 128].float().contiguous(memory_format=torch.channels_last), True).numpy()
                for a in range(0, len(maps["train"]), 128)
            ]
        )
    clf = LogisticRegression(C=0.1, max_iter=2000, class_weight="balanced").fit(feats, y["train"])
    head = net.get_classifier()
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(clf.coef_.astype(np.float32)))
        head.bias.copy_(torch.from_numpy(clf.intercept_.astype(np.float32)))
    v, t = scores("val"), scores("test")
    print(f"probe: val ROC AUC {roc_auc_score(y['val'], v):.4f} | test ROC AUC {roc_auc_score(y['test'], t):.4f}")
    params = [p for m in (*blocks[st:], net.conv_head, net.bn2, head) for p in m.parameters()]
    head_ids = {id(p) for p in head.parameters()}
    opt = torch.optim.AdamW(
        [
            {"params": [p for p in params if id(p) not in head_ids], "lr": args.lr * 0.3},
            {"params": [p for p in params if id(p) in head_ids], "lr": args.lr},
        ],
        weight_decay=1e-4,
    )
    pos = float(y["train"].sum())
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor([(len(y["train"]) - pos) / pos]))
    bs, n = 32, len(y["train"])
    batches = n // bs
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=[g["lr"] for g in opt.param_groups], total_steps=args.epochs * batches, pct_start=0.1
    )
    rng = np.random.default_rng(args.seed)
    torch.manual_seed(args.seed)
    best, best_state, best_epoch, avg, n_avg = -1.0, None, 0, None, 0
    for epoch in range(1, args.epochs + 1):
        net.train()
        if args.freeze_bn:  # the tuned stages keep their ImageNet BatchNorm statistics (batch 32 is small)
            for m in net.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
        order = rng.permutation(n)
        te = time.perf_counter()
        for a in range(0, batches * bs, bs):
            items = order[a : a + bs]
            if args.aug in ("real", "both") and naug:
                src = rng.integers(0, naug + 1, len(items))
                f = torch.stack(
                    [maps["train"][i] if s == 0 else augs[s - 1][i] for i, s in zip(items, src, strict=True)]
                ).float()
            else:
                f = maps["train"][items].float()
            if args.aug in ("dihedral", "both"):
                f = _dihedral(f, rng)  # the recipe's own turns of the cached maps
            logits = run_tail(f.contiguous(memory_format=torch.channels_last))[:, 0]
            loss = loss_fn(logits, torch.from_numpy(y["train"][items]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        auc = roc_auc_score(y["val"], scores("val"))
        if auc >= best:
            best, best_state, best_epoch = auc, copy.deepcopy(net.state_dict()), epoch
        if args.swa and epoch > args.epochs - args.swa:
            sd = net.state_dict()
            avg = {k: v.clone().float() for k, v in sd.items()} if avg is None else avg
            if n_avg:
                for k in avg:
                    avg[k] = avg[k] * n_avg / (n_avg + 1) + sd[k].float() / (n_avg + 1)
            n_avg += 1
        print(f"epoch {epoch} val ROC AUC {auc:.4f} {time.perf_counter() - te:.1f} s", flush=True)
    report(f"last epoch ({args.epochs})")
    if avg is not None:
        net.load_state_dict({k: v.to(net.state_dict()[k].dtype) for k, v in avg.items()})
        report(f"average of the last {args.swa} epochs")
    net.load_state_dict(best_state)
    report(f"best validation epoch ({best_epoch})")
    print(f"total {time.perf_counter() - t0:.0f} s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("cache", help="frozen trunk maps (stages 0-4 unless --stage) of the recipe's split")
    a.add_argument("data", type=Path)
    a.add_argument("--size", type=int, default=288)
    a.add_argument("--aug-views", type=int, default=0)
    a.add_argument("--stage", type=int, default=CACHED, choices=range(1, 7), help="cache the maps after blocks[:STAGE]")
    a.add_argument("--out", type=Path, required=True)
    b = sub.add_parser("tail", help="probe + tune the stages from --from-stage on the cached maps")
    b.add_argument("cache", type=Path)
    b.add_argument("--from-stage", type=int, default=6, choices=range(1, 7))
    b.add_argument("--aug", default="dihedral", choices=("none", "dihedral", "real", "both"))
    b.add_argument("--epochs", type=int, default=20)
    b.add_argument("--lr", type=float, default=1e-3)
    b.add_argument("--swa", type=int, default=10)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--freeze-bn", action="store_true", help="BatchNorm layers keep their running statistics")
    b.add_argument(
        "--pool", default="avg", choices=("avg", "max", "avgmax", "catavgmax"), help="the head's global pooling"
    )
    args = ap.parse_args()
    torch.set_num_threads(2)
    (cache if args.cmd == "cache" else tail)(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

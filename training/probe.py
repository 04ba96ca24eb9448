"""Linear probe on frozen pretrained features: the first stage of fine-tuning, and a cheap quality check.

A new head on a pretrained backbone starts random; its large early gradients disturb the backbone's good
features while the head catches up. Fitting the head first on frozen features (logistic regression) and then
training the whole net at a lower rate ("linear probe, then fine-tune") avoids that and suits a few hundred
images. The probe's validation ROC AUC also tells the default recipe which input size keeps the defects.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from training.train import Trainer

log = logging.getLogger(__name__)

MAX_TRAIN = 600
MIN_CACHED = 300  # training photos cached at least, budget or not


def frozen_features(
    trainer: Trainer, net: torch.nn.Module, idx: np.ndarray, batch: int = 64
) -> tuple[np.ndarray, list[int]]:
    """Pooled backbone features of every view of items ``idx`` (eval mode, no augmentation)."""
    net.eval()
    out, all_counts = [], []
    with torch.inference_mode():
        for a in range(0, len(idx), batch):
            x, counts, _ = trainer.data.views(idx[a : a + batch])
            t = trainer.tensor(x)
            out.append(net.forward_head(net.forward_features(t), pre_logits=True).numpy())
            all_counts += counts
    return np.concatenate(out), all_counts


def _per_item(values: np.ndarray, counts: list[int]) -> np.ndarray:
    """Per-view scores -> per item: the max (a part is as bad as its worst tile)."""
    if len(counts) == len(values):
        return values
    bounds = np.cumsum([0, *counts])
    return np.array([values[a:b].max() for a, b in zip(bounds[:-1], bounds[1:], strict=True)])


def init_head_from_probe(trainer: Trainer, net: torch.nn.Module, max_train: int = MAX_TRAIN) -> dict:
    """Fit logistic regression on frozen features of the training split; copy it into the net's classifier.

    At most ``max_train`` training images (a seeded random share) keep it cheap on a big set: it only starts
    the head and ranks input sizes. Returns what it measured: validation ROC AUC (binary) or accuracy, seconds.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    t0 = time.perf_counter()
    meta = trainer.meta
    tr, va = trainer.idx["train"], trainer.idx["val"]
    if getattr(trainer.o, "cached_trunk", False) and meta.arch == "efficientnet_lite0":
        # the trunk maps of every training and validation photo are cached for the tuning that follows, and
        # the probe's features come from them
        from training.cached import cache_trunk, tail_features

        val = cache_trunk(trainer, net, va)
        sec = (time.perf_counter() - t0) / max(1, len(val[1]))
        deadline = trainer.o.deadline
        if deadline is not None:  # a budget: cache only the training photos that 40% of the time left allows
            allowed = max(MIN_CACHED, int(0.4 * (deadline - time.monotonic()) / max(sec, 1e-6)))
            if len(tr) > allowed:
                tr = np.sort(np.random.default_rng(trainer.o.seed).choice(tr, allowed, replace=False))
                log.info("caching %d of the %d training photos (time budget)", allowed, len(trainer.idx["train"]))
        trainer.cache = {"train": cache_trunk(trainer, net, tr), "val": val, "train_idx": tr}
        n_views = len(trainer.cache["train"][1]) + len(val[1])
        trainer.fwd_seconds = (time.perf_counter() - t0) / max(1, n_views) * 1.25
        (f_tr, c_tr), (f_va, c_va) = (tail_features(net, *trainer.cache[s]) for s in ("train", "val"))
    else:
        if len(tr) > max_train:
            tr = np.sort(np.random.default_rng(trainer.o.seed).choice(tr, max_train, replace=False))
        f_tr, c_tr = frozen_features(trainer, net, tr)
        f_va, c_va = frozen_features(trainer, net, va)
    y_items = trainer.data.labels[tr]
    y_views = np.repeat(y_items, c_tr)
    if meta.binary:
        ok = meta.classes.index(meta.ok_class)
        y_views = (y_views != ok).astype(int)
    # C small: a few hundred images and 1,280 features; balanced like the training loss (pos_weight)
    clf = LogisticRegression(C=0.1, max_iter=2000, class_weight="balanced")
    clf.fit(f_tr, y_views)
    head = net.get_classifier()
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(clf.coef_.astype(np.float32)))
        head.bias.copy_(torch.from_numpy(clf.intercept_.astype(np.float32)))
    info: dict = {"seconds": round(time.perf_counter() - t0, 1), "C": 0.1, "n_train_views": int(len(f_tr))}
    y_va = trainer.data.labels[va]
    if meta.binary:
        s = _per_item(clf.decision_function(f_va), c_va)
        is_def = y_va != meta.classes.index(meta.ok_class)
        if 0 < is_def.sum() < len(is_def):
            info["val_auc"] = float(roc_auc_score(is_def, s))
    else:
        pred = clf.predict(f_va) if len(c_va) == len(f_va) else None
        if pred is not None:
            info["val_acc"] = float((pred == y_va).mean())
    return info

"""Fine-tuning the last stages of EfficientNet-Lite0 on cached trunk features: a CPU budget's best use.

A full fine-tuning step pushes every image through all seven stages forwards and backwards; on a 2-core CPU
one epoch of a thousand-odd photos costs many minutes. The stem and stages 0-5 (stride 32) keep their ImageNet
weights, so their output is computed ONCE per photo and cached (float16); training then runs only the last
stage, the head convolution and the classifier, for as many epochs as the budget holds (when not one whole
epoch fits, one shorter pass over a random share of the training photos, from ``MIN_STEPS`` steps).
Augmentation works on the cached maps: the 8 right-angle rotations/flips (a convolutional map turns with its
image). The shipped network is the whole Lite0, so export and the runtime do not change.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from rich.console import Console

    from training.train import Trainer

log = logging.getLogger(__name__)

MIN_STEPS = 10  # fewer tuning steps than this are not worth their time: the probed head is kept

TRUNK_STAGES = 6  # blocks[:6] (stride 32) frozen and cached; the last stage, conv_head, bn2 and the head train


def trunk(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = net.bn1(net.conv_stem(x))
    for b in list(net.blocks)[:TRUNK_STAGES]:
        x = b(x)
    return x


def tail(net: nn.Module, f: torch.Tensor) -> torch.Tensor:
    """Cached trunk maps -> logits (the rest of timm's forward_features, then forward_head)."""
    for b in list(net.blocks)[TRUNK_STAGES:]:
        f = b(f)
    return net.forward_head(net.bn2(net.conv_head(f)))


def tail_modules(net: nn.Module) -> list[nn.Module]:
    return [*list(net.blocks)[TRUNK_STAGES:], net.conv_head, net.bn2, net.get_classifier()]


def cache_trunk(trainer: Trainer, net: nn.Module, idx: np.ndarray, batch: int = 32) -> tuple[torch.Tensor, list[int]]:
    """float16 trunk maps of every view of items ``idx`` (eval mode, no augmentation), and views per item."""
    net.eval()
    out, counts = [], []
    with torch.inference_mode():
        for a in range(0, len(idx), batch):
            x, c, _ = trainer.data.views(idx[a : a + batch])
            out.append(trunk(net, trainer.tensor(x)).to(torch.float16).contiguous())
            counts += c
    return torch.cat(out), counts


def tail_features(net: nn.Module, maps: torch.Tensor, counts: list[int], batch: int = 128) -> tuple[np.ndarray, list]:
    """Pooled 1280-wide features of cached trunk maps (eval mode): what the linear probe fits on."""
    net.eval()
    out = []
    with torch.inference_mode():
        for a in range(0, len(maps), batch):
            f = maps[a : a + batch].float().contiguous(memory_format=torch.channels_last)
            for b in list(net.blocks)[TRUNK_STAGES:]:
                f = b(f)
            out.append(net.forward_head(net.bn2(net.conv_head(f)), pre_logits=True).numpy())
    return np.concatenate(out), counts


def _dihedral(f: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Each map in the batch turned by its own random rotation (0/90/180/270) and flip."""
    out = []
    for m in f:
        k = int(rng.integers(4))
        m = torch.rot90(m, k, dims=(1, 2))
        out.append(torch.flip(m, dims=(2,)) if rng.random() < 0.5 else m)
    return torch.stack(out)


def _fold(logits: torch.Tensor, counts: list[int], binary: bool) -> torch.Tensor:
    if binary:
        logits = logits[:, 0]
        if len(counts) != len(logits):
            logits = torch.stack([t.max() for t in torch.split(logits, counts)])
    return logits


def _slices(counts: list[int]) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


def fit_tail(
    trainer: Trainer,
    net: nn.Module,
    loss_fn: nn.Module,
    cache: dict,
    deadline: float | None,
    max_epochs: int,
    console: Console | None,
) -> dict:
    """Train the tail on the cached maps; returns the loop state (history, kept weights) the trainer finishes."""
    from training.metrics import compute_metrics

    o, meta = trainer.o, trainer.meta
    for p in net.parameters():
        p.requires_grad_(False)
    params = [p for m in tail_modules(net) for p in m.parameters()]
    for p in params:
        p.requires_grad_(True)
    head_ids = {id(p) for p in net.get_classifier().parameters()}
    groups = [
        {"params": [p for p in params if id(p) not in head_ids], "lr": o.lr * o.backbone_lr_scale},
        {"params": [p for p in params if id(p) in head_ids], "lr": o.lr},
    ]
    opt = torch.optim.AdamW(groups, weight_decay=o.weight_decay)
    f_tr, c_tr = cache["train"]
    f_va, c_va = cache["val"]
    s_tr, s_va = _slices(c_tr), _slices(c_va)
    tr_items = np.arange(len(c_tr))
    y_tr = trainer.data.labels[cache.get("train_idx", trainer.idx["train"])]  # a budget may cache a share
    y_va = trainer.data.labels[trainer.idx["val"]]
    bs = o.batch_size
    batches = max(1, len(tr_items) // bs)

    def step(items: np.ndarray, rng: np.random.Generator) -> float:
        sel = np.concatenate([np.arange(s_tr[k], s_tr[k + 1]) for k in items])
        f = _dihedral(f_tr[sel].float(), rng).contiguous(memory_format=torch.channels_last)
        logits = _fold(tail(net, f), [c_tr[k] for k in items], meta.binary)
        loss = loss_fn(logits, trainer._targets(y_tr[items]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        return float(loss.detach())

    def validate() -> dict:
        net.eval()
        probs = []
        with torch.inference_mode():
            for a in range(0, len(c_va), 128):
                items = np.arange(a, min(len(c_va), a + 128))
                sel = np.arange(s_va[items[0]], s_va[items[-1] + 1])
                logits = _fold(
                    tail(net, f_va[sel].float().contiguous(memory_format=torch.channels_last)),
                    [c_va[k] for k in items],
                    meta.binary,
                )
                probs.append((torch.sigmoid(logits)[:, None] if meta.binary else torch.softmax(logits, 1)).numpy())
        m = compute_metrics(meta, np.concatenate(probs), [meta.classes[i] for i in y_va], 0.5)
        return {
            "val_acc": m["accuracy"],
            "val_recall": m["recall"],
            "val_auc": m.get("defect_vs_ok", {}).get("roc_auc", m["accuracy"]),
        }

    # plan: measured seconds per step (2 steps on a copy of nothing: real steps, undone by restoring the state)
    saved = {k: v.clone() for k, v in net.state_dict().items()}
    rng = np.random.default_rng(o.seed)
    net.train()
    times = []
    for _ in range(3):
        t = time.perf_counter()
        step(rng.choice(tr_items, min(bs, len(tr_items)), replace=False), rng)
        times.append(time.perf_counter() - t)
    net.load_state_dict(saved)
    opt = torch.optim.AdamW(groups, weight_decay=o.weight_decay)
    sec = float(np.median(times[1:]))
    t_val = time.perf_counter()
    base = validate()
    t_val = time.perf_counter() - t_val
    per_epoch = batches * sec + t_val
    n_final = len(trainer.idx["val"]) + len(trainer.idx["test"])
    final = n_final * trainer.fwd_seconds * 1.5 + 5.0  # the final report runs the whole net on val and test
    left = (deadline - time.monotonic() - final) if deadline is not None else float("inf")
    epochs = int(max(0, min(max_epochs, left // max(per_epoch, 1e-6))))
    steps_cap = None
    if epochs == 0 and (left - t_val) // max(sec, 1e-6) >= MIN_STEPS:
        epochs, steps_cap = 1, int(min(batches, (left - t_val) // max(sec, 1e-6)))
    batches = steps_cap or batches
    trainer.plan = {
        "mode": "cached trunk",
        "seconds_per_step": round(sec, 3),
        "steps_per_epoch": batches,
        "seconds_per_epoch_planned": round(per_epoch, 1),
        "epochs_planned": epochs,
        "budget_left_s": round(left, 1) if deadline is not None else None,
        "trunk_stages_cached": TRUNK_STAGES,
    }
    console.print(
        f"plan: trunk cached; {sec:.2f} s/step x {batches} steps + validation = {per_epoch:.0f} s/epoch; "
        f"{epochs} epoch(s) of the last stages fit"
    )
    state = {
        "epoch": 0,
        "history": [{"epoch": 0, **base, "seconds": 0.0, "note": "probed head, before tuning"}],
        "best_epoch": 0,
        "kept_epoch": 0,
        "train_seconds": 0.0,
        "stopped": None,
        "best_state": {k: v.clone() for k, v in net.state_dict().items()},
    }
    best = base["val_auc"]
    if epochs == 0:
        state["stopped"] = "time budget: no tuning epoch fitted"
        return state
    total = epochs * batches
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=[g["lr"] for g in opt.param_groups], total_steps=total, pct_start=0.1
    )
    for epoch in range(1, epochs + 1):
        if (
            deadline is not None
            and state["history"][-1]["seconds"]
            and time.monotonic() + state["history"][-1]["seconds"] > deadline - final
        ):
            state["stopped"] = f"time budget: stopped before epoch {epoch}"
            break
        t0 = time.perf_counter()
        rng = np.random.default_rng([o.seed, epoch])
        order = rng.permutation(tr_items)
        net.train()
        losses = []
        for a in range(0, batches * bs, bs):
            losses.append(step(order[a : a + bs], rng))
            sched.step()
        row = {
            "epoch": epoch,
            "train_loss": float(np.mean(losses)),
            **validate(),
            "lr": opt.param_groups[-1]["lr"],
            "seconds": time.perf_counter() - t0,
        }
        state["train_seconds"] += row["seconds"]
        keep = row["val_auc"] >= best
        if keep:
            best = row["val_auc"]
            state.update(
                best_state={k: v.clone() for k, v in net.state_dict().items()}, best_epoch=epoch, kept_epoch=epoch
            )
        state["history"].append(row)
        state["epoch"] = epoch
        console.print(
            f"epoch {epoch:3d}  train loss {row['train_loss']:.4f}  val acc {row['val_acc']:.4f} "
            f"recall {row['val_recall']:.4f} auc {row['val_auc']:.4f}  {row['seconds']:.0f}s"
            f"{'  *kept' if keep else ''}"
        )
    return state

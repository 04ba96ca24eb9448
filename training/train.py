"""Training loop: split the data by near-duplicate groups, train, keep the best epoch, write the run folder.

RUN_DIR gets ``model.pt`` (best weights + metadata, loadable with ``weights_only=True``), ``last.pt`` (the
state to resume from), ``history.json`` and ``curves.png``. Inputs always pass through
:mod:`engines.preprocess`, so the model sees in training what it sees on the line.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from engines.archs import ARCHS, build_network
from engines.checkpoint import load_checkpoint, save_checkpoint
from engines.errors import UserError
from engines.meta import ModelMeta
from engines.preprocess import normalize
from training.augment import augment_batch
from training.data import LoadedData, index_dataset, load_images
from training.metrics import compute_metrics
from training.split import SPLITS, group_split, split_digest
from training.threshold import choose_threshold

log = logging.getLogger(__name__)

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


@dataclass
class TrainOptions:
    data: Path
    out: Path
    arch: str = "seedcnn"
    img_size: int = 128
    epochs: int = 30
    batch_size: int = 32
    patience: int | None = None  # None: 6 with plateau; with onecycle the schedule ends the run (no early stop)
    seed: int = 0
    lr: float = 2e-3  # peak learning rate (onecycle) or starting one (plateau)
    resume: bool = False
    ok_class: str | None = None
    layout: str = "auto"
    manifest: Path | None = None
    target_recall: float | None = None
    weights: Path | None = None
    threads: int | None = None
    dup_distance: int = 20
    rotate_deg: float = 180.0
    scale_jitter: float = 0.1  # +- fraction of the side
    shift_jitter: float = 0.05  # +- fraction of the side
    schedule: str = "onecycle"  # onecycle: warm-up then cosine decay over --epochs; plateau: x0.3 when val stalls
    weight_decay: float = 1e-4
    ema: float | None = None  # weight moving-average decay; None: a one-epoch horizon, 0: off
    drop_conflicts: bool = False  # leave label-conflict images (training.conflicts) out of the training split


def pretrained_weights(arch: str, weights: Path | None) -> Path | None:
    """ImageNet weights for a backbone: ``--weights`` or the torchvision cache; None (with a warning) if absent."""
    if arch == "seedcnn":
        return None
    if weights is not None:
        if not Path(weights).is_file():
            raise UserError(f"--weights {weights}: file not found")
        return Path(weights)
    try:
        import torchvision.models as tvm

        url = tvm.get_model_weights(arch).DEFAULT.url
        cached = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
    except Exception:  # noqa: BLE001 - any lookup failure means "not cached"
        cached = None
    if cached is not None and cached.is_file():
        return cached
    log.warning("no ImageNet weights for %s (give --weights PATH or fill the torchvision cache): "
                "training from scratch", arch)
    return None


class Trainer:
    """One training run; :meth:`run` returns the path of ``model.pt``."""

    def __init__(self, opts: TrainOptions, console=None) -> None:
        if opts.arch not in ARCHS:
            raise UserError(f"unknown --arch {opts.arch!r}; supported: {', '.join(ARCHS)}")
        if opts.batch_size < 2 or opts.epochs < 1 or opts.img_size < 16:
            raise UserError("--batch-size must be >= 2, --epochs >= 1 and --img-size >= 16")
        if opts.schedule not in ("onecycle", "plateau"):
            raise UserError(f"--schedule {opts.schedule!r}: expected onecycle or plateau")
        if not (0 <= opts.scale_jitter < 0.5 and 0 <= opts.shift_jitter < 0.5):
            raise UserError("--scale-jitter and --shift-jitter are fractions of the image side: use 0 to 0.5")
        self.o = opts
        from rich.console import Console

        self.console = console or Console(stderr=True)

    # --- data ---------------------------------------------------------------------------------------------
    def load(self) -> None:
        o = self.o
        from rich.progress import Progress

        index = index_dataset(o.data, o.layout, o.ok_class, o.manifest)
        self.weights_path = pretrained_weights(o.arch, o.weights)
        channels = 3 if self.weights_path is not None else None  # ImageNet first layer wants RGB
        with Progress(console=self.console, transient=True) as prog:
            task = prog.add_task("decoding images", total=len(index.items))
            data = load_images(index, o.img_size, channels, progress=lambda: prog.advance(task))
        self.data: LoadedData = data
        split = group_split(data.labels, data.hashes, seed=o.seed, max_distance=o.dup_distance)
        self.split = split
        self.idx = {s: split.indices(s) for s in SPLITS}
        for s in ("train", "val"):
            if len(np.unique(data.labels[self.idx[s]])) < len(index.classes):
                raise UserError(
                    f"{index.root}: too few images to give every class a {s} share "
                    f"({index.counts()}); add images"
                )
        from training.conflicts import conflict_report, label_conflicts

        split_of = {data.items[i].key: s for s in SPLITS for i in self.idx[s]}
        all_keys = [it.key for it in data.items]
        pairs = label_conflicts(data.images, data.labels)
        conflicts = conflict_report(all_keys, [index.classes[c] for c in data.labels], pairs, split_of.__getitem__)
        if o.drop_conflicts and pairs:
            involved = {i for p in pairs for i in p[:2]}
            before = len(self.idx["train"])
            self.idx["train"] = np.array([i for i in self.idx["train"] if i not in involved], dtype=np.int64)
            conflicts["dropped_from_train"] = before - len(self.idx["train"])
        if self.weights_path is not None:
            mean, std = IMAGENET_MEAN, IMAGENET_STD
        else:
            x = data.images[self.idx["train"]].astype(np.float32) / 255.0
            mean = [float(v) for v in x.mean(axis=(0, 1, 2))]
            std = [max(1e-3, float(v)) for v in x.std(axis=(0, 1, 2))]
        keys = {s: sorted(data.items[i].key for i in self.idx[s]) for s in SPLITS}
        self.split_info = {
            **split.report,
            "label_conflicts": conflicts,
            "digest": {s: split_digest(keys[s]) for s in SPLITS},
            "val": keys["val"],
            "test": keys["test"],
        }
        summary = {**index.summary(), "n_images": len(data.items), "n_skipped": len(data.skipped),
                   "skipped": [f"{k}: {why}" for k, why in data.skipped[:50]]}
        self.meta = ModelMeta(o.arch, index.classes, index.ok_class, o.img_size, data.channels, mean, std, 0.5,
                              {"data": summary})
        self.console.print(
            f"data: {summary['n_images']} images {index.counts()} ({summary['n_skipped']} skipped), "
            f"{data.channels} channel(s); split train/val/test {split.report['counts']}; "
            f"{split.report['near_duplicate_pairs']} near-duplicate pairs "
            f"({split.report['pairs_across_naive_random_split']} would cross a random split, "
            f"{split.report['pairs_across_this_split']} cross this one)"
        )
        if conflicts["n_pairs"]:
            self.console.print(
                f"[yellow]label conflicts:[/] {conflicts['n_pairs']} pair(s) of near-identical images with different "
                f"labels, {conflicts['n_images']} images {conflicts['images_by_split']}: the same part under two "
                "labels; review them (listed in the model's metadata, split.label_conflicts); `inspector evaluate "
                "--exclude-conflicts` leaves them out of the judged split"
                + (f"; {conflicts['dropped_from_train']} dropped from training (--drop-conflicts)"
                   if "dropped_from_train" in conflicts else "; `--drop-conflicts` leaves them out of training")
            )

    # --- model --------------------------------------------------------------------------------------------
    def _targets(self, labels: np.ndarray) -> torch.Tensor:
        if self.meta.binary:
            ok = self.meta.classes.index(self.meta.ok_class)
            return torch.from_numpy((labels != ok).astype(np.float32))
        return torch.from_numpy(labels)

    def _loss(self) -> nn.Module:
        labels = self.data.labels[self.idx["train"]]
        if self.meta.binary:
            y = self._targets(labels)
            pos = float(y.sum())
            return nn.BCEWithLogitsLoss(pos_weight=torch.tensor([(len(y) - pos) / max(1.0, pos)]))
        counts = np.bincount(labels, minlength=len(self.meta.classes)).astype(np.float32)
        w = counts.sum() / (len(counts) * np.maximum(counts, 1))
        return nn.CrossEntropyLoss(weight=torch.from_numpy(w))

    def _batch_loss(self, net: nn.Module, loss_fn: nn.Module, x: np.ndarray, y: np.ndarray):
        logits = net(torch.from_numpy(normalize(x, self.meta)))
        if self.meta.binary:
            logits = logits[:, 0]
        return loss_fn(logits, self._targets(y)), logits

    def probs(self, net: nn.Module, idx: np.ndarray, batch: int = 128) -> np.ndarray:
        net.eval()
        out = []
        with torch.inference_mode():
            for a in range(0, len(idx), batch):
                logits = net(torch.from_numpy(normalize(self.data.images[idx[a : a + batch]], self.meta)))
                out.append((torch.sigmoid(logits) if self.meta.binary else torch.softmax(logits, 1)).numpy())
        return np.concatenate(out) if out else np.zeros((0, self.meta.num_outputs), np.float32)

    def _val(self, net: nn.Module, loss_fn: nn.Module) -> dict:
        """Validation loss and metrics from one pass (default threshold 0.5 during training)."""
        idx = self.idx["val"]
        net.eval()
        total, probs = 0.0, []
        with torch.inference_mode():
            for a in range(0, len(idx), 128):
                x, y = self.data.subset(idx[a : a + 128])
                loss, logits = self._batch_loss(net, loss_fn, x, y)
                total += float(loss) * len(x)
                probs.append((torch.sigmoid(logits)[:, None] if self.meta.binary else torch.softmax(logits, 1))
                             .numpy())
        true = [self.meta.classes[i] for i in self.data.labels[idx]]
        m = compute_metrics(self.meta, np.concatenate(probs), true, 0.5)
        return {"val_loss": total / len(idx), "val_acc": m["accuracy"], "val_recall": m["recall"]}

    def _metrics(self, net: nn.Module, split: str, threshold: float | None = None) -> dict:
        idx = self.idx[split]
        true = [self.meta.classes[i] for i in self.data.labels[idx]]
        return compute_metrics(self.meta, self.probs(net, idx), true, threshold)

    # --- loop ---------------------------------------------------------------------------------------------
    def run(self) -> Path:
        o = self.o
        o.out.mkdir(parents=True, exist_ok=True)
        torch.set_num_threads(o.threads or min(2, torch.get_num_threads()))
        torch.manual_seed(o.seed)
        self.load()
        net = build_network(self.meta, self.weights_path)
        opt = torch.optim.AdamW(net.parameters(), lr=o.lr, weight_decay=o.weight_decay)
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        # The moving average of the weights is steadier than the last step's: it is what is validated and kept.
        steps = max(1, len(self.idx["train"]) // o.batch_size)
        self.ema_decay = (1.0 - 1.0 / steps) if o.ema is None else float(o.ema)
        ema = None
        if self.ema_decay > 0:
            ema = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(self.ema_decay), use_buffers=True)
        judged = ema.module if ema is not None else net  # the weights validated, kept and shipped
        # Whole batches only (drop_last): a last batch of a few images gives BatchNorm a noisy step each epoch.
        batches = max(1, len(self.idx["train"]) // o.batch_size)
        per_step = o.schedule == "onecycle"
        # A onecycle run is noisy while the learning rate is high and settles as it decays to zero: stopping it
        # early keeps weights from the noisy middle, so by default it runs its --epochs (the best epoch is kept).
        patience = o.patience if o.patience is not None else (o.epochs if per_step else 6)
        if per_step:
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=o.lr, total_steps=batches * o.epochs,
                                                        pct_start=0.15)
        else:
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.3, patience=max(1, patience // 2))
        loss_fn = self._loss()
        state = {"epoch": 0, "history": [], "best_loss": float("inf"), "best_epoch": 0, "bad": 0,
                 "best_state": None, "train_seconds": 0.0}
        last = o.out / "last.pt"
        if o.resume:
            state = self._resume(last, net, opt, sched, ema)
            if per_step and sched.total_steps != batches * o.epochs:
                raise UserError(f"--resume: {last} was started with another --epochs or --batch-size (the onecycle "
                                "schedule spans the whole run); give the same values as the first run")
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TextColumn("{task.fields[info]}"))
        train_idx = self.idx["train"]
        for epoch in range(state["epoch"] + 1, o.epochs + 1):
            if state["bad"] >= patience:
                break
            t0 = time.perf_counter()
            rng = np.random.default_rng([o.seed, epoch])  # per-epoch streams: resume replays the same run
            torch.manual_seed(o.seed * 100003 + epoch)
            order = rng.permutation(train_idx)
            net.train()
            tot_loss = tot_ok = seen = 0.0
            with Progress(*columns, console=self.console, transient=True) as prog:
                task = prog.add_task(f"epoch {epoch}/{o.epochs}", total=len(order), info="")
                for a in range(0, len(order), o.batch_size):
                    b = order[a : a + o.batch_size]
                    if len(b) < o.batch_size and a > 0:
                        continue
                    x, y = self.data.subset(b)
                    x = augment_batch(x, rng, rotate_deg=o.rotate_deg, scale=o.scale_jitter, shift=o.shift_jitter)
                    opt.zero_grad()
                    loss, logits = self._batch_loss(net, loss_fn, x, y)
                    loss.backward()
                    opt.step()
                    if per_step:
                        sched.step()
                    if ema is not None:
                        ema.update_parameters(net)
                    with torch.no_grad():
                        if self.meta.binary:
                            correct = ((logits > 0).numpy() == self._targets(y).numpy().astype(bool)).sum()
                        else:
                            correct = (logits.argmax(1).numpy() == y).sum()
                    tot_loss += float(loss.detach()) * len(b)
                    tot_ok += float(correct)
                    seen += len(b)
                    prog.update(task, advance=len(b), info=f"loss {tot_loss / seen:.4f} acc {tot_ok / seen:.4f}")
            row = {"epoch": epoch, "train_loss": tot_loss / seen, "train_acc": tot_ok / seen,
                   **self._val(judged, loss_fn), "lr": opt.param_groups[0]["lr"]}
            row["seconds"] = time.perf_counter() - t0
            state["train_seconds"] += row["seconds"]
            if not per_step:
                sched.step(row["val_loss"])
            improved = row["val_loss"] < state["best_loss"] - 1e-4
            if improved:
                state.update(best_loss=row["val_loss"], best_epoch=epoch, bad=0)
            else:
                state["bad"] += 1
            # Kept weights: plateau keeps the best validation epoch; onecycle keeps the latest (the schedule's end,
            # where the rate has decayed, is what it is for; a mid-run val-loss dip is mostly noise).
            if improved or per_step:
                state["best_state"] = {k: v.detach().clone() for k, v in judged.state_dict().items()}
                state["kept_epoch"] = epoch
            state["history"].append(row)
            state["epoch"] = epoch
            self.console.print(
                f"epoch {epoch:3d}  train loss {row['train_loss']:.4f} acc {row['train_acc']:.4f}  "
                f"val loss {row['val_loss']:.4f} acc {row['val_acc']:.4f} recall {row['val_recall']:.4f}  "
                f"{row['seconds']:.0f}s{'  *best' if improved else ''}"
            )
            if ema is not None:
                state["ema_state"] = ema.module.state_dict()
                state["ema_n"] = int(ema.n_averaged)
            save_checkpoint(last, net.state_dict(), self.meta, optimizer=opt.state_dict(),
                            scheduler=sched.state_dict(), train_state=_plain(state),
                            best_state=state["best_state"], digest=self.split_info["digest"]["train"])
        if state["best_state"] is None:
            raise UserError(f"{last}: no completed epoch to take weights from; run more --epochs")
        net.load_state_dict(state["best_state"])
        return self._finish(net, state)

    def _resume(self, last: Path, net: nn.Module, opt, sched, ema) -> dict:
        if not last.is_file():
            raise UserError(f"--resume: {last} not found; start without --resume")
        meta, weights, payload = load_checkpoint(last)
        if payload.get("digest") != self.split_info["digest"]["train"] or meta.classes != self.meta.classes:
            raise UserError(f"--resume: {last} was trained on other data or another split; use a new --out")
        net.load_state_dict(weights)
        opt.load_state_dict(payload["optimizer"])
        sched.load_state_dict(payload["scheduler"])
        state = dict(payload["train_state"])
        state["best_state"] = payload["best_state"]
        if ema is not None and "ema_state" in state:
            ema.module.load_state_dict(state["ema_state"])
            ema.n_averaged.fill_(state["ema_n"])
        self.console.print(f"resuming after epoch {state['epoch']} (best epoch {state['best_epoch']})")
        return state

    def _finish(self, net: nn.Module, state: dict) -> Path:
        o = self.o
        meta = self.meta
        if o.target_recall is not None and meta.ok_class is not None:
            idx = self.idx["val"]
            scores = meta.defect_scores(self.probs(net, idx))
            is_def = np.array([meta.classes[i] != meta.ok_class for i in self.data.labels[idx]])
            choice = choose_threshold(scores, is_def, o.target_recall)
            if meta.binary:
                meta.threshold = choice.threshold
            meta.extra["threshold_choice"] = {**choice.to_dict(), "chosen_on": "val"}
            self.console.print(f"threshold {choice.threshold:.4f} for defect recall >= {o.target_recall} on val "
                               f"(val recall {choice.recall:.4f}, false rejects {choice.false_reject_rate:.4f})")
        metrics = {s: _brief(self._metrics(net, s)) for s in ("val", "test")}
        meta.extra.update(
            split=self.split_info,
            metrics=metrics,
            training={"epochs_run": state["epoch"], "best_epoch": state["best_epoch"],
                      "kept_epoch": state.get("kept_epoch", state["best_epoch"]),
                      "kept": "last epoch (onecycle)" if o.schedule == "onecycle" else "best validation loss",
                      "seed": o.seed,
                      "batch_size": o.batch_size, "lr": o.lr, "schedule": o.schedule,
                      "weight_decay": o.weight_decay, "ema": self.ema_decay,
                      "train_seconds": round(state["train_seconds"], 1),
                      "pretrained": str(self.weights_path) if self.weights_path else None,
                      "augmentation": f"rotation +-{o.rotate_deg} deg, scale +-{o.scale_jitter:.0%}, "
                                      f"shift +-{o.shift_jitter:.0%}, h/v flips, brightness/contrast",
                      "torch": torch.__version__},
        )
        model_path = o.out / "model.pt"
        save_checkpoint(model_path, net.state_dict(), meta)
        (o.out / "history.json").write_text(json.dumps(state["history"], indent=2) + "\n")
        plot_curves(state["history"], o.out / "curves.png")
        t = metrics["test"]
        self.console.print(
            f"test ({t['n_images']} held-out images): accuracy {t['accuracy']:.4f} precision {t['precision']:.4f} "
            f"recall {t['recall']:.4f} f1 {t['f1']:.4f} at threshold {meta.threshold:.4f}; wrote {model_path}"
        )
        return model_path


def _brief(m: dict) -> dict:
    keep = ("n_images", "accuracy", "precision", "recall", "f1", "threshold", "confusion_matrix",
            "confusion_matrix_labels", "macro")
    return {k: m[k] for k in keep if k in m}


def _plain(state: dict) -> dict:
    return {k: v for k, v in state.items() if k not in ("best_state",)}


def plot_curves(history: list[dict], path: Path) -> None:
    """Loss and accuracy per epoch, train and validation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(ep, [h["train_loss"] for h in history], label="train")
    a.plot(ep, [h["val_loss"] for h in history], label="validation")
    a.set_xlabel("epoch")
    a.set_ylabel("loss")
    a.legend()
    b.plot(ep, [h["train_acc"] for h in history], label="train")
    b.plot(ep, [h["val_acc"] for h in history], label="validation")
    b.set_xlabel("epoch")
    b.set_ylabel("accuracy")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def train(opts: TrainOptions, console=None) -> Path:
    return Trainer(opts, console).run()

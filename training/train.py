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
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from engines.archs import ARCHS, build_network, load_weights
from engines.checkpoint import load_checkpoint, save_checkpoint
from engines.errors import UserError
from engines.meta import ModelMeta
from engines.preprocess import combine_views, normalize
from training.augment import augment_batch
from training.data import LoadedData, index_dataset, load_images
from training.metrics import compute_metrics
from training.split import SPLITS, group_split, split_digest
from training.threshold import choose_threshold

if TYPE_CHECKING:
    from rich.console import Console

log = logging.getLogger(__name__)

MIN_STEPS = 10  # fewer fine-tuning steps than this are not worth their time: the probed head is kept
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
    lr: float | None = None  # peak learning rate (onecycle) or starting one; None: 2e-3 seed CNN, 1e-3 backbone
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
    fit: str = "stretch"  # engines.preprocess: "stretch" or "letterbox" (aspect ratio kept)
    tile_aspect: float = 0.0  # engines.preprocess tiles: 0 off
    deadline: float | None = None  # time.monotonic() by which the run must end: epochs are planned to fit
    backbone_lr_scale: float = 0.3  # a pretrained backbone learns at this fraction of the head's rate
    probe_init: bool = True  # pretrained: start the head from a linear probe on frozen features
    freeze_stages: int = 3  # efficientnet_lite0: the stem and its first stages keep their ImageNet weights
    cached_trunk: bool = True  # efficientnet_lite0: tune only the last stages on cached trunk maps (training.cached)
    target_recall_guard: float = 0.95  # the recall at which the false-reject rate is judged (weak-model guard)
    min_auc: float = 0.9  # weak-model guard: validation ROC AUC below this is weak
    max_false_reject: float = 0.2  # weak-model guard: more false rejects than this at the target recall is weak


def pretrained_weights(arch: str, weights: Path | None) -> Path | None:
    """ImageNet weights for a backbone; None (with a warning) for a torchvision one without any.

    efficientnet_lite0: ``--weights FILE``, else the file inside the installed weights package (offline).
    torchvision backbones: ``--weights FILE``; ``--weights imagenet`` downloads into the torch cache (needs a
    network); without ``--weights``, the torch cache when it holds them.
    """
    if arch == "seedcnn":
        return None
    if weights is not None and str(weights) != "imagenet":
        if not Path(weights).is_file():
            raise UserError(f"--weights {weights}: file not found")
        return Path(weights)
    if arch == "efficientnet_lite0":
        from engines.lite0 import INSTALL_HINT, packaged_weights

        found = packaged_weights()
        if found is None:
            raise UserError(f"--arch efficientnet_lite0: its ImageNet weights package is not installed; {INSTALL_HINT}")
        return found
    try:
        import torchvision.models as tvm

        entry = tvm.get_model_weights(arch).DEFAULT
        cached = Path(torch.hub.get_dir()) / "checkpoints" / entry.url.rsplit("/", 1)[-1]
    except Exception:  # noqa: BLE001 - any lookup failure means "not cached"
        entry, cached = None, None
    if cached is not None and cached.is_file():
        return cached
    if weights is not None and entry is not None:  # --weights imagenet: download into the torch cache
        import contextlib
        import io

        log.info("downloading %s ImageNet weights from %s", arch, entry.url)
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # torch.hub prints its own "Downloading" line
                torch.hub.load_state_dict_from_url(entry.url, progress=False, check_hash=True)
        except Exception as exc:  # noqa: BLE001 - URLError, HTTP errors, hash mismatch
            raise UserError(
                f"--weights imagenet: could not download the {arch} ImageNet weights from {entry.url} "
                f"({type(exc).__name__}); with no network, give --weights FILE or use --arch "
                "efficientnet_lite0 (offline weights)"
            ) from None
        return cached
    log.warning("no ImageNet weights for %s (give --weights PATH or --weights imagenet): training from scratch", arch)
    return None


class Trainer:
    """One training run; :meth:`run` returns the path of ``model.pt``."""

    def __init__(self, opts: TrainOptions, console: Console | None = None) -> None:
        if opts.arch not in ARCHS:
            raise UserError(f"unknown --arch {opts.arch!r}; supported: {', '.join(ARCHS)}")
        if opts.lr is None:
            opts.lr = 2e-3 if opts.arch == "seedcnn" else 1e-3
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
        # ImageNet first layers want RGB: gray images are replicated to 3 channels
        channels = 3 if self.weights_path is not None or o.arch == "efficientnet_lite0" else None
        if o.tile_aspect and not (len(index.classes) == 2 and index.ok_class is not None):
            raise UserError(
                "--tile-aspect: tiles need a two-class good/defect set (a part's score is its worst "
                "tile's); use --tile-aspect 0 for a multi-class set"
            )
        with Progress(console=self.console, transient=True) as prog:
            task = prog.add_task("decoding images", total=len(index.items))
            data = load_images(
                index, o.img_size, channels, progress=lambda: prog.advance(task), fit=o.fit, tile_aspect=o.tile_aspect
            )
        self.data: LoadedData = data
        split = group_split(data.labels, data.hashes, seed=o.seed, max_distance=o.dup_distance)
        self.split = split
        self.idx = {s: split.indices(s) for s in SPLITS}
        for s in ("train", "val"):
            if len(np.unique(data.labels[self.idx[s]])) < len(index.classes):
                raise UserError(
                    f"{index.root}: too few images to give every class a {s} share ({index.counts()}); add images"
                )
        from training.conflicts import conflict_report, label_conflicts

        split_of = {data.items[i].key: s for s in SPLITS for i in self.idx[s]}
        all_keys = [it.key for it in data.items]
        details: list = []
        pairs = label_conflicts(data.smalls, data.labels, full=[it.path for it in data.items], details=details)
        conflicts = conflict_report(
            all_keys, [index.classes[c] for c in data.labels], pairs, split_of.__getitem__, details=details
        )
        if o.drop_conflicts and pairs:
            involved = {i for p in pairs for i in p[:2]}
            before = len(self.idx["train"])
            self.idx["train"] = np.array([i for i in self.idx["train"] if i not in involved], dtype=np.int64)
            conflicts["dropped_from_train"] = before - len(self.idx["train"])
        if o.arch == "efficientnet_lite0":
            from engines.lite0 import MEAN, STD

            mean, std = MEAN, STD
        elif self.weights_path is not None:
            mean, std = IMAGENET_MEAN, IMAGENET_STD
        else:
            x = data.views(self.idx["train"])[0].astype(np.float32) / 255.0
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
        summary = {
            **index.summary(),
            "n_images": len(data.items),
            "n_skipped": len(data.skipped),
            "skipped": [f"{k}: {why}" for k, why in data.skipped[:50]],
        }
        self.meta = ModelMeta(
            o.arch,
            index.classes,
            index.ok_class,
            o.img_size,
            data.channels,
            mean,
            std,
            0.5,
            {"data": summary},
            fit=o.fit,
            tile_aspect=o.tile_aspect,
        )
        self.console.print(
            f"data: {summary['n_images']} images {index.counts()} ({summary['n_skipped']} skipped), "
            f"{data.channels} channel(s), {len(data.images)} model views; "
            f"split train/val/test {split.report['counts']}; "
            f"{split.report['near_duplicate_pairs']} near-duplicate pairs "
            f"({split.report['pairs_across_naive_random_split']} would cross a random split, "
            f"{split.report['pairs_across_this_split']} cross this one)"
        )
        if conflicts["n_pairs"]:
            self.console.print(
                f"[yellow]label conflicts:[/] {conflicts['n_pairs']} pair(s) of images with different labels that "
                f"differ nowhere at full resolution, {conflicts['n_images']} images {conflicts['images_by_split']}: "
                "the same part under two labels; review them (listed in the model's metadata, "
                "split.label_conflicts); `inspector evaluate "
                "--exclude-conflicts` leaves them out of the judged split"
                + (
                    f"; {conflicts['dropped_from_train']} dropped from training (--drop-conflicts)"
                    if "dropped_from_train" in conflicts
                    else "; `--drop-conflicts` leaves them out of training"
                )
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

    def tensor(self, x: np.ndarray) -> torch.Tensor:
        """uint8 views -> the normalised input; channels-last for Lite0 (its depthwise convolutions run several
        times faster that way on a CPU)."""
        t = torch.from_numpy(normalize(x, self.meta))
        return t.contiguous(memory_format=torch.channels_last) if self.meta.arch == "efficientnet_lite0" else t

    def _batch_loss(self, net: nn.Module, loss_fn: nn.Module, x: np.ndarray, counts: list[int], y: np.ndarray):
        """Loss and per-item logits; a tiled item's logit is its worst (highest) tile's."""
        logits = net(self.tensor(x))
        if self.meta.binary:
            logits = logits[:, 0]
            if len(counts) != len(logits):
                logits = torch.stack([t.max() for t in torch.split(logits, counts)])
        return loss_fn(logits, self._targets(y)), logits

    def probs(self, net: nn.Module, idx: np.ndarray, batch: int = 64) -> np.ndarray:
        """Model outputs per item (tiles folded by engines.preprocess.combine_views, as at run time)."""
        net.eval()
        out = []
        with torch.inference_mode():
            for a in range(0, len(idx), batch):
                x, counts, _ = self.data.views(idx[a : a + batch])
                logits = net(self.tensor(x))
                p = (torch.sigmoid(logits) if self.meta.binary else torch.softmax(logits, 1)).numpy()
                out.append(combine_views(p, counts, self.meta))
        return np.concatenate(out) if out else np.zeros((0, self.meta.num_outputs), np.float32)

    def _val(self, net: nn.Module, loss_fn: nn.Module) -> dict:
        """Validation loss and metrics from one pass (default threshold 0.5 during training)."""
        idx = self.idx["val"]
        net.eval()
        total, probs = 0.0, []
        with torch.inference_mode():
            for a in range(0, len(idx), 64):
                x, counts, y = self.data.views(idx[a : a + 64])
                loss, logits = self._batch_loss(net, loss_fn, x, counts, y)
                total += float(loss) * len(y)
                probs.append((torch.sigmoid(logits)[:, None] if self.meta.binary else torch.softmax(logits, 1)).numpy())
        true = [self.meta.classes[i] for i in self.data.labels[idx]]
        m = compute_metrics(self.meta, np.concatenate(probs), true, 0.5)
        row = {"val_loss": total / len(idx), "val_acc": m["accuracy"], "val_recall": m["recall"]}
        auc = m.get("defect_vs_ok", {}).get("roc_auc")
        if auc is not None:
            row["val_auc"] = auc
        return row

    def _split_probs(self, net: nn.Module, split: str) -> np.ndarray:
        """Outputs on a split for the final report, computed once per split (the weights no longer change)."""
        memo = self.__dict__.setdefault("_final_probs", {})
        if split not in memo:
            memo[split] = self.probs(net, self.idx[split])
        return memo[split]

    def _metrics(self, net: nn.Module, split: str, threshold: float | None = None) -> dict:
        idx = self.idx[split]
        true = [self.meta.classes[i] for i in self.data.labels[idx]]
        return compute_metrics(self.meta, self._split_probs(net, split), true, threshold)

    # --- loop ---------------------------------------------------------------------------------------------
    def _param_groups(self, net: nn.Module) -> list[dict]:
        """One rate for a network trained from scratch; a pretrained backbone learns slower than its new head."""
        o = self.o
        if o.arch == "seedcnn":
            return [{"params": list(net.parameters()), "lr": o.lr}]
        head = (
            net.get_classifier()
            if hasattr(net, "get_classifier")
            else (net.fc if hasattr(net, "fc") else net.classifier)
        )
        head_ids = {id(p) for p in head.parameters()}
        body = [p for p in net.parameters() if id(p) not in head_ids and p.requires_grad]
        return [{"params": body, "lr": o.lr * o.backbone_lr_scale}, {"params": list(head.parameters()), "lr": o.lr}]

    def _freeze(self, net: nn.Module) -> list[nn.Module]:
        """efficientnet_lite0: stem and the first ``freeze_stages`` stages stay as ImageNet trained them.

        Their generic edge/texture filters need no change, no gradient flows through the high-resolution
        early layers (a cheaper step on a CPU) and a few hundred images train fewer weights.
        """
        if self.o.arch != "efficientnet_lite0" or self.o.freeze_stages <= 0:
            return []
        mods = [net.conv_stem, net.bn1, *list(net.blocks)[: self.o.freeze_stages]]
        for m in mods:
            for p in m.parameters():
                p.requires_grad_(False)
        return mods

    def _seconds_per_step(self, net: nn.Module, loss_fn: nn.Module) -> float:
        """Measured wall time of one training step (forward, backward, update) on a throwaway copy."""
        import copy

        probe = copy.deepcopy(net).train()
        opt = torch.optim.SGD(probe.parameters(), lr=0.0)
        b = self.idx["train"][: self.o.batch_size]
        x, counts, y = self.data.views(b)
        times = []
        for _ in range(3):
            t = time.perf_counter()
            opt.zero_grad()
            loss, _ = self._batch_loss(probe, loss_fn, x, counts, y)
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - t)
        return float(np.median(times[1:]))

    def _plan_epochs(self, net: nn.Module, loss_fn: nn.Module, batches: int) -> int:
        """Epochs that fit before the deadline: measured seconds/step x steps, plus validation and the report."""
        o = self.o
        self.steps_cap = None
        if o.deadline is None:
            return o.epochs
        sec = self._seconds_per_step(net, loss_fn)
        views_per_item = len(self.data.images) / max(1, len(self.data.items))
        fwd = sec / 3.0 / o.batch_size * views_per_item  # inference seconds per item, about a third of a step
        per_epoch = batches * sec + len(self.idx["val"]) * fwd
        final = (len(self.idx["val"]) + len(self.idx["test"])) * fwd * 2 + 5.0
        left = o.deadline - time.monotonic() - final
        planned = int(max(0, min(o.epochs, left // max(per_epoch, 1e-6))))
        self.steps_cap = None
        if planned == 0:
            # Not one whole epoch fits: one shorter pass over a random share of the training split, when at least
            # MIN_STEPS fit; else none at all (a probed head is kept as it is, never a budget overrun).
            steps = int((left - len(self.idx["val"]) * fwd) // max(sec, 1e-6))
            if steps >= MIN_STEPS or getattr(self, "initial", None) is None:
                planned, self.steps_cap = 1, max(1, min(batches, steps))
        self.plan = {
            "seconds_per_step": round(sec, 3),
            "seconds_per_epoch_planned": round(per_epoch, 1),
            "epochs_planned": planned,
            "steps_per_epoch": self.steps_cap or batches,
            "budget_left_s": round(left, 1),
        }
        self.console.print(
            f"plan: {sec:.2f} s/step x {batches} steps + validation = {per_epoch:.0f} s/epoch; "
            f"{planned} epoch(s)"
            + (f" of {self.steps_cap} steps" if self.steps_cap else "")
            + f" fit the {max(0.0, left):.0f} s left"
        )
        return planned

    def run(self) -> Path:
        o = self.o
        o.out.mkdir(parents=True, exist_ok=True)
        torch.set_num_threads(o.threads or min(2, torch.get_num_threads()))
        torch.manual_seed(o.seed)
        self.plan: dict = {}
        self.probe_info: dict | None = None
        if not hasattr(self, "data"):
            self.load()
        initial = getattr(self, "initial", None)  # (net, probe info) when the default recipe probed already
        net = initial[0] if initial is not None else build_network(self.meta, self.weights_path)
        pretrained = self.weights_path is not None
        if initial is not None:
            self.probe_info = initial[1]
        elif pretrained and o.probe_init and not o.resume and hasattr(net, "forward_head"):
            from training.probe import init_head_from_probe

            self.probe_info = init_head_from_probe(self, net)
            self.console.print(
                f"linear probe on frozen features: val ROC AUC {self.probe_info.get('val_auc', 0):.4f}"
                f" ({self.probe_info['seconds']:.0f} s); the head starts from it"
            )
        loss_fn = self._loss()
        if o.arch == "efficientnet_lite0" and o.cached_trunk and not o.resume:
            return self._run_cached(net, loss_fn)
        # Whole batches only (drop_last): a last batch of a few images gives BatchNorm a noisy step each epoch.
        batches = max(1, len(self.idx["train"]) // o.batch_size)
        self._freeze(net)  # before timing: frozen early stages are what makes a step cheaper
        epochs = self._plan_epochs(net, loss_fn, batches)
        frozen = self._freeze(net)
        opt = torch.optim.AdamW(self._param_groups(net), lr=o.lr, weight_decay=o.weight_decay)
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        # The moving average of the weights is steadier than the last step's: it is what is validated and kept.
        # horizon: one epoch, or the last quarter of a short (budget-planned) run
        per_epoch_steps = self.steps_cap or batches
        steps = max(1, min(per_epoch_steps, per_epoch_steps * max(1, epochs) // 4 if o.deadline else per_epoch_steps))
        self.ema_decay = (1.0 - 1.0 / steps) if o.ema is None else float(o.ema)
        ema = None
        if self.ema_decay > 0:
            ema = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(self.ema_decay), use_buffers=True)
        judged = ema.module if ema is not None else net  # the weights validated, kept and shipped
        per_step = o.schedule == "onecycle"
        # A onecycle run is noisy while the learning rate is high and settles as it decays to zero: stopping it
        # early keeps weights from the noisy middle, so by default it runs its --epochs (the best epoch is kept).
        patience = o.patience if o.patience is not None else (epochs if per_step else 6)
        steps_per_epoch = self.steps_cap or batches
        if per_step and epochs == 0:
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
        elif per_step:
            sched = torch.optim.lr_scheduler.OneCycleLR(
                opt,
                max_lr=[g["lr"] for g in opt.param_groups],
                total_steps=steps_per_epoch * epochs,
                pct_start=0.15 if not pretrained else 0.1,
            )
        else:
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.3, patience=max(1, patience // 2))
        # A pretrained net keeps its best validation epoch (ROC AUC when there is one): a budget may end its
        # schedule before the rate has decayed.
        keep_best_auc = pretrained and self.meta.ok_class is not None
        state = {
            "epoch": 0,
            "history": [],
            "best_loss": float("inf"),
            "best_epoch": 0,
            "bad": 0,
            "best_state": None,
            "train_seconds": 0.0,
            "best_auc": -1.0,
            "stopped": None,
        }
        last = o.out / "last.pt"
        if o.resume:
            state = self._resume(last, net, opt, sched, ema)
            if per_step and sched.total_steps != steps_per_epoch * epochs:
                raise UserError(
                    f"--resume: {last} was started with another --epochs or --batch-size (the onecycle "
                    "schedule spans the whole run); give the same values as the first run"
                )
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[info]}"),
        )
        train_idx = self.idx["train"]
        for epoch in range(state["epoch"] + 1, epochs + 1):
            if state["bad"] >= patience:
                break
            if (
                o.deadline is not None
                and state["history"]
                and time.monotonic() + state["history"][-1]["seconds"] > o.deadline
            ):
                state["stopped"] = f"time budget: stopped before epoch {epoch}"
                self.console.print(f"[yellow]{state['stopped']}[/]")
                break
            t0 = time.perf_counter()
            rng = np.random.default_rng([o.seed, epoch])  # per-epoch streams: resume replays the same run
            torch.manual_seed(o.seed * 100003 + epoch)
            order = rng.permutation(train_idx)
            if self.steps_cap:
                order = order[: self.steps_cap * o.batch_size]  # the budget's share of one epoch
            net.train()
            for m in frozen:
                m.eval()  # frozen stages keep their BatchNorm statistics
            tot_loss = tot_ok = seen = 0.0
            with Progress(*columns, console=self.console, transient=True) as prog:
                task = prog.add_task(f"epoch {epoch}/{epochs}", total=len(order), info="")
                for a in range(0, len(order), o.batch_size):
                    b = order[a : a + o.batch_size]
                    if len(b) < o.batch_size and a > 0:
                        continue
                    x, counts, y = self.data.views(b)
                    x = augment_batch(x, rng, rotate_deg=o.rotate_deg, scale=o.scale_jitter, shift=o.shift_jitter)
                    opt.zero_grad()
                    loss, logits = self._batch_loss(net, loss_fn, x, counts, y)
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
            row = {
                "epoch": epoch,
                "train_loss": tot_loss / seen,
                "train_acc": tot_ok / seen,
                **self._val(judged, loss_fn),
                "lr": opt.param_groups[-1]["lr"],
            }
            row["seconds"] = time.perf_counter() - t0
            state["train_seconds"] += row["seconds"]
            if not per_step:
                sched.step(row["val_loss"])
            improved = row["val_loss"] < state["best_loss"] - 1e-4
            if improved:
                state.update(best_loss=row["val_loss"], best_epoch=epoch, bad=0)
            else:
                state["bad"] += 1
            if keep_best_auc:
                keep = row.get("val_auc", 0.0) >= state["best_auc"]
                if keep:
                    state["best_auc"] = row.get("val_auc", 0.0)
            else:
                # Kept weights: plateau keeps the best validation epoch; onecycle keeps the latest (the schedule's
                # end, where the rate has decayed, is what it is for; a mid-run val-loss dip is mostly noise).
                keep = improved or per_step
            if keep:
                state["best_state"] = {k: v.detach().clone() for k, v in judged.state_dict().items()}
                state["kept_epoch"] = epoch
            state["history"].append(row)
            state["epoch"] = epoch
            auc = f" auc {row['val_auc']:.4f}" if "val_auc" in row else ""
            self.console.print(
                f"epoch {epoch:3d}  train loss {row['train_loss']:.4f} acc {row['train_acc']:.4f}  "
                f"val loss {row['val_loss']:.4f} acc {row['val_acc']:.4f} recall {row['val_recall']:.4f}{auc}  "
                f"{row['seconds']:.0f}s{'  *kept' if keep else ''}"
            )
            if ema is not None:
                state["ema_state"] = ema.module.state_dict()
                state["ema_n"] = int(ema.n_averaged)
            save_checkpoint(
                last,
                net.state_dict(),
                self.meta,
                optimizer=opt.state_dict(),
                scheduler=sched.state_dict(),
                train_state=_plain(state),
                best_state=state["best_state"],
                digest=self.split_info["digest"]["train"],
            )
        if epochs == 0:
            self.console.print(
                "[yellow]no fine-tuning epoch fits the time budget: the linear-probe head on frozen features is kept[/]"
            )
            state["stopped"] = "time budget: no fine-tuning epoch fitted"
            state["best_state"] = {k: v.detach().clone() for k, v in net.state_dict().items()}
        if state["best_state"] is None:
            raise UserError(f"{last}: no completed epoch to take weights from; run more --epochs")
        net.load_state_dict(state["best_state"])
        if epochs == 0:
            self.keep_rule = "linear probe only (no fine-tuning epoch fitted the budget)"
            return self._finish(net, state)
        self.keep_rule = (
            "best validation ROC AUC"
            if keep_best_auc
            else "last epoch (onecycle)"
            if per_step
            else "best validation loss"
        )
        return self._finish(net, state)

    def _run_cached(self, net: nn.Module, loss_fn: nn.Module) -> Path:
        """Lite0's default: the last stages tuned on cached trunk maps (training.cached), best validation kept."""
        from training.cached import cache_trunk, fit_tail

        if getattr(self, "cache", None) is None:
            t0 = time.perf_counter()
            self.cache = {s: cache_trunk(self, net, self.idx[s]) for s in ("train", "val")}
            self.cache["train_idx"] = self.idx["train"]
            n = sum(len(c[1]) for c in self.cache.values())
            self.fwd_seconds = (time.perf_counter() - t0) / max(1, n) * 1.25
        self.ema_decay = 0.0
        state = fit_tail(self, net, loss_fn, self.cache, self.o.deadline, self.o.epochs, self.console)
        self.cache = None  # the maps are not needed any more: free the memory before the report
        net.load_state_dict(state["best_state"])
        self.keep_rule = (
            "best validation ROC AUC (last stages tuned on cached trunk maps)"
            if self.meta.binary or self.meta.ok_class is not None
            else "best validation accuracy (last stages tuned on cached trunk maps)"
        )
        if state["stopped"]:
            self.console.print(f"[yellow]{state['stopped']}[/]")
        return self._finish(net, state)

    def _resume(self, last: Path, net: nn.Module, opt, sched, ema) -> dict:
        if not last.is_file():
            raise UserError(f"--resume: {last} not found; start without --resume")
        meta, weights, payload = load_checkpoint(last)
        if payload.get("digest") != self.split_info["digest"]["train"] or meta.classes != self.meta.classes:
            raise UserError(f"--resume: {last} was trained on other data or another split; use a new --out")
        for field, flag in (("arch", "--arch"), ("input_size", "--img-size"), ("channels", None)):
            was, now = getattr(meta, field), getattr(self.meta, field)
            if was != now:
                how = f"resume with {flag} {was}" if flag else "resume with the same data"
                raise UserError(
                    f"--resume: {last} was trained with {field} {was}, this run asks for {now}; {how}, or start a "
                    "new run with a new --out"
                )
        load_weights(net, weights, meta, last)
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
            scores = meta.defect_scores(self._split_probs(net, "val"))
            is_def = np.array([meta.classes[i] != meta.ok_class for i in self.data.labels[idx]])
            choice = choose_threshold(scores, is_def, o.target_recall)
            if meta.binary:
                meta.threshold = choice.threshold
            meta.extra["threshold_choice"] = {**choice.to_dict(), "chosen_on": "val"}
            self.console.print(
                f"threshold {choice.threshold:.4f} for defect recall >= {o.target_recall} on val "
                f"(val recall {choice.recall:.4f}, false rejects {choice.false_reject_rate:.4f})"
            )
        full = {s: self._metrics(net, s) for s in ("val", "test")}
        metrics = {s: _brief(full[s]) for s in ("val", "test")}
        quality = None
        if meta.ok_class is not None:
            idx = self.idx["val"]
            scores = meta.defect_scores(self._split_probs(net, "val"))
            is_def = np.array([meta.classes[i] != meta.ok_class for i in self.data.labels[idx]])
            quality = judge_quality(
                scores, is_def, o.target_recall or o.target_recall_guard, o.min_auc, o.max_false_reject
            )
            meta.extra["quality"] = quality
        meta.extra.update(
            split=self.split_info,
            metrics=metrics,
            training={
                "epochs_run": state["epoch"],
                "best_epoch": state["best_epoch"],
                "kept_epoch": state.get("kept_epoch", state["best_epoch"]),
                "kept": self.keep_rule,
                "stopped": state.get("stopped"),
                "plan": self.plan,
                "probe": self.probe_info,
                "fit": o.fit,
                "tile_aspect": o.tile_aspect,
                "backbone_lr_scale": o.backbone_lr_scale if self.weights_path else None,
                "frozen_stages": o.freeze_stages if o.arch == "efficientnet_lite0" else None,
                "seed": o.seed,
                "batch_size": o.batch_size,
                "lr": o.lr,
                "schedule": o.schedule,
                "weight_decay": o.weight_decay,
                "ema": self.ema_decay,
                "train_seconds": round(state["train_seconds"], 1),
                "pretrained": str(self.weights_path) if self.weights_path else None,
                "augmentation": f"rotation +-{o.rotate_deg} deg, scale +-{o.scale_jitter:.0%}, "
                f"shift +-{o.shift_jitter:.0%}, h/v flips, brightness/contrast",
                "torch": torch.__version__,
            },
        )
        model_path = o.out / "model.pt"
        save_checkpoint(model_path, net.state_dict(), meta)
        (o.out / "history.json").write_text(json.dumps(state["history"], indent=2) + "\n")
        plot_curves(state["history"], o.out / "curves.png")
        t = metrics["test"]
        if quality is not None:
            self.console.print(
                f"validation: ROC AUC {quality['val_auc']:.4f}, false rejects "
                f"{quality['false_reject_rate']:.1%} at defect recall {quality['target_recall']:.2f}"
            )
        self.console.print(
            f"test ({t['n_images']} held-out images): accuracy {t['accuracy']:.4f} precision {t['precision']:.4f} "
            f"recall {t['recall']:.4f} f1 {t['f1']:.4f} at threshold {meta.threshold:.4f}; wrote {model_path}"
        )
        return model_path


def judge_quality(
    scores: np.ndarray, is_defect: np.ndarray, target_recall: float, min_auc: float = 0.9, max_false_reject: float = 0.2
) -> dict:
    """Did the model learn? Validation ROC AUC and the false-reject rate the target recall costs.

    A model below ``min_auc``, or that must reject more than ``max_false_reject`` of good parts to catch
    ``target_recall`` of the defects, is weak: the line would pass defects or bin good parts.
    """
    from sklearn.metrics import roc_auc_score

    y = np.asarray(is_defect, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    auc = float(roc_auc_score(y, s)) if 0 < y.sum() < len(y) and np.isfinite(s).all() else float("nan")
    frr = choose_threshold(s, y, target_recall).false_reject_rate if y.any() and np.isfinite(s).all() else 1.0
    reasons = []
    if not auc >= min_auc:
        reasons.append(f"validation ROC AUC {auc:.3f} < {min_auc}")
    if frr > max_false_reject:
        reasons.append(f"{frr:.0%} false rejects at defect recall {target_recall:g} > {max_false_reject:.0%}")
    return {
        "val_auc": auc,
        "target_recall": float(target_recall),
        "false_reject_rate": float(frr),
        "min_auc": float(min_auc),
        "max_false_reject": float(max_false_reject),
        "weak": bool(reasons),
        "reasons": reasons,
        "n_val": int(len(y)),
    }


WEAK_ADVICE = (
    "try the default recipe (no --arch; --budget-min 30 for more time), more images per class, "
    "--img-size 288 for small defects, or check the labels (the report lists label conflicts)"
)


ANOMALY_WEAK_ADVICE = (
    "train on crops as the line makes them, add good images, try --img-size 288 for small defects, "
    "or train the classifier (without --anomaly) where the folder has defect photos"
)


def weak_line(quality: dict, model_path: Path | str, advice: str = WEAK_ADVICE) -> str:
    """The one line that says a model did not learn, and what to try."""
    return (
        f"weak model: {'; '.join(quality['reasons'])} ({model_path} written for inspection); {advice}; "
        "--allow-weak accepts it"
    )


def _brief(m: dict) -> dict:
    keep = (
        "n_images",
        "accuracy",
        "precision",
        "recall",
        "f1",
        "threshold",
        "confusion_matrix",
        "confusion_matrix_labels",
        "macro",
    )
    return {k: m[k] for k in keep if k in m}


def _plain(state: dict) -> dict:
    return {k: v for k, v in state.items() if k not in ("best_state",)}


def plot_curves(history: list[dict], path: Path) -> None:
    """Loss and accuracy per epoch, train and validation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history = [
        {k: h.get(k, float("nan")) for k in ("epoch", "train_loss", "val_loss", "train_acc", "val_acc")}
        for h in history
    ]
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


def train(opts: TrainOptions, console: Console | None = None) -> Path:
    return Trainer(opts, console).run()

"""The default recipe: `inspector train --data DIR --out RUN` with no recipe flags.

A line engineer brings a folder of a new product. What works is not known in advance, so the recipe measures
on the VALIDATION split, inside a wall-time budget (``--budget-min``):

1. the input from the data: letterbox (aspect ratio kept) when the photos are not square, tiles when they are
   long (long/short side >= ``TILE_ASPECT``, two-class sets), and the candidate input sizes their resolution
   supports (no up-scaling far past the photos' own short side);
2. the pretrained backbone (EfficientNet-Lite0, ImageNet) at each candidate size: a linear probe on frozen
   features is cheap and says which size keeps the defects (the smallest within 0.005 ROC AUC of the best);
3. the backbone fine-tuned at that size (head from the probe, then the whole net at a lower rate), with the
   epochs that fit the budget (planned from measured seconds per step; a run stops when the next epoch would
   overrun);
4. the seed CNN, trained from scratch in the share of the budget it was given (``SEED_SHARE``), unless the
   backbone's probe already passes the weak-model guard's ROC AUC (``--min-auc``, 0.9; multi-class: its
   accuracy): then that share goes to the backbone's tuning. In a
   15-minute CPU budget the scratch CNN lost on every real set measured (validation ROC AUC 0.81 vs 0.97 on
   ELPV, 0.86 vs 0.996 on casting, accuracy 0.40 vs 0.99 on NEU-DET), so its share bought nothing there;
5. the candidate with the better validation ROC AUC (multi-class: accuracy) ships; both scores, the times and
   the reason go into the metadata (``extra.recipe``) and the console.

Trained models are compared on validation data only; the test split stays untouched for the final report.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from engines.errors import UserError
from training.data import index_dataset, read_image

if TYPE_CHECKING:
    from rich.console import Console

    from training.train import Trainer, TrainOptions

log = logging.getLogger(__name__)

SEED_SHARE = 0.15  # of the budget, for the seed CNN (it wins on easy sets, costs little to try)
PROBE_SHARE = 0.25  # of the budget, at most, for decoding and probing the input sizes
SEED_SIZE = 128
SIZES = (128, 160, 224, 288)
TILE_ASPECT = 2.0  # long/short side from which a photo is cut into tiles
MAX_TRIAL = 400  # photos sampled to measure the set's sizes


def data_shape(data: Path, layout: str, ok_class: str | None, manifest: Path | None) -> dict:
    """Sizes and aspect ratios of (a sample of) the photos, and what the recipe takes from them."""
    index = index_dataset(data, layout, ok_class, manifest)
    rng = np.random.default_rng(0)
    items = (
        index.items
        if len(index.items) <= MAX_TRIAL
        else [index.items[i] for i in sorted(rng.choice(len(index.items), MAX_TRIAL, replace=False))]
    )
    hw = []
    for it in items:
        try:
            hw.append(read_image(it.path).shape[:2])
        except Exception:  # noqa: BLE001 - bad files are counted where they are decoded for training
            continue
    if not hw:
        raise UserError(f"{data}: none of the sampled files is a readable image")
    arr = np.array(hw, dtype=np.float64)
    short, long_ = arr.min(axis=1), arr.max(axis=1)
    aspect = long_ / short
    binary = len(index.classes) == 2 and index.ok_class is not None
    tiles = binary and float(np.percentile(aspect, 75)) >= TILE_ASPECT
    square = float(np.percentile(aspect, 90)) <= 1.05
    # The model sees the short side (a tile, or the letterboxed long side squeezed): no size far past it.
    side = float(np.median(short)) if tiles else float(np.median(long_))
    sizes = [s for s in SIZES if s <= max(SIZES[0], side * 1.15)][-2:]  # the two largest the photos support
    return {
        "n_sampled": len(hw),
        "median_hw": [float(np.median(arr[:, 0])), float(np.median(arr[:, 1]))],
        "aspect_p50": float(np.median(aspect)),
        "aspect_p90": float(np.percentile(aspect, 90)),
        "fit": "stretch" if square else "letterbox",
        "tile_aspect": TILE_ASPECT if tiles else 0.0,
        "sizes": sizes,
        "binary": binary,
    }


def _score(trainer: Trainer) -> float:
    """The validation figure candidates are compared on: ROC AUC (binary/OK class) or accuracy."""
    q = trainer.meta.extra.get("quality")
    if q is not None and np.isfinite(q["val_auc"]):
        return float(q["val_auc"])
    return float(trainer.meta.extra["metrics"]["val"]["accuracy"])


def auto_train(
    opts: TrainOptions,
    console: Console | None = None,
    budget_min: float = 15.0,
    fit: str | None = None,
    tile_aspect: float | None = None,
    img_size: int | None = None,
) -> Path:
    """Choose and train the model for ``opts.data`` within ``budget_min`` minutes; returns RUN/model.pt.

    ``fit``, ``tile_aspect`` and ``img_size`` given by the user replace what the data suggests.
    """
    import torch

    from training.train import Trainer

    t_start = time.monotonic()
    deadline = t_start + budget_min * 60.0
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    shape = data_shape(opts.data, opts.layout, opts.ok_class, opts.manifest)
    if fit is not None:
        shape["fit"] = fit
    if tile_aspect is not None:
        shape["tile_aspect"] = float(tile_aspect)
    if img_size is not None:
        shape["sizes"] = [int(img_size)]
    from rich.console import Console

    console = console or Console(stderr=True)
    console.print(
        f"recipe: photos {shape['median_hw'][0]:.0f}x{shape['median_hw'][1]:.0f} px (median h x w), "
        f"aspect {shape['aspect_p50']:.2f} (p90 {shape['aspect_p90']:.2f}): fit {shape['fit']}"
        + (f", tiles from aspect {shape['tile_aspect']:g}" if shape["tile_aspect"] else "")
        + f"; backbone sizes to try {shape['sizes']}; budget {budget_min:g} min"
    )
    from engines.lite0 import packaged_weights

    have_backbone = packaged_weights() is not None
    candidates: list[dict] = []
    seed_reserve = SEED_SHARE * budget_min * 60.0
    base = replace(opts, fit=shape["fit"], tile_aspect=shape["tile_aspect"], lr=None)
    lite_trainer = None
    seed_skipped = None
    if have_backbone:
        # 2. the probe picks the size
        probes = []
        for size in shape["sizes"]:
            o = replace(
                base,
                arch="efficientnet_lite0",
                img_size=size,
                out=out / "candidates" / f"lite0_{size}",
                deadline=deadline - seed_reserve,
            )
            tr = Trainer(o, console)
            tr.load()
            from engines.archs import build_network
            from training.probe import init_head_from_probe

            torch.set_num_threads(opts.threads or min(2, torch.get_num_threads()))
            net = build_network(tr.meta, tr.weights_path)
            info = init_head_from_probe(tr, net)
            tr.initial = (net, info)  # the fine-tuning starts from this probed head
            score = info.get("val_auc", info.get("val_acc", 0.0))
            console.print(
                f"probe: EfficientNet-Lite0 at {size} px, frozen features: val "
                f"{'ROC AUC' if 'val_auc' in info else 'accuracy'} {score:.4f} ({info['seconds']:.0f} s)"
            )
            # the smallest size within 0.005 of the best: a larger input costs fine-tuning epochs
            if lite_trainer is None or score > max(p["val_score"] for p in probes) + 0.005:
                lite_trainer = tr
            probes.append({"size": size, "val_score": score, "seconds": info["seconds"]})
            nxt = [z for z in shape["sizes"] if z > size]
            spent = time.monotonic() - t_start
            if nxt and spent + info["seconds"] * (nxt[0] / size) ** 2 > PROBE_SHARE * budget_min * 60.0:
                console.print(
                    f"probe: {nxt[0]} px not tried, it would take the fine-tuning's time "
                    f"(~{info['seconds'] * (nxt[0] / size) ** 2:.0f} s)"
                )
                break  # the probes may not eat the fine-tuning's time
        chosen = lite_trainer.o.img_size
        best_probe = max(p["val_score"] for p in probes)
        if best_probe >= opts.min_auc:
            seed_skipped = (
                f"not tried: the backbone's probe already scores {best_probe:.4f} on validation (>= --min-auc "
                f"{opts.min_auc:g}); its share of the budget went to the backbone's tuning"
            )
            seed_reserve = 0.0
            console.print(f"recipe: seed CNN {seed_skipped}")
        # 3. fine-tune the chosen size until the seed CNN's share of the budget (all of it when that is skipped)
        lite_trainer.o.deadline = deadline - seed_reserve
        lite_trainer.o.epochs = 40
        path = lite_trainer.run()
        candidates.append(
            {
                "arch": "efficientnet_lite0",
                "img_size": chosen,
                "val_score": _score(lite_trainer),
                "path": str(path),
                "probes": probes,
                "seconds": round(time.monotonic() - t_start, 1),
            }
        )
    else:
        console.print(
            "[yellow]recipe: the pretrained backbone is not installed (pip install "
            "'inspector[pretrained]'): only the seed CNN is tried[/]"
        )
    # 4. the seed CNN in what is left
    t_seed = time.monotonic()
    if seed_skipped is None and deadline - t_seed > 30.0:
        o = replace(
            base, arch="seedcnn", img_size=SEED_SIZE, out=out / "candidates" / "seedcnn", deadline=deadline, epochs=30
        )
        tr = Trainer(o, console)
        path = tr.run()
        candidates.append(
            {
                "arch": "seedcnn",
                "img_size": SEED_SIZE,
                "val_score": _score(tr),
                "path": str(path),
                "seconds": round(time.monotonic() - t_seed, 1),
            }
        )
    if not candidates:
        raise UserError(f"--budget-min {budget_min:g}: no time left to train anything; give a larger budget")
    best = max(candidates, key=lambda c: c["val_score"])
    others = [c for c in candidates if c is not best]
    metric = "ROC AUC" if shape["binary"] else "accuracy"
    why = f"{best['arch']} at {best['img_size']} px: validation {metric} {best['val_score']:.4f}" + "".join(
        f" vs {c['arch']} {c['val_score']:.4f}" for c in others
    )
    recipe = {
        "chosen": best["arch"],
        "img_size": best["img_size"],
        "why": why,
        "data_shape": shape,
        "candidates": candidates,
        "seedcnn_skipped": seed_skipped,
        "budget_min": budget_min,
        "wall_seconds": round(time.monotonic() - t_start, 1),
        "compared_on": "val",
    }
    from engines.checkpoint import load_checkpoint, save_checkpoint

    meta, state, _ = load_checkpoint(best["path"])
    meta.extra["recipe"] = recipe
    model = out / "model.pt"
    save_checkpoint(model, state, meta)
    src = Path(best["path"]).parent
    for name in ("history.json", "curves.png"):
        if (src / name).is_file():
            shutil.copyfile(src / name, out / name)
    (out / "recipe.json").write_text(json.dumps(recipe, indent=2) + "\n")
    console.print(f"recipe chose {why}; {recipe['wall_seconds']:.0f} s of the {budget_min * 60:.0f} s budget")
    return model

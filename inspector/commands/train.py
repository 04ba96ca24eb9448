"""`inspector train --data DIR --out RUN_DIR`: train a good/defect (or multi-class) classifier.

With no recipe flags the default recipe (training.recipe) chooses the model and input size on validation data
within ``--budget-min``. A model that did not learn is reported in one line and exits 1 (``--allow-weak``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from inspector.commands.argtypes import below_one, count, fraction, index, inside, non_negative, positive, share

ARCH_CHOICES = ("auto", "seedcnn", "efficientnet_lite0", "resnet18", "mobilenet_v3_small", "efficientnet_b0")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a classifier on a folder of class sub-folders")
    p.add_argument(
        "--data",
        required=True,
        type=Path,
        help="dataset: DIR/<class>/<image>, or <class>_<n>.jpg names (--layout prefix), or a CSV",
    )
    p.add_argument("--out", required=True, type=Path, help="run folder: model.pt, history.json, curves.png")
    p.add_argument(
        "--arch",
        default="auto",
        choices=ARCH_CHOICES,
        help="auto (default): the recipe tries the pretrained EfficientNet-Lite0 and the seed CNN and "
        "keeps the better on validation data; or one architecture",
    )
    p.add_argument(
        "--budget-min",
        type=float,
        default=None,
        help="wall-time budget of the default recipe in minutes (default 15, sized for a 2-core CPU); "
        "with --arch, plans that run's epochs to fit it when given",
    )
    p.add_argument(
        "--img-size",
        type=count,
        default=None,
        help="square model input side in pixels (default: chosen from the data; 128 seedcnn, 224 "
        "backbones with --arch; 224 with --anomaly)",
    )
    p.add_argument(
        "--fit",
        default=None,
        choices=("stretch", "letterbox"),
        help="how a photo becomes the square input: stretch, or letterbox (aspect ratio kept; "
        "default for non-square photos)",
    )
    p.add_argument(
        "--tile-aspect",
        type=non_negative,
        default=None,
        help="cut photos whose long/short side is at least this into square tiles, score = worst "
        "tile (0: off; default from the data)",
    )
    p.add_argument("--epochs", type=count, default=30, help="most epochs (early stopping or the budget may end sooner)")
    p.add_argument("--batch-size", type=count, default=32)
    p.add_argument(
        "--patience",
        type=count,
        default=None,
        help="epochs without validation-loss gain before stopping (default: 6 with --schedule plateau; "
        "none with onecycle, whose decaying rate ends the run)",
    )
    p.add_argument(
        "--lr",
        type=positive,
        default=None,
        help="AdamW learning rate: the peak of the onecycle schedule, the start of plateau "
        "(default 2e-3 seedcnn; 1e-3 for a backbone's head, which its body takes x0.3)",
    )
    p.add_argument(
        "--schedule",
        default="onecycle",
        choices=("onecycle", "plateau"),
        help="onecycle: warm-up then cosine decay over --epochs; plateau: x0.3 when validation stalls",
    )
    p.add_argument("--weight-decay", type=non_negative, default=1e-4, help="AdamW weight decay")
    p.add_argument("--seed", type=index, default=0, help="seed for the split, shuffling and augmentation")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.pt")
    p.add_argument("--ok-class", default=None, help="class meaning a good part (default: ok/good/normal/...)")
    p.add_argument("--layout", default="auto", choices=("auto", "folders", "prefix", "manifest"))
    p.add_argument("--manifest", type=Path, default=None, help="CSV of path,label (paths relative to it)")
    p.add_argument(
        "--target-recall",
        type=fraction,
        default=None,
        help="choose the decision threshold on validation data for this defect recall",
    )
    p.add_argument(
        "--weights",
        type=Path,
        default=None,
        help="ImageNet state dict for a backbone, or 'imagenet': efficientnet_lite0 from its installed "
        "package (offline), torchvision backbones downloaded into the torch cache (needs a network)",
    )
    p.add_argument("--threads", type=count, default=None, help="torch CPU threads (default 2)")
    p.add_argument(
        "--dup-distance",
        type=index,
        default=20,
        help="pHash bits (of 256) within which two images count as near-duplicates",
    )
    p.add_argument(
        "--ema",
        type=below_one,
        default=None,
        help="decay of the moving average of the weights that is validated and shipped "
        "(default: a one-epoch horizon, 1 - 1/steps per epoch; 0: off)",
    )
    p.add_argument("--rotate", type=non_negative, default=180.0, help="augmentation rotation range in degrees (+-)")
    p.add_argument(
        "--scale-jitter",
        type=below_one,
        default=0.1,
        help="augmentation: +- this fraction of random zoom (the line's crops vary in size)",
    )
    p.add_argument(
        "--shift-jitter",
        type=below_one,
        default=0.05,
        help="augmentation: +- this fraction of the side of random shift (off-centre crops)",
    )
    p.add_argument(
        "--anomaly",
        action="store_true",
        help="anomaly mode: learn from the OK class alone (PatchCore-style; other class folders only "
        "choose the threshold and judge it); see docs/anomaly.md",
    )
    p.add_argument("--bank-size", type=count, default=4096, help="anomaly mode: memory-bank rows (coreset size)")
    p.add_argument(
        "--bank-flips",
        action="store_true",
        help="anomaly mode: also learn the good images mirrored left-right and top-bottom (only where a mirrored "
        "part is a good part: not for parts whose orientation or handedness is checked)",
    )
    p.add_argument(
        "--score-rule",
        choices=("auto", "patch", "image", "mix"),
        default="auto",
        help="anomaly mode: the image score from the patch bank, the whole-image bank, or the mix of both; "
        "auto keeps the best on the folder's validation defect images (patch when it has none)",
    )
    p.add_argument(
        "--image-bank-size",
        type=count,
        default=4096,
        help="anomaly mode: whole-image bank rows (one per good training image; a coreset beyond this)",
    )
    p.add_argument(
        "--score-fraction",
        type=share,
        default=0.03,
        help="anomaly mode: the image score averages this top share of the patch scores (0: the largest alone)",
    )
    p.add_argument(
        "--good-quantile",
        type=inside,
        default=0.99,
        help="anomaly mode: the held-out good score quantile that maps to 0.5 (the threshold when the "
        "folder has no defect images)",
    )
    p.add_argument(
        "--max-test-defects",
        type=count,
        default=None,
        help="anomaly mode: judge at most this many defect images (a fixed-seed sample; default all)",
    )
    p.add_argument(
        "--drop-conflicts",
        action="store_true",
        help="leave label conflicts (near-identical images with different labels) out of the training "
        "split; validation and test keep them (evaluate --exclude-conflicts)",
    )
    p.add_argument(
        "--min-auc",
        type=share,
        default=0.9,
        help="weak-model guard: validation ROC AUC below this is a model that did not learn",
    )
    p.add_argument(
        "--max-false-reject",
        type=share,
        default=0.2,
        help="weak-model guard: more than this share of good parts rejected at the target recall "
        "(--target-recall, else 0.95) is weak",
    )
    p.add_argument(
        "--full-finetune",
        action="store_true",
        help="efficientnet_lite0: train stages 3-6 on augmented photos every step instead of the last stage "
        "on cached trunk maps (slower per epoch on a CPU)",
    )
    p.add_argument(
        "--allow-weak",
        action="store_true",
        help="exit 0 even when the weak-model guard trips (the model is written either way)",
    )
    p.set_defaults(func=run_cleaning_up)


def run_cleaning_up(args: argparse.Namespace) -> int:
    """:func:`run`; a failed run removes the --out folder it created and left empty."""
    from ground.files import output_folder

    with output_folder(args.out):
        return run(args)


def run(args: argparse.Namespace) -> int:
    if args.anomaly:
        return _run_anomaly(args)
    import time

    from engines.errors import UserError
    from training.train import TrainOptions, train

    arch = args.arch
    size = args.img_size or (128 if arch == "seedcnn" else 224)
    opts = TrainOptions(
        data=args.data,
        out=args.out,
        arch="seedcnn" if arch == "auto" else arch,
        img_size=size,
        epochs=args.epochs,
        batch_size=args.batch_size,
        patience=args.patience,
        seed=args.seed,
        lr=args.lr,
        resume=args.resume,
        ok_class=args.ok_class,
        layout=args.layout,
        manifest=args.manifest,
        target_recall=args.target_recall,
        weights=args.weights,
        threads=args.threads,
        dup_distance=args.dup_distance,
        rotate_deg=args.rotate,
        ema=args.ema,
        scale_jitter=args.scale_jitter,
        shift_jitter=args.shift_jitter,
        schedule=args.schedule,
        weight_decay=args.weight_decay,
        drop_conflicts=args.drop_conflicts,
        fit=args.fit or "stretch",
        tile_aspect=args.tile_aspect or 0.0,
        min_auc=args.min_auc,
        max_false_reject=args.max_false_reject,
        cached_trunk=not args.full_finetune,
    )
    budget = 15.0 if args.budget_min is None else args.budget_min
    if budget <= 0:
        raise UserError(f"--budget-min must be more than 0 minutes, got {budget:g}")
    if arch == "auto":
        if args.resume:
            raise UserError(
                "--resume needs --arch ARCH of the run to resume (the default recipe trains its candidates afresh)"
            )
        from training.recipe import auto_train

        path = auto_train(opts, budget_min=budget, fit=args.fit, tile_aspect=args.tile_aspect, img_size=args.img_size)
    else:
        if args.budget_min is not None:
            opts.deadline = time.monotonic() + budget * 60.0
        path = train(opts)
    return _weak_exit(path, args)


def _weak_exit(path: Path, args: argparse.Namespace, advice: str | None = None) -> int:
    """Print the model's path; a model training judged weak is one more line, and exit 1 unless --allow-weak."""
    from engines.checkpoint import load_checkpoint
    from training.train import WEAK_ADVICE, weak_line

    print(path)
    meta, _, _ = load_checkpoint(path)
    quality = meta.extra.get("quality") or {}
    if quality.get("weak"):
        print(weak_line(quality, path, advice or WEAK_ADVICE), file=sys.stderr)
        return 0 if args.allow_weak else 1
    return 0


def _run_anomaly(args: argparse.Namespace) -> int:
    from training.anomaly import AnomalyOptions, train_anomaly

    opts = AnomalyOptions(
        data=args.data,
        out=args.out,
        img_size=args.img_size or 224,
        bank_size=args.bank_size,
        score_fraction=args.score_fraction,
        bank_flips=args.bank_flips,
        score_rule=args.score_rule,
        image_bank_size=args.image_bank_size,
        good_quantile=args.good_quantile,
        target_recall=args.target_recall,
        ok_class=args.ok_class,
        seed=args.seed,
        threads=args.threads,
        dup_distance=args.dup_distance,
        max_test_defects=args.max_test_defects,
        min_auc=args.min_auc,
        max_false_reject=args.max_false_reject,
    )
    from training.train import ANOMALY_WEAK_ADVICE

    return _weak_exit(train_anomaly(opts), args, ANOMALY_WEAK_ADVICE)

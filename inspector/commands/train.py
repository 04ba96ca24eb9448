"""`inspector train --data DIR --out RUN_DIR`: train a good/defect (or multi-class) classifier."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a classifier on a folder of class sub-folders")
    p.add_argument("--data", required=True, type=Path,
                   help="dataset: DIR/<class>/<image>, or <class>_<n>.jpg names (--layout prefix), or a CSV")
    p.add_argument("--out", required=True, type=Path, help="run folder: model.pt, history.json, curves.png")
    p.add_argument("--arch", default="seedcnn",
                   choices=("seedcnn", "resnet18", "mobilenet_v3_small", "efficientnet_b0"))
    p.add_argument("--img-size", type=int, default=None,
                   help="square model input side in pixels (default 128; 224 with --anomaly)")
    p.add_argument("--epochs", type=int, default=30, help="most epochs (early stopping may end sooner)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--patience", type=int, default=None,
                   help="epochs without validation-loss gain before stopping (default: 6 with --schedule plateau; "
                   "none with onecycle, whose decaying rate ends the run)")
    p.add_argument("--lr", type=float, default=2e-3,
                   help="AdamW learning rate: the peak of the onecycle schedule, the start of plateau")
    p.add_argument("--schedule", default="onecycle", choices=("onecycle", "plateau"),
                   help="onecycle: warm-up then cosine decay over --epochs; plateau: x0.3 when validation stalls")
    p.add_argument("--weight-decay", type=float, default=1e-4, help="AdamW weight decay")
    p.add_argument("--seed", type=int, default=0, help="seed for the split, shuffling and augmentation")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.pt")
    p.add_argument("--ok-class", default=None, help="class meaning a good part (default: ok/good/normal/...)")
    p.add_argument("--layout", default="auto", choices=("auto", "folders", "prefix", "manifest"))
    p.add_argument("--manifest", type=Path, default=None, help="CSV of path,label (paths relative to it)")
    p.add_argument("--target-recall", type=float, default=None,
                   help="choose the decision threshold on validation data for this defect recall")
    p.add_argument("--weights", type=Path, default=None, help="ImageNet state dict for a backbone")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default 2)")
    p.add_argument("--dup-distance", type=int, default=20,
                   help="pHash bits (of 256) within which two images count as near-duplicates")
    p.add_argument("--ema", type=float, default=None,
                   help="decay of the moving average of the weights that is validated and shipped "
                   "(default: a one-epoch horizon, 1 - 1/steps per epoch; 0: off)")
    p.add_argument("--rotate", type=float, default=180.0, help="augmentation rotation range in degrees (+-)")
    p.add_argument("--scale-jitter", type=float, default=0.1,
                   help="augmentation: +- this fraction of random zoom (the line's crops vary in size)")
    p.add_argument("--shift-jitter", type=float, default=0.05,
                   help="augmentation: +- this fraction of the side of random shift (off-centre crops)")
    p.add_argument("--anomaly", action="store_true",
                   help="anomaly mode: learn from the OK class alone (PatchCore-style; other class folders only "
                        "choose the threshold and judge it); see docs/anomaly.md")
    p.add_argument("--bank-size", type=int, default=2048, help="anomaly mode: memory-bank rows (coreset size)")
    p.add_argument("--good-quantile", type=float, default=0.99,
                   help="anomaly mode: the held-out good score quantile that maps to 0.5 (the threshold when the "
                        "folder has no defect images)")
    p.add_argument("--max-test-defects", type=int, default=None,
                   help="anomaly mode: judge at most this many defect images (a fixed-seed sample; default all)")
    p.add_argument("--drop-conflicts", action="store_true",
                   help="leave label conflicts (near-identical images with different labels) out of the training "
                        "split; validation and test keep them (evaluate --exclude-conflicts)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.anomaly:
        return _run_anomaly(args)
    if args.img_size is None:
        args.img_size = 128
    from training.train import TrainOptions, train

    opts = TrainOptions(
        data=args.data, out=args.out, arch=args.arch, img_size=args.img_size, epochs=args.epochs,
        batch_size=args.batch_size, patience=args.patience, seed=args.seed, lr=args.lr, resume=args.resume,
        ok_class=args.ok_class, layout=args.layout, manifest=args.manifest, target_recall=args.target_recall,
        weights=args.weights, threads=args.threads, dup_distance=args.dup_distance, rotate_deg=args.rotate,
        ema=args.ema, scale_jitter=args.scale_jitter, shift_jitter=args.shift_jitter, schedule=args.schedule,
        weight_decay=args.weight_decay, drop_conflicts=args.drop_conflicts,
    )
    path = train(opts)
    print(path)
    return 0


def _run_anomaly(args: argparse.Namespace) -> int:
    from training.anomaly import AnomalyOptions, train_anomaly

    opts = AnomalyOptions(
        data=args.data, out=args.out, img_size=args.img_size or 224, bank_size=args.bank_size,
        good_quantile=args.good_quantile, target_recall=args.target_recall, ok_class=args.ok_class, seed=args.seed,
        threads=args.threads, dup_distance=args.dup_distance, max_test_defects=args.max_test_defects,
    )
    print(train_anomaly(opts))
    return 0

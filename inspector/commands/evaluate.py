"""`inspector evaluate --model PATH --data DIR --out OUT_DIR`: metrics, curves and Grad-CAM for a model."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from inspector.commands.argtypes import fraction


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="judge a model (.pt, .onnx, .engine) on labelled images")
    p.add_argument("--model", required=True, type=Path, help="model file: .pt, .onnx or .engine")
    p.add_argument("--data", required=True, type=Path, help="labelled images (same layouts as train)")
    p.add_argument("--out", required=True, type=Path, help="folder for metrics.json, report and PNGs")
    p.add_argument("--ok-class", default=None, help="class meaning a good part in DIR")
    p.add_argument(
        "--target-recall",
        type=fraction,
        default=None,
        help="choose the threshold on the validation split for this defect recall and store it",
    )
    p.add_argument(
        "--split",
        default="auto",
        choices=("auto", "test", "val", "all"),
        help="auto: the model's held-out test split when DIR is its training data, else all",
    )
    p.add_argument("--layout", default="auto", choices=("auto", "folders", "prefix", "manifest"))
    p.add_argument("--manifest", type=Path, default=None, help="CSV of path,label")
    p.add_argument("--no-gradcam", action="store_true", help="skip the Grad-CAM grid")
    p.add_argument(
        "--exclude-conflicts",
        action="store_true",
        help="leave out images with a near-identical twin of another class (label conflicts) from the "
        "judged split and the threshold choice; they are listed in metrics.json",
    )
    p.set_defaults(func=run_cleaning_up)


def run_cleaning_up(args: argparse.Namespace) -> int:
    """:func:`run`; a failed run removes the --out folder it created and left empty."""
    from ground.files import output_folder

    with output_folder(args.out):
        return run(args)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from training.evaluate import evaluate

    console = Console(stderr=True)
    m = evaluate(
        args.model,
        args.data,
        args.out,
        ok_class=args.ok_class,
        target_recall=args.target_recall,
        split=args.split,
        layout=args.layout,
        manifest=args.manifest,
        gradcam=not args.no_gradcam,
        console=console,
        exclude_conflicts=args.exclude_conflicts,
    )
    print(m["report"])
    print(
        f"{m['split']} split, {m['n_images']} images ({m['n_skipped']} skipped): accuracy {m['accuracy']:.4f} "
        f"precision {m['precision']:.4f} recall {m['recall']:.4f} f1 {m['f1']:.4f} "
        f"threshold {m['threshold']:.4f}"
    )
    if "defect_vs_ok" in m:
        d = m["defect_vs_ok"]
        print(
            f"missed defects {d['missed_defects']} of {d['n_defect']}, "
            f"false rejects {d['false_rejects']} of {d['n_ok']}"
        )
    for split, q in (m.get("quality") or {}).items():
        line = (
            f"{split}: ROC AUC {q['val_auc']:.4f}, false rejects {q['false_reject_rate']:.1%} at defect recall "
            f"{q['target_recall']:.2f}"
        )
        print(line + (f" - weak: {'; '.join(q['reasons'])}" if q["weak"] else ""))
    if "label_conflicts" in m:
        c = m["label_conflicts"]
        print(
            f"label conflicts: {c['n_pairs']} near-identical pair(s) of different classes in {m['data']}; "
            f"{len(c['excluded'])} image(s) of this split left out (listed in metrics.json)"
        )
    if m.get("threshold_stored_in"):
        print(f"threshold {m['threshold']:.4f} stored in {m['threshold_stored_in']}", file=sys.stderr)
    print(f"wrote {args.out}/metrics.json")
    return 0

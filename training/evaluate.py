"""`inspector evaluate`: judge any model file (.pt now; .onnx/.engine through the same loader) on labelled
images, through the runtime's own loader and preprocessing.

OUT_DIR gets metrics.json, report.txt, confusion_matrix.png, roc_pr.png (when there is an OK class) and
gradcam.png (needs the checkpoint: the .pt itself or one beside the exported file).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engines.base import load_engine, store_metadata
from engines.errors import UserError
from engines.meta import ModelMeta
from engines.preprocess import infer_crops
from training.data import BadImage, DatasetIndex, Item, index_dataset, read_image
from training.metrics import compute_metrics
from training.threshold import choose_threshold

log = logging.getLogger(__name__)

SPLIT_CHOICES = ("auto", "test", "val", "all")


@dataclass
class Scored:
    items: list[Item]  # readable items, in order
    true: list[str]  # class names in the MODEL's naming
    probs: np.ndarray
    skipped: list[tuple[str, str]]


def class_mapping(meta: ModelMeta, index: DatasetIndex) -> dict[str, str]:
    """Data class name -> model class name; a binary model also accepts any OK/defect naming."""
    if set(index.classes) <= set(meta.classes):
        return {c: c for c in index.classes}
    if meta.binary and len(index.classes) == 2 and index.ok_class is not None:
        return {c: (meta.ok_class if c == index.ok_class else meta.defect_class) for c in index.classes}
    raise UserError(
        f"{index.root}: data classes {index.classes} do not match the model's {meta.classes}; "
        "rename the folders or give --ok-class for a two-class set"
    )


def select_items(meta: ModelMeta, index: DatasetIndex, split: str) -> tuple[list[Item], str]:
    """The items to judge: the model's held-out split when this is the data it was trained on, else all."""
    stored = meta.extra.get("split", {}) if isinstance(meta.extra, dict) else {}
    by_key = {it.key: it for it in index.items}
    if split == "all":
        return list(index.items), "all"
    wanted = "test" if split == "auto" else split
    keys = stored.get(wanted) or []
    if keys and all(k in by_key for k in keys):
        return [by_key[k] for k in keys], wanted
    if split == "auto":
        return list(index.items), "all"
    raise UserError(
        f"--split {split}: {index.root} is not the data this model was trained on (its {split} file list "
        "is not there); use --split all"
    )


def score_items(engine, items: list[Item], mapping: dict[str, str], batch: int = 64, progress=None) -> Scored:
    """Decode, preprocess (THE preprocessing) and infer; unreadable files are skipped and counted."""
    kept: list[Item] = []
    probs: list[np.ndarray] = []
    skipped: list[tuple[str, str]] = []
    for a in range(0, len(items), batch):
        imgs, chunk = [], []
        for it in items[a : a + batch]:
            try:
                imgs.append(read_image(it.path))
                chunk.append(it)
            except BadImage as exc:
                skipped.append((it.key, str(exc)))
                log.warning("skipped %s: %s", it.path, exc)
        if imgs:
            probs.append(infer_crops(engine, imgs))  # tiles scored and folded as at run time
            kept += chunk
        if progress:
            progress(len(items[a : a + batch]))
    if skipped:
        log.warning("%d file(s) skipped as unreadable, truncated or not images", len(skipped))
    if not kept:
        raise UserError("no readable image to evaluate")
    p = np.concatenate(probs).astype(np.float32)
    return Scored(kept, [mapping[it.label] for it in kept], p, skipped)


def _is_defect(meta: ModelMeta, true: list[str]) -> np.ndarray:
    return np.array([c != meta.ok_class for c in true], dtype=bool)


def evaluate(
    model: Path,
    data: Path,
    out: Path,
    ok_class: str | None = None,
    target_recall: float | None = None,
    split: str = "auto",
    layout: str = "auto",
    manifest: Path | None = None,
    gradcam: bool = True,
    console=None,
    exclude_conflicts: bool = False,
) -> dict:
    """Write the evaluation artefacts to ``out`` and return the metrics dict.

    ``exclude_conflicts``: images with a near-identical twin of another class anywhere in ``data``
    (:mod:`training.conflicts`) are left out of the judged split and of the threshold choice, and listed.
    """
    if split not in SPLIT_CHOICES:
        raise UserError(f"--split {split!r}: use one of {', '.join(SPLIT_CHOICES)}")
    from rich.progress import Progress

    engine = load_engine(model)
    meta = engine.meta
    index = index_dataset(data, layout, ok_class, manifest)
    mapping = class_mapping(meta, index)
    items, used = select_items(meta, index, split)
    conflicts = _conflicts(index, console) if exclude_conflicts else None
    excluded: list[str] = []
    if conflicts is not None:
        excluded = sorted(it.key for it in items if it.key in conflicts["keys"])
        items = [it for it in items if it.key not in conflicts["keys"]]
    out.mkdir(parents=True, exist_ok=True)
    with Progress(console=console, transient=True) as prog:
        task = prog.add_task(f"evaluating {used} split", total=len(items))
        scored = score_items(engine, items, mapping, progress=lambda n: prog.advance(task, n))
        threshold_note = None
        if target_recall is not None:
            if meta.ok_class is None:
                raise UserError("--target-recall needs a model with an OK class (defect vs OK decision)")
            try:
                val_items, vused = select_items(meta, index, "val")
                if conflicts is not None:
                    n_val = len(val_items)
                    val_items = [it for it in val_items if it.key not in conflicts["keys"]]
                    vused = f"{vused} ({n_val - len(val_items)} label-conflict images left out)"
                val = score_items(engine, val_items, mapping)
            except UserError:  # not the training data: no validation split, choose on what is judged
                vused, val = f"{used} (no validation split in this data)", scored
                log.warning(
                    "--target-recall: %s has no validation split of this model; "
                    "threshold chosen on the evaluated images",
                    index.root,
                )
            choice = choose_threshold(meta.defect_scores(val.probs), _is_defect(meta, val.true), target_recall)
            meta.threshold = choice.threshold
            meta.extra["threshold_choice"] = {**choice.to_dict(), "chosen_on": vused}
            threshold_note = str(store_metadata(Path(model), meta))
        quality = _quality(engine, meta, index, mapping, scored, used, target_recall, conflicts)
    engine.close()
    metrics = compute_metrics(meta, scored.probs, scored.true)
    if quality is not None:
        metrics["quality"] = quality
    metrics.update(
        model=str(model),
        data=str(index.root),
        split=used,
        n_skipped=len(scored.skipped),
        skipped=[f"{k}: {why}" for k, why in scored.skipped[:50]],
    )
    if conflicts is not None:
        metrics["label_conflicts"] = {**conflicts["report"], "excluded": excluded}
    if target_recall is not None:
        metrics["threshold_choice"] = meta.extra["threshold_choice"]
        metrics["threshold_stored_in"] = threshold_note
    from training import plots

    plots.confusion_png(metrics, out / "confusion_matrix.png")
    if meta.ok_class is not None and "roc_auc" in metrics.get("defect_vs_ok", {}):
        plots.roc_pr_png(meta, scored.probs, _is_defect(meta, scored.true), out / "roc_pr.png")
    if meta.kind == "anomaly":  # its own explanation: the anomaly map (training.anomaly)
        from training.anomaly import maps_png

        metrics["anomaly_maps"] = maps_png(Path(model), meta, scored, out / "anomaly_maps.png")
    else:
        metrics["gradcam"] = plots.gradcam_png(Path(model), meta, scored, out / "gradcam.png") if gradcam else "off"
    (out / "metrics.json").write_text(json.dumps({k: v for k, v in metrics.items() if k != "report"}, indent=2) + "\n")
    (out / "report.txt").write_text(metrics["report"])
    return metrics


def _quality(
    engine,
    meta: ModelMeta,
    index: DatasetIndex,
    mapping: dict,
    scored: Scored,
    used: str,
    target_recall: float | None,
    conflicts: dict | None,
) -> dict | None:
    """Validation ROC AUC and false rejects at the target recall (the weak-model guard's figures), and the same
    on the judged split. Validation is the model's own split when ``index`` is its training data."""
    if meta.ok_class is None:
        return None
    from training.train import judge_quality

    stored = meta.extra.get("quality", {})
    recall = target_recall or stored.get("target_recall") or 0.95
    lim = {"min_auc": stored.get("min_auc", 0.9), "max_false_reject": stored.get("max_false_reject", 0.2)}
    out: dict = {}
    try:
        val_items, _ = select_items(meta, index, "val")
        if conflicts is not None:
            val_items = [it for it in val_items if it.key not in conflicts["keys"]]
        val = scored if used == "val" else score_items(engine, val_items, mapping)
        out["val"] = judge_quality(meta.defect_scores(val.probs), _is_defect(meta, val.true), recall, **lim)
    except UserError:
        pass  # not the training data: no validation split here
    is_def = _is_defect(meta, scored.true)
    if 0 < is_def.sum() < len(is_def):
        out[used] = judge_quality(meta.defect_scores(scored.probs), is_def, recall, **lim)
    return out or None


def _conflicts(index: DatasetIndex, console=None) -> dict:
    """Label conflicts over every image of ``index``: {'keys': set of keys in one, 'report': JSON summary}."""
    from rich.progress import Progress

    from training.conflicts import conflict_report, label_conflicts, small_gray

    keys, labels, small, paths = [], [], [], []
    with Progress(console=console, transient=True) as prog:
        task = prog.add_task("looking for label conflicts", total=len(index.items))
        for it in index.items:
            try:
                small.append(small_gray(read_image(it.path)))
                paths.append(it.path)
                keys.append(it.key)
                labels.append(it.label)
            except BadImage:
                pass  # counted where the image is judged
            prog.advance(task)
    codes = {c: i for i, c in enumerate(sorted(set(labels)))}
    details: list = []
    pairs = label_conflicts(small, [codes[c] for c in labels], full=paths, details=details)
    involved = {keys[i] for i, j, _ in pairs} | {keys[j] for i, j, _ in pairs}
    report = conflict_report(keys, labels, pairs, details=details)
    log.info("label conflicts: %d pair(s), %d image(s) left out", len(pairs), len(involved))
    return {"keys": involved, "report": report}

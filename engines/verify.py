"""Compare two engines on the same real images: largest score difference, verdict flips, accuracy.

Used after every export and engine build: an FP32 export must flip no verdict; an FP16/INT8 engine reports
its accuracy change against FP32 so a line engineer can decide whether the speed is worth it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engines.base import Engine
from engines.errors import UserError
from engines.imagesets import ImageSet, folder_images, label_of, preprocessed_batches, synthetic_batch
from engines.meta import ModelMeta

log = logging.getLogger(__name__)

SPLIT_KEYS = ("splits", "split")


def split_images(meta: ModelMeta, split: str = "val", data_root: str | Path | None = None) -> ImageSet | None:
    """The checkpoint's own held-out images, when its metadata names them.

    Training records ``extra["split"][split]`` as image paths relative to the dataset root
    ``extra["data"]["root"]`` (or ``extra["data_dir"]``); ``data_root`` overrides it where the data set lives
    elsewhere on this machine. Files no longer present are skipped.
    """
    extra = meta.extra or {}
    splits = next((extra[k] for k in SPLIT_KEYS if isinstance(extra.get(k), dict)), None)
    names = [split] + (["validation"] if split == "val" else [])
    files = next((splits[n] for n in names if splits and isinstance(splits.get(n), list)), None)
    if not files:
        return None
    data = extra.get("data") if isinstance(extra.get("data"), dict) else {}
    root = Path(data_root or extra.get("data_dir") or data.get("root") or ".")
    paths = [p if p.is_absolute() else root / p for p in (Path(f) for f in files)]
    present = [p for p in paths if p.is_file()]
    if len(present) < len(paths):
        log.warning("%d of %d %s images not found under %s", len(paths) - len(present), len(paths), split, root)
    if not present:
        return None
    labels = [label_of(p, meta.classes) for p in present]
    return ImageSet(present, labels, f"{split} split of {root} ({len(present)} images)")


def check_images(
    meta: ModelMeta,
    images: str | Path | None = None,
    split: str = "val",
    limit: int | None = 256,
    data_root: str | Path | None = None,
) -> ImageSet | None:
    """``images`` (a folder), else the metadata's split; ``None`` means synthetic (and is said so)."""
    if images:
        return folder_images(images, meta.classes, limit=limit)
    found = split_images(meta, split, data_root)
    if found is not None:
        if limit is not None and len(found) > limit:
            idx = sorted(np.random.default_rng(0).choice(len(found), size=limit, replace=False))
            found = ImageSet([found.paths[i] for i in idx], [found.labels[i] for i in idx], found.source)
        return found
    return None


@dataclass
class Comparison:
    n: int
    source: str
    max_diff: float
    flips: int
    ref_accuracy: float | None
    accuracy: float | None

    def lines(self, ref_name: str, name: str) -> list[str]:
        out = [
            f"compared {name} with {ref_name} on {self.n} images ({self.source})",
            f"  largest score difference: {self.max_diff:.2e}",
            f"  verdicts that differ:     {self.flips}",
        ]
        if self.accuracy is not None and self.ref_accuracy is not None:
            change = (self.accuracy - self.ref_accuracy) * 100
            out.append(
                f"  accuracy: {ref_name} {self.ref_accuracy:.2%}, {name} {self.accuracy:.2%} ({change:+.2f} points)"
            )
        return out


def compare_engines(
    ref: Engine, cand: Engine, images: ImageSet | None, batch_size: int = 32, synthetic_n: int = 64
) -> Comparison:
    """Run both engines over the same preprocessed batches and compare their probabilities and verdicts."""
    meta = ref.meta
    if (cand.meta.input_size, cand.meta.channels) != (meta.input_size, meta.channels):
        raise UserError(f"{cand.path}: input {cand.meta.input_size} does not match {ref.path} ({meta.input_size})")
    if images is None:
        x = synthetic_batch(meta, synthetic_n)
        batches = [x[i : i + batch_size] for i in range(0, len(x), batch_size)]
        source, labels = "synthetic images: no real ones given or named in the metadata", [None] * len(x)
    else:
        batches = preprocessed_batches(images.paths, meta, batch_size)
        source, labels = images.source, images.labels
    ref_probs, cand_probs = [], []
    for b in batches:
        ref_probs.append(ref.infer(b))
        cand_probs.append(cand.infer(b))
    p_ref, p_cand = np.concatenate(ref_probs), np.concatenate(cand_probs)
    v_ref, v_cand = meta.predicted_classes(p_ref), meta.predicted_classes(p_cand)
    flips = sum(a != b for a, b in zip(v_ref, v_cand, strict=True))
    known = [i for i, lab in enumerate(labels) if lab is not None]
    acc_ref = acc = None
    if known:
        acc_ref = float(np.mean([v_ref[i] == labels[i] for i in known]))
        acc = float(np.mean([v_cand[i] == labels[i] for i in known]))
    return Comparison(len(p_ref), source, float(np.abs(p_ref - p_cand).max()), flips, acc_ref, acc)

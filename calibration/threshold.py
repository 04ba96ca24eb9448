"""Decision threshold for a target defect recall, written into the model's own metadata.

The choice itself is :func:`ground.threshold.choose_threshold` (the one `evaluate` uses); this module scores
a labelled image folder with the deployed engine through the shared preprocessing, and stores the result
where the runtime reads it: the checkpoint's metadata (``.pt``) or the sidecar JSON (``.onnx``, ``.engine``).
"""

from __future__ import annotations

import datetime as _dt
import logging
from pathlib import Path

import numpy as np

from engines.base import Engine, store_metadata
from engines.meta import ModelMeta, read_sidecar
from ground.errors import UserError
from ground.threshold import ThresholdChoice, choose_threshold

log = logging.getLogger(__name__)


def score_folder(engine: Engine, folder: str | Path, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """P(defect) and the true defect flag for every image in the class folders of ``folder``."""
    from engines.imagesets import folder_images, preprocessed_batches

    meta: ModelMeta = engine.meta
    if meta.ok_class is None:
        raise UserError(f"{engine.path}: the model has no OK class; a defect threshold does not apply")
    images = folder_images(folder, classes=meta.classes)
    unknown = sorted({p.parent.name for p, lab in zip(images.paths, images.labels, strict=True) if lab is None})
    if unknown:
        raise UserError(
            f"--data {folder}: folder(s) {', '.join(unknown)} are not classes of the model "
            f"({', '.join(meta.classes)}); use one sub-folder per model class"
        )
    scores = []
    for batch in preprocessed_batches(images.paths, meta, batch_size):
        scores.append(meta.defect_scores(engine.infer(batch)))
    is_defect = np.array([lab != meta.ok_class for lab in images.labels], dtype=bool)
    return np.concatenate(scores), is_defect


def calibrate_threshold(model_path: str | Path, data: str | Path, target_recall: float) -> ThresholdChoice:
    """Score ``data`` with the model and choose the threshold (nothing written)."""
    from engines.base import load_engine

    with load_engine(model_path) as engine:
        scores, is_defect = score_folder(engine, data)
    return choose_threshold(scores, is_defect, target_recall)


def write_threshold(model_path: str | Path, choice: ThresholdChoice, data: str | Path) -> Path:
    """Store the threshold and how it was chosen in the model's metadata; -> the file written."""
    p = Path(model_path)
    record = {
        **choice.to_dict(),
        "data": str(data),
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if p.suffix.lower() == ".pt":
        from engines.checkpoint import load_checkpoint

        meta = load_checkpoint(p)[0]
    else:
        meta = read_sidecar(p)
    meta.threshold = float(choice.threshold)
    meta.extra = {**meta.extra, "threshold_calibration": record}
    return store_metadata(p, meta)

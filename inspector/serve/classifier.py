"""One image in, one verdict out: THE preprocessing and the line's decision rules, without a line.

Split in two so the HTTP side can spread the work: :meth:`Classifier.views` (decode, crop, colour, fit, tiles;
any thread) and :meth:`Classifier.judge` (normalise, one engine call for a whole batch, fold tiles, decide;
the batcher's one worker thread). Together they are exactly ``engines.preprocess.infer_crops`` (what
``inspector evaluate`` scores with) followed by the decision ``inspector run`` makes for a part.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engines.preprocess import combine_views, model_views, normalize
from inspector.records import Verdict

SHA_PREFIX = 12  # hex digits of the model file's SHA-256 in the model id


@dataclass(frozen=True, slots=True)
class Crop:
    """A box inside the uploaded image, in pixels."""

    x: int
    y: int
    w: int
    h: int

    def as_list(self) -> list[int]:
        return [self.x, self.y, self.w, self.h]


@dataclass(slots=True)
class Judged:
    """One image's outcome: what the API returns for it (latency is added by the caller)."""

    verdict: Verdict
    score: float | None
    cls: str | None
    reason: str | None = None


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class Classifier:
    """An engine, its threshold and its identity. ``threshold`` defaults to the model's own (its metadata)."""

    def __init__(self, engine: Any, threshold: float | None = None) -> None:
        self.engine = engine
        self.meta = engine.meta
        self.threshold = float(self.meta.threshold if threshold is None else threshold)
        self.path = Path(engine.path)
        self.sha256 = file_sha256(self.path)
        self.model_id = f"{self.path.stem}@{self.sha256[:SHA_PREFIX]}"

    def views(self, image: np.ndarray, crop: Crop | None = None) -> list[np.ndarray]:
        """A decoded image (optionally its crop box) -> its model views (uint8 S x S x C; one, or one per tile)."""
        if crop is not None:
            image = image[crop.y : crop.y + crop.h, crop.x : crop.x + crop.w]
        return model_views(np.ascontiguousarray(image), self.meta)

    def judge(self, per_image_views: list[list[np.ndarray]]) -> list[Judged]:
        """Several images' views through the engine as ONE batch; the line's decision for each image."""
        meta = self.meta
        counts = [len(v) for v in per_image_views]
        batch = normalize(np.stack([v for vs in per_image_views for v in vs]), meta)
        probs = combine_views(np.asarray(self.engine.infer(batch)), counts, meta)
        scores = meta.defect_scores(probs)
        classes = meta.predicted_classes(probs, self.threshold)
        out = []
        for i in range(len(counts)):
            s = float(scores[i])
            score = s if math.isfinite(s) else None
            if meta.binary:
                ok = s < self.threshold
            elif meta.ok_class is not None:
                ok = classes[i] == meta.ok_class
            else:  # the same order of checks as the line (inspector.pipeline)
                out.append(
                    Judged(Verdict.NO_VERDICT, score, classes[i], "the model has no OK class; cannot pass a part")
                )
                continue
            if not np.all(np.isfinite(probs[i])):
                out.append(Judged(Verdict.NO_VERDICT, score, None, "model output is not a number"))
            else:
                out.append(Judged(Verdict.OK if ok else Verdict.DEFECT, score, classes[i]))
        return out

    def describe(self) -> dict[str, Any]:
        """GET /v1/model: what the model expects and decides with (not its training file lists)."""
        m = self.meta
        extra = m.extra if isinstance(m.extra, dict) else {}
        return {
            "id": self.model_id,
            "name": self.path.stem,
            "file": self.path.name,
            "sha256": self.sha256,
            "backend": getattr(self.engine, "backend", "?"),
            "arch": m.arch,
            "kind": m.kind,
            "classes": list(m.classes),
            "ok_class": m.ok_class,
            "binary": m.binary,
            "threshold": self.threshold,
            "model_threshold": float(m.threshold),
            "input_size": m.input_size,
            "channels": m.channels,
            "mean": list(m.mean),
            "std": list(m.std),
            "fit": m.fit,
            "tile_aspect": m.tile_aspect,
            "metrics": extra.get("metrics"),
            "threshold_choice": extra.get("threshold_choice"),
        }

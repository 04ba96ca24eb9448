"""Model metadata: what a network expects and what its outputs mean.

The same record travels inside a checkpoint (``model.pt``) and as a sidecar JSON beside every exported file
(``model.onnx.json``, ``*.engine.json``), so every backend preprocesses and decides exactly alike.

Output convention, shared by every backend: the network ends in its activation, so ``infer`` returns
probabilities. Binary models (two classes, one of them OK) have ONE output, P(defect). Multi-class models
have one softmax output per class, in ``classes`` order.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from engines.errors import UserError

OK_CLASS_NAMES = ("ok", "good", "normal", "pass", "ok_front")
MODEL_KINDS = ("classifier", "anomaly")
FITS = ("stretch", "letterbox")
OPTIONAL_FIELDS = ("threshold", "extra", "fit", "tile_aspect", "kind")  # older files lack them: the defaults apply


def default_ok_class(classes: list[str]) -> str | None:
    """The class that means a good part, by the conventional names (any case), or None."""
    for name in classes:
        if name.lower() in OK_CLASS_NAMES:
            return name
    return None


@dataclass
class ModelMeta:
    arch: str
    classes: list[str]
    ok_class: str | None
    input_size: int
    channels: int
    mean: list[float]
    std: list[float]
    threshold: float = 0.5
    extra: dict[str, Any] = field(default_factory=dict)
    # "classifier": outputs are probabilities (below). "anomaly": trained on good parts only (engines.anomaly);
    # output 0 is the image score in [0, 1] (binary layout, compared with ``threshold`` alike), and a second
    # output holds the anomaly map (N, 1, S, S). Optional: older metadata without it is a classifier.
    kind: str = "classifier"
    # How a crop becomes the model's square input (engines.preprocess): "stretch" resizes it to the square
    # (older models), "letterbox" keeps its aspect ratio and pads with the mean colour.
    fit: str = "stretch"
    # Tiles for long images: 0 off; else a crop whose long/short side ratio is at least this is cut into
    # overlapping short x short windows along its long side, each scored; the crop's defect score is the max.
    tile_aspect: float = 0.0

    def __post_init__(self) -> None:
        if len(self.classes) < 2:
            raise UserError(f"model metadata: expected at least 2 classes, got {self.classes!r}")
        if self.ok_class is not None and self.ok_class not in self.classes:
            raise UserError(f"model metadata: ok_class {self.ok_class!r} is not one of {self.classes!r}")
        if self.channels not in (1, 3):
            raise UserError(f"model metadata: channels must be 1 or 3, got {self.channels!r}")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise UserError(
                f"model metadata: mean/std need {self.channels} values each, got {self.mean!r} / {self.std!r}"
            )
        if self.kind not in MODEL_KINDS:
            raise UserError(f"model metadata: kind must be one of {', '.join(MODEL_KINDS)}, got {self.kind!r}")
        if not 0.0 <= float(self.threshold) <= 1.0:
            raise UserError(f"model metadata: threshold must be in [0, 1], got {self.threshold!r}")
        if self.fit not in FITS:
            raise UserError(f"model metadata: fit must be one of {', '.join(FITS)}, got {self.fit!r}")
        if self.tile_aspect and float(self.tile_aspect) < 1.0:
            raise UserError(f"model metadata: tile_aspect must be 0 (off) or >= 1, got {self.tile_aspect!r}")

    # --- what the outputs mean -------------------------------------------------------------------------
    @property
    def binary(self) -> bool:
        """One sigmoid output, P(defect): two classes, one of them OK."""
        return len(self.classes) == 2 and self.ok_class is not None

    @property
    def anomaly(self) -> bool:
        """Trained on good parts only: the score is an anomaly score and an anomaly map comes with it."""
        return self.kind == "anomaly"

    @property
    def num_outputs(self) -> int:
        return 1 if self.binary else len(self.classes)

    @property
    def defect_class(self) -> str | None:
        if not self.binary:
            return None
        return next(c for c in self.classes if c != self.ok_class)

    def defect_scores(self, probs: np.ndarray) -> np.ndarray:
        """P(defect) per row: the binary output, or 1 - P(ok) for multi-class; NaN when there is no OK class."""
        probs = np.asarray(probs, dtype=np.float32)
        if self.binary:
            return probs.reshape(len(probs), -1)[:, 0]
        if self.ok_class is None:
            return np.full(len(probs), np.nan, dtype=np.float32)
        return 1.0 - probs[:, self.classes.index(self.ok_class)]

    def predicted_classes(self, probs: np.ndarray, threshold: float | None = None) -> list[str]:
        """Class name per row; binary models use the decision threshold, multi-class the argmax."""
        probs = np.asarray(probs, dtype=np.float32)
        if self.binary:
            t = self.threshold if threshold is None else threshold
            scores = self.defect_scores(probs)
            return [self.defect_class if s >= t else self.ok_class for s in scores]  # type: ignore[misc]
        return [self.classes[i] for i in probs.argmax(axis=1)]

    def weak_warning(self) -> str | None:
        """One line when training judged this model weak (``extra.quality``, inspector train's guard), else None."""
        q = self.extra.get("quality") or {}
        if not q.get("weak"):
            return None
        return (
            f"model {self.arch} was judged weak when it was trained ({'; '.join(q.get('reasons', []))}): "
            "it may pass defects or reject good parts; retrain it (inspector train) before relying on it"
        )

    # --- (de)serialisation -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "model metadata") -> ModelMeta:
        names = {f.name for f in fields(cls)}
        missing = sorted(n for n in names - set(data) if n not in OPTIONAL_FIELDS)
        if missing:
            raise UserError(f"{where}: missing field(s) {', '.join(missing)}; re-export the model")
        unknown = sorted(set(data) - names)
        if unknown:
            raise UserError(f"{where}: unknown field(s) {', '.join(unknown)}")
        try:
            return cls(**{k: data[k] for k in names if k in data})
        except TypeError as exc:
            raise UserError(f"{where}: {exc}") from None


def sidecar_path(model_path: str | Path) -> Path:
    """``model.onnx`` -> ``model.onnx.json``: metadata never goes inside an engine file."""
    p = Path(model_path)
    return p.with_name(p.name + ".json")


def write_sidecar(model_path: str | Path, meta: ModelMeta, **extra: Any) -> Path:
    data = meta.to_dict()
    data["extra"] = {**data.get("extra", {}), **extra}
    path = sidecar_path(model_path)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return path


def read_sidecar(model_path: str | Path) -> ModelMeta:
    path = sidecar_path(model_path)
    if not path.is_file():
        raise UserError(
            f"{model_path}: metadata sidecar {path.name} not found beside it; "
            "re-export with `inspector build-engine --checkpoint model.pt --out DIR`"
        )
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: unreadable metadata sidecar ({exc}); re-export the model") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: metadata sidecar must be a JSON object")
    return ModelMeta.from_dict(data, where=str(path))

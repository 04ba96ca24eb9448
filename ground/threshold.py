"""Operating-threshold choice for a target defect recall. numpy only (no torch): training (`evaluate`, `train`)
and `inspector calibrate threshold` both use it, so it sits below both.

A missed defect costs more than a false reject, so the line sets the recall it needs and the threshold
follows: the highest threshold that still catches that share of the defects in the validation data,
placed midway to the next lower score so that a small drift does not flip the last caught defect.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from ground.errors import UserError


@dataclass(frozen=True)
class ThresholdChoice:
    threshold: float
    target_recall: float
    recall: float  # defect recall reached on the data it was chosen on
    precision: float
    false_reject_rate: float  # share of OK parts rejected
    n_defect: int
    n_ok: int

    def to_dict(self) -> dict:
        return asdict(self)


def rates_at(scores: np.ndarray, is_defect: np.ndarray, threshold: float) -> tuple[float, float, float]:
    """(defect recall, precision, false-reject rate) when ``score >= threshold`` means defect."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(is_defect, dtype=bool)
    pred = s >= threshold
    tp = int((pred & y).sum())
    fp = int((pred & ~y).sum())
    recall = tp / max(1, int(y.sum()))
    precision = tp / (tp + fp) if tp + fp else 1.0
    frr = fp / max(1, int((~y).sum()))
    return recall, precision, frr


def choose_threshold(scores: np.ndarray, is_defect: np.ndarray, target_recall: float) -> ThresholdChoice:
    """The threshold that reaches ``target_recall`` (share of defects with score >= threshold)."""
    if not 0.0 < target_recall <= 1.0:
        raise UserError(f"target recall must be in (0, 1], got {target_recall!r}")
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(is_defect, dtype=bool).ravel()
    if s.shape != y.shape:
        raise UserError(f"threshold choice: {len(s)} scores but {len(y)} labels")
    if not np.isfinite(s).all():
        raise UserError("threshold choice: scores contain NaN/inf; the model has no OK class or is broken")
    defects = np.sort(s[y])[::-1]
    if len(defects) == 0:
        raise UserError("threshold choice: the data holds no defect images; recall is undefined")
    k = max(1, math.ceil(target_recall * len(defects) - 1e-9))
    must_catch = float(defects[k - 1])
    below = s[s < must_catch]
    lower = float(below.max()) if len(below) else 0.0
    threshold = float(min(1.0, max(0.0, (must_catch + lower) / 2.0)))
    if threshold > must_catch:  # float rounding at the edges
        threshold = must_catch
    recall, precision, frr = rates_at(s, y, threshold)
    return ThresholdChoice(threshold, float(target_recall), recall, precision, frr, int(y.sum()), int((~y).sum()))

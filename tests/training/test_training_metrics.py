"""Metrics against hand-computed confusion matrices."""

from __future__ import annotations

import numpy as np
import pytest

from engines.meta import ModelMeta
from training.metrics import compute_metrics


def _binary_meta(threshold: float = 0.5) -> ModelMeta:
    return ModelMeta("seedcnn", ["def_front", "ok_front"], "ok_front", 32, 1, [0.5], [0.25], threshold)


def test_binary_metrics_hand_counted():
    # true:  D D D D O O O O O O ; scores vs threshold 0.5
    scores = [0.9, 0.8, 0.3, 0.6, 0.1, 0.2, 0.7, 0.4, 0.0, 0.55]
    true = ["def_front"] * 4 + ["ok_front"] * 6
    m = compute_metrics(_binary_meta(), np.array(scores)[:, None], true)
    # defects caught: 0.9, 0.8, 0.6 (tp=3), missed 0.3 (fn=1); OK rejected: 0.7, 0.55 (fp=2), tn=4
    assert m["confusion_matrix"] == [[4, 2], [1, 3]]
    assert m["confusion_matrix_labels"] == ["ok", "defect"]
    assert m["accuracy"] == pytest.approx(7 / 10)
    assert m["precision"] == pytest.approx(3 / 5)
    assert m["recall"] == pytest.approx(3 / 4)
    assert m["f1"] == pytest.approx(2 * 0.6 * 0.75 / (0.6 + 0.75))
    assert m["defect_vs_ok"]["missed_defects"] == 1 and m["defect_vs_ok"]["false_rejects"] == 2
    assert m["n_images"] == 10 and m["threshold"] == 0.5
    # a lower threshold catches the missed defect and one more OK part
    low = compute_metrics(_binary_meta(), np.array(scores)[:, None], true, threshold=0.25)
    assert low["confusion_matrix"] == [[3, 3], [0, 4]]


def test_multiclass_metrics_hand_counted():
    meta = ModelMeta("seedcnn", ["a", "b", "c"], None, 32, 1, [0.5], [0.25])
    probs = np.eye(3)[[0, 0, 1, 1, 2, 2, 0]]  # predicted a a b b c c a
    true = ["a", "b", "b", "b", "c", "a", "c"]
    m = compute_metrics(meta, probs, true)
    assert m["confusion_matrix"] == [[1, 0, 1], [1, 2, 0], [1, 0, 1]]
    assert m["accuracy"] == pytest.approx(4 / 7)
    assert m["per_class"]["a"]["precision"] == pytest.approx(1 / 3)
    assert m["per_class"]["b"]["recall"] == pytest.approx(2 / 3)
    assert m["per_class"]["c"]["f1"] == pytest.approx(0.5)
    macro_p = (1 / 3 + 1 + 0.5) / 3
    assert m["macro"]["precision"] == pytest.approx(macro_p) and m["precision"] == pytest.approx(macro_p)
    assert "defect_vs_ok" not in m

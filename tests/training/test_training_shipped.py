"""The shipped model on its whole real held-out test split, as `inspector evaluate` judges it (needs ../shared/data).

The issue's target is checked here, not only quoted: accuracy and defect recall >= 99.5% at the shipped threshold
on the test split with its label conflicts left out (docs/model-casting.md), and the figures as labelled.
"""

from __future__ import annotations

import pytest

from engines.meta import read_sidecar
from training.evaluate import evaluate

pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def shipped(root):
    model = root / "models" / "casting_seedcnn.onnx"  # the file the line runs; same verdicts as the .pt
    if not model.is_file():
        pytest.skip(f"{model} not built yet")
    return model


def test_shipped_model_meets_the_target_without_label_conflicts(shared_data, shipped, tmp_path):
    meta = read_sidecar(shipped)
    m = evaluate(shipped, shared_data / "casting" / "train", tmp_path / "ev", gradcam=False, exclude_conflicts=True)
    assert m["split"] == "test", "the shipped model's test file list must be found in the shared data"
    assert m["threshold"] == pytest.approx(meta.threshold)
    d = m["defect_vs_ok"]
    # docs/model-casting.md: 969 images, 1 of 556 defects missed, 0 false rejects (99.90% / 99.82%)
    assert m["accuracy"] >= 0.995 and m["recall"] >= 0.995, (m["accuracy"], m["recall"])
    assert d["missed_defects"] <= 2 and d["n_defect"] + d["n_ok"] == m["n_images"] >= 960
    excluded = m["label_conflicts"]["excluded"]
    assert 0 < len(excluded) <= 30 and "def_front/cast_def_0_4073.jpeg" in excluded


def test_shipped_model_as_labelled(shared_data, shipped, tmp_path):
    m = evaluate(shipped, shared_data / "casting" / "train", tmp_path / "ev", gradcam=False)
    # docs/model-casting.md: 995 images, 99.50% accuracy, 99.11% recall (5 missed, 4 of them label conflicts)
    assert m["n_images"] == 995 and m["accuracy"] >= 0.99 and m["recall"] >= 0.99, (m["accuracy"], m["recall"])

"""`calibrate threshold`: the evaluate threshold choice, written into a checkpoint's or an export's metadata."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engines.checkpoint import load_checkpoint, save_checkpoint
from engines.meta import ModelMeta, read_sidecar
from ground.threshold import choose_threshold, rates_at
from inspector.cli import main

torch = pytest.importorskip("torch")


@pytest.fixture
def model(tmp_path: Path) -> Path:
    from engines.archs import build_network

    torch.manual_seed(0)
    torch.set_num_threads(1)
    meta = ModelMeta("seedcnn", ["defect", "ok"], "ok", 32, 3, [0.5, 0.5, 0.5], [0.25, 0.25, 0.25])
    net = build_network(meta)
    path = tmp_path / "m.pt"
    save_checkpoint(path, net.state_dict(), meta)
    return path


def _scores_by_hand(model_path: Path, data: Path) -> tuple[np.ndarray, np.ndarray]:
    """Independent of the engines: the network straight from the checkpoint, images read one by one."""
    import cv2

    from engines.archs import build_network, inference_network
    from engines.preprocess import preprocess

    meta, state, _ = load_checkpoint(model_path)
    net = build_network(meta)
    net.load_state_dict(state)
    net = inference_network(net, meta).eval()
    files = sorted(data.rglob("*.png"))
    batch = preprocess([cv2.imread(str(f)) for f in files], meta)
    with torch.no_grad():
        probs = net(torch.from_numpy(batch)).numpy()
    return probs[:, 0], np.array([f.parent.name == "defect" for f in files])


def test_threshold_written_into_the_checkpoint(model, tiny_dataset, capsys):
    data = tiny_dataset({"ok": 10, "defect": 10}, size=48)
    scores, is_defect = _scores_by_hand(model, data)
    expected = choose_threshold(scores, is_defect, 0.9)
    rc = main(["calibrate", "threshold", "--model", str(model), "--data", str(data), "--target-recall", "0.9"])
    assert rc == 0, capsys.readouterr().err
    meta, _, _ = load_checkpoint(model)
    assert meta.threshold == pytest.approx(expected.threshold, abs=1e-5)
    assert rates_at(scores, is_defect, meta.threshold)[0] >= 0.9
    record = meta.extra["threshold_calibration"]
    assert record["target_recall"] == 0.9 and record["n_defect"] == 10 and record["n_ok"] == 10
    assert record["data"] == str(data)
    assert "wrote the threshold" in capsys.readouterr().out


def test_threshold_written_into_the_onnx_sidecar_and_dry_run(model, tiny_dataset, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from engines.base import load_engine
    from engines.export import export_onnx

    data = tiny_dataset({"ok": 8, "defect": 8}, size=48)
    onnx_path = export_onnx(model, tmp_path / "m.onnx")
    before = json.loads((tmp_path / "m.onnx.json").read_text())
    assert (
        main(
            [
                "calibrate",
                "threshold",
                "--model",
                str(onnx_path),
                "--data",
                str(data),
                "--target-recall",
                "1.0",
                "--dry-run",
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "m.onnx.json").read_text()) == before
    assert (
        main(["calibrate", "threshold", "--model", str(onnx_path), "--data", str(data), "--target-recall", "1.0"]) == 0
    )
    meta = read_sidecar(onnx_path)
    scores, is_defect = _scores_by_hand(model, data)
    assert meta.threshold == pytest.approx(choose_threshold(scores, is_defect, 1.0).threshold, abs=1e-4)
    assert meta.extra["onnx_sha256"] == before["extra"]["onnx_sha256"]  # export provenance kept
    with load_engine(onnx_path, warm_up=False) as eng:  # the runtime sees the new threshold
        assert eng.meta.threshold == meta.threshold
    capsys.readouterr()


@pytest.mark.parametrize(
    "counts, recall, message",
    [
        ({"ok": 4, "scratch": 4}, "0.9", "not classes of the model"),
        ({"ok": 4}, "0.9", "no defect images"),
        ({"ok": 4, "defect": 4}, "1.5", "target recall must be in (0, 1]"),
    ],
)
def test_bad_input_is_one_line(model, tiny_dataset, counts, recall, message, capsys):
    data = tiny_dataset(counts, size=48)
    before = load_checkpoint(model)[0].threshold
    rc = main(["calibrate", "threshold", "--model", str(model), "--data", str(data), "--target-recall", recall])
    err = capsys.readouterr().err
    assert rc == 1 and message in err and "Traceback" not in err
    assert load_checkpoint(model)[0].threshold == before

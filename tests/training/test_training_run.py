"""A short real training run on synthetic parts: run folder, checkpoint format, resume, evaluate, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from engines.base import load_engine
from engines.checkpoint import load_checkpoint
from engines.errors import UserError
from engines.preprocess import preprocess
from inspector.cli import main
from training.data import read_image
from training.evaluate import evaluate
from training.train import TrainOptions, train


@pytest.fixture(scope="module", autouse=True)
def _few_threads():
    torch.set_num_threads(1)


def _opts(data, out, **kw) -> TrainOptions:
    base = dict(data=data, out=out, img_size=32, epochs=2, batch_size=16, patience=5, seed=0, threads=1, dup_distance=6)
    return TrainOptions(**{**base, **kw})


def test_train_writes_run_folder_and_evaluates(tiny_dataset, tmp_path):
    data = tiny_dataset({"ok": 30, "defect": 30})
    run = tmp_path / "run"
    model = train(_opts(data, run, target_recall=1.0))
    assert model == run / "model.pt"
    for name in ("model.pt", "last.pt", "history.json", "curves.png"):
        assert (run / name).stat().st_size > 0
    payload = torch.load(model, map_location="cpu", weights_only=True)  # plain data only
    assert isinstance(payload["state_dict"], dict)
    meta, _, _ = load_checkpoint(model)
    assert (meta.arch, meta.classes, meta.ok_class, meta.input_size, meta.channels) == (
        "seedcnn",
        ["defect", "ok"],
        "ok",
        32,
        1,
    )
    assert meta.binary and len(meta.mean) == 1 and 0.0 <= meta.threshold <= 1.0
    split = meta.extra["split"]
    assert split["pairs_across_this_split"] == 0 and len(split["test"]) == split["counts"]["test"]
    assert meta.extra["threshold_choice"]["recall"] == 1.0  # chosen on validation for recall 1.0
    assert set(meta.extra["metrics"]) == {"val", "test"}
    history = json.loads((run / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    assert {"train_loss", "train_acc", "val_loss", "val_acc"} <= set(history[0])

    # the runtime's loader runs it, through THE preprocessing
    with load_engine(model) as engine:
        img = read_image(next((data / "defect").glob("*.png")))
        probs = engine.infer(preprocess([img], meta))
    assert probs.shape == (1, 1) and 0.0 <= float(probs[0, 0]) <= 1.0

    # evaluate: defaults to the held-out test split of its own training data
    out = tmp_path / "eval"
    m = evaluate(model, data, out)
    assert m["split"] == "test" and m["n_images"] == len(split["test"])
    saved = json.loads((out / "metrics.json").read_text())
    for key in ("accuracy", "precision", "recall", "f1", "confusion_matrix", "threshold", "n_images"):
        assert key in saved
    assert np.sum(saved["confusion_matrix"]) == saved["n_images"]
    for name in ("report.txt", "confusion_matrix.png", "roc_pr.png", "gradcam.png"):
        assert (out / name).stat().st_size > 0


def test_resume_extends_a_plateau_run(tiny_dataset, tmp_path):
    data = tiny_dataset({"ok": 20, "defect": 20})
    run = tmp_path / "run"
    train(_opts(data, run, epochs=1, schedule="plateau"))
    train(_opts(data, run, epochs=2, resume=True, schedule="plateau"))
    history = json.loads((run / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    straight = tmp_path / "straight"
    train(_opts(data, straight, epochs=2, schedule="plateau"))
    again = json.loads((straight / "history.json").read_text())
    # same seed, same data: the resumed run replays the uninterrupted one
    assert history[1]["train_loss"] == pytest.approx(again[1]["train_loss"], rel=1e-4)


def test_resume_after_interrupt_replays_the_onecycle_run(tiny_dataset, tmp_path, monkeypatch):
    import training.train as tt

    data = tiny_dataset({"ok": 20, "defect": 20})
    run = tmp_path / "run"
    real_save = tt.save_checkpoint

    def save_then_die(path, *a, **kw):  # the process dies right after epoch 1 is saved (Ctrl-C, power cut)
        real_save(path, *a, **kw)
        if path.name == "last.pt":
            raise KeyboardInterrupt

    monkeypatch.setattr(tt, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(_opts(data, run, epochs=2))
    monkeypatch.setattr(tt, "save_checkpoint", real_save)
    with pytest.raises(UserError, match="another --epochs"):
        train(_opts(data, run, epochs=3, resume=True))  # the schedule spans the first run's epochs
    train(_opts(data, run, epochs=2, resume=True))
    history = json.loads((run / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    straight = tmp_path / "straight"
    train(_opts(data, straight, epochs=2))
    again = json.loads((straight / "history.json").read_text())
    assert history[1]["train_loss"] == pytest.approx(again[1]["train_loss"], rel=1e-4)
    assert history[1]["lr"] == pytest.approx(again[1]["lr"])


def test_multiclass_training_and_target_recall_in_evaluate(tiny_dataset, tmp_path):
    data = tiny_dataset({"ok": 16, "scratch": 16, "dent": 16})
    model = train(_opts(data, tmp_path / "run", epochs=1))
    meta, _, _ = load_checkpoint(model)
    assert not meta.binary and meta.num_outputs == 3 and meta.ok_class == "ok"
    m = evaluate(model, data, tmp_path / "eval", target_recall=1.0, gradcam=False)
    assert "per_class" in m and "macro" in m and m["threshold_choice"]["chosen_on"] == "val"
    assert load_checkpoint(model)[0].extra["threshold_choice"]["target_recall"] == 1.0


def test_cli_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "only").mkdir()
    assert main(["train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "r")]) == 1
    assert "dataset not found" in capsys.readouterr().err
    assert (
        main(["evaluate", "--model", str(tmp_path / "nope.pt"), "--data", str(tmp_path), "--out", str(tmp_path / "e")])
        == 1
    )
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1
    assert main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "r"), "--resume"]) == 1


def test_evaluate_exported_onnx_stores_threshold_in_sidecar(tiny_dataset, tmp_path):
    from engines.export import export_onnx
    from engines.meta import read_sidecar

    data = tiny_dataset({"ok": 20, "defect": 20})
    model = train(_opts(data, tmp_path / "run", epochs=1))
    onnx_path = export_onnx(model, tmp_path / "exp.onnx")
    m = evaluate(onnx_path, data, tmp_path / "eval", target_recall=1.0)
    assert m["split"] == "test"  # the sidecar carries the split too
    assert m["threshold_stored_in"].endswith(".onnx.json")
    assert read_sidecar(onnx_path).threshold == pytest.approx(m["threshold"])
    # Grad-CAM needs the checkpoint; none sits beside the export here, so it is skipped with a reason
    assert m["gradcam"].startswith("skipped")

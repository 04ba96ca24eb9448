"""Model metadata, the shared preprocessing and the checkpoint format."""

from __future__ import annotations

import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest

from engines.errors import UserError
from engines.meta import ModelMeta, default_ok_class, read_sidecar, write_sidecar
from engines.preprocess import normalize, preprocess, to_model_image


def meta(**kw) -> ModelMeta:
    base = dict(
        arch="seedcnn",
        classes=["def_front", "ok_front"],
        ok_class="ok_front",
        input_size=32,
        channels=1,
        mean=[0.5],
        std=[0.25],
        threshold=0.4,
    )
    return ModelMeta(**{**base, **kw})


def test_default_ok_class_names() -> None:
    assert default_ok_class(["def_front", "ok_front"]) == "ok_front"
    assert default_ok_class(["Scratch", "GOOD"]) == "GOOD"
    assert default_ok_class(["crazing", "patches"]) is None


def test_binary_scores_and_classes() -> None:
    m = meta()
    assert m.binary and m.num_outputs == 1 and m.defect_class == "def_front"
    probs = np.array([[0.39], [0.4], [0.9]], np.float32)
    assert m.predicted_classes(probs) == ["ok_front", "def_front", "def_front"]
    assert m.predicted_classes(probs, threshold=0.95) == ["ok_front"] * 3


def test_multiclass_scores() -> None:
    m = meta(classes=["good", "scratch", "dent"], ok_class="good", channels=3, mean=[0.5] * 3, std=[0.2] * 3)
    assert not m.binary and m.num_outputs == 3
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]], np.float32)
    np.testing.assert_allclose(m.defect_scores(probs), [0.3, 0.9], rtol=1e-6)
    assert m.predicted_classes(probs) == ["good", "dent"]


@pytest.mark.parametrize(
    "kw,fragment",
    [
        (dict(classes=["only"]), "at least 2 classes"),
        (dict(ok_class="nope"), "ok_class 'nope'"),
        (dict(channels=2), "channels must be 1 or 3"),
        (dict(mean=[0.5, 0.5]), "mean/std need 1"),
        (dict(threshold=1.5), "threshold must be in [0, 1]"),
    ],
)
def test_invalid_metadata(kw: dict, fragment: str) -> None:
    with pytest.raises(UserError, match=None) as info:
        meta(**kw)
    assert fragment in str(info.value)


def test_sidecar_round_trip_and_errors(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    with pytest.raises(UserError, match="sidecar m.onnx.json not found"):
        read_sidecar(model)
    write_sidecar(model, meta(), exported_by="test")
    back = read_sidecar(model)
    assert back.classes == ["def_front", "ok_front"] and back.extra["exported_by"] == "test"
    (tmp_path / "m.onnx.json").write_text('{"arch": "seedcnn"}')
    with pytest.raises(UserError, match="missing field"):
        read_sidecar(model)


def test_preprocess_gray_and_rgb_agree_with_definition() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (50, 70, 3), dtype=np.uint8)
    g = meta()
    x = preprocess([img, img], g)
    assert x.shape == (2, 1, 32, 32) and x.dtype == np.float32
    expected = cv2.resize(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), (32, 32), interpolation=cv2.INTER_AREA)
    np.testing.assert_allclose(x[0, 0], (expected / 255.0 - 0.5) / 0.25, atol=1e-5)
    c = meta(channels=3, mean=[0.1, 0.2, 0.3], std=[0.5, 0.5, 0.5])
    y = preprocess([img], c)
    rgb = cv2.resize(img, (32, 32), interpolation=cv2.INTER_AREA)[:, :, ::-1]
    np.testing.assert_allclose(y[0, 0], (rgb[:, :, 0] / 255.0 - 0.1) / 0.5, atol=1e-5)
    # the two halves compose to the whole
    np.testing.assert_allclose(normalize(to_model_image(img, g), g), x[0], atol=1e-6)
    assert preprocess([], g).shape == (0, 1, 32, 32)


def test_checkpoint_round_trip_and_pickle_refused(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch", reason="checkpoints need torch (pip install '.[train]')")
    from engines.archs import build_network
    from engines.checkpoint import load_checkpoint, save_checkpoint

    m = meta()
    net = build_network(m)
    path = tmp_path / "model.pt"
    save_checkpoint(path, net.state_dict(), m, epoch=3)
    back, state, payload = load_checkpoint(path)
    assert back == m and payload["epoch"] == 3 and set(state) == set(net.state_dict())

    class Evil:  # a pickled object: weights_only loading must refuse it
        def __reduce__(self):
            return (print, ("pwned",))

    evil = tmp_path / "evil.pt"
    torch.save({"format": "x", "obj": Evil()}, evil)
    with pytest.raises(UserError, match="refused"):
        load_checkpoint(evil)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a zip at all")
    with pytest.raises(UserError, match="not a readable PyTorch checkpoint"):
        load_checkpoint(junk)
    with pytest.raises(UserError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    assert pickle  # the module the refusal is about

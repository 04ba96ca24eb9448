"""ONNX export and the ONNX Runtime backend against PyTorch, on real image files through the shared preprocessing."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from engines.base import load_engine
from engines.errors import UserError
from engines.export import file_sha256
from engines.imagesets import folder_images, preprocessed_batches
from engines.meta import sidecar_path
from engines.onnx_backend import choose_providers
from engines.verify import compare_engines
from inspector.cli import main


def test_export_has_dynamic_batch_axis_and_sidecar(tiny_onnx, tiny_checkpoint):
    model = onnx.load(str(tiny_onnx))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch"
    assert [d.dim_value for d in dims[1:]] == [1, 32, 32]
    side = json.loads(sidecar_path(tiny_onnx).read_text())
    assert side["input_size"] == 32 and side["classes"] == ["def_front", "ok_front"]
    assert side["extra"]["onnx_sha256"] == file_sha256(tiny_onnx)
    assert side["extra"]["source_sha256"] == file_sha256(tiny_checkpoint)


def test_ort_matches_pytorch_on_image_files(tiny_checkpoint, tiny_onnx, engine_images):
    images = folder_images(engine_images, ["def_front", "ok_front"])
    with load_engine(tiny_checkpoint, device="cpu", threads=1) as ref, load_engine(tiny_onnx, threads=1) as ort:
        cmp = compare_engines(ref, ort, images, batch_size=7)  # 7: uneven batches through the dynamic axis
        x = next(preprocessed_batches(images.paths, ref.meta, 32))
        p_ref, p_ort = ref.infer(x), ort.infer(x)
    assert cmp.n == 32 and cmp.flips == 0
    assert cmp.max_diff < 1e-4
    np.testing.assert_allclose(p_ort, p_ref, atol=1e-4)
    assert p_ort.shape == (32, 1)
    # the tiny model learned something, so a zero flip count is not trivially about scores at 0.5
    assert cmp.accuracy is not None and cmp.accuracy >= 0.75
    assert np.ptp(p_ref) > 0.3


@pytest.mark.parametrize("batch", [1, 3, 16])
def test_ort_accepts_any_batch(tiny_onnx, batch):
    with load_engine(tiny_onnx, threads=1) as engine:
        out = engine.infer(np.zeros((batch, 1, 32, 32), np.float32))
    assert out.shape == (batch, 1) and np.all((out >= 0) & (out <= 1))


@pytest.mark.parametrize(
    ("available", "requested", "expected"),
    [
        (["CPUExecutionProvider"], None, ["CPUExecutionProvider"]),
        (
            ["CUDAExecutionProvider", "CPUExecutionProvider", "TensorrtExecutionProvider"],
            None,
            ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
        ),
        (["CUDAExecutionProvider", "CPUExecutionProvider"], ["CPUExecutionProvider"], ["CPUExecutionProvider"]),
        (["CPUExecutionProvider"], ["CUDAExecutionProvider"], UserError),
    ],
)
def test_provider_choice(available, requested, expected):
    if expected is UserError:
        with pytest.raises(UserError, match="CUDAExecutionProvider not available"):
            choose_providers(available, requested)
    else:
        assert choose_providers(available, requested) == expected


def test_build_engine_cli_fp32_check_and_no_tensorrt_message(tiny_checkpoint, engine_images, tmp_path, capsys):
    pytest.importorskip("onnx")
    try:
        import tensorrt  # noqa: F401

        pytest.skip("tensorrt is installed: the no-TensorRT message is not printed here")
    except ImportError:
        pass
    rc = main(
        ["build-engine", "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path), "--images", str(engine_images)]
    )
    out = capsys.readouterr().out
    assert rc == 0
    assert "verdicts that differ:     0" in out
    assert "on 32 images" in out
    assert "Build the .engine on the target" in out
    assert (tmp_path / "tiny.onnx").is_file() and (tmp_path / "tiny.onnx.json").is_file()


def test_build_engine_checks_on_the_checkpoints_own_split(tiny_checkpoint, engine_images, tmp_path, capsys):
    """Training records val/test file keys relative to the dataset root; build-engine compares on val."""
    import shutil

    from engines.checkpoint import load_checkpoint, update_checkpoint_meta
    from engines.verify import check_images

    ckpt = tmp_path / "model.pt"
    shutil.copy(tiny_checkpoint, ckpt)
    meta, _, _ = load_checkpoint(ckpt)
    keys = sorted(str(p.relative_to(engine_images)) for p in engine_images.rglob("*.png"))
    meta.extra = {
        "data": {"root": str(engine_images), "layout": "folders"},
        "split": {"method": "test", "val": keys[::2], "test": keys[1::2] + ["def_front/gone.png"]},
    }
    update_checkpoint_meta(ckpt, meta)
    test = check_images(meta, split="test")
    assert len(test) == 16 and test.labels.count("def_front") == 8 and None not in test.labels
    assert main(["build-engine", "--checkpoint", str(ckpt), "--out", str(tmp_path / "out"), "--onnx-only"]) == 0
    out = capsys.readouterr().out
    assert f"on 16 images (val split of {engine_images}" in out and "verdicts that differ:     0" in out

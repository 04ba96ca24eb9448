"""The shipped model: its ONNX export belongs to it and agrees with it on real held-out casting images."""

from __future__ import annotations

import pytest

from engines.base import load_engine
from engines.export import file_sha256
from engines.meta import read_sidecar
from engines.verify import check_images, compare_engines


@pytest.fixture(scope="module")
def shipped(root):
    pt, onnx = root / "models" / "casting_seedcnn.pt", root / "models" / "casting_seedcnn.onnx"
    if not pt.is_file() or not onnx.is_file():
        pytest.skip("models/casting_seedcnn.pt / .onnx not shipped in this checkout yet")
    return pt, onnx


def test_shipped_onnx_is_exported_from_the_shipped_checkpoint(shipped):
    pt, onnx = shipped
    extra = read_sidecar(onnx).extra
    assert extra["source_sha256"] == file_sha256(pt), "re-export: inspector build-engine --checkpoint " + str(pt)
    assert extra["onnx_sha256"] == file_sha256(onnx)


@pytest.mark.data
@pytest.mark.slow
def test_shipped_onnx_verdicts_match_pytorch_on_held_out_images(shipped, shared_data):
    pt, onnx = shipped
    with load_engine(pt, device="cpu", threads=1) as ref, load_engine(onnx, threads=1) as ort:
        root = shared_data / "casting" / "train"
        images = check_images(ref.meta, split="test", limit=96, data_root=root)
        assert images is not None, f"the checkpoint's test split files are not under {root}"
        cmp = compare_engines(ref, ort, images)
    assert cmp.n == 96 and cmp.flips == 0 and cmp.max_diff < 1e-4
    assert cmp.accuracy == cmp.ref_accuracy and cmp.accuracy > 0.6

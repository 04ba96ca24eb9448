"""TensorRT build and run on a real GPU: skipped, with the reason, where TensorRT/pycuda/CUDA are absent."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorrt", reason="TensorRT is not installed (it ships with JetPack / NVIDIA wheels)")
pytest.importorskip("pycuda.driver", reason="pycuda is not installed (pip install 'inspector[jetson]')")

from engines.base import load_engine  # noqa: E402
from engines.imagesets import folder_images  # noqa: E402
from engines.trt_build import build_engine, probe_tensorrt  # noqa: E402
from engines.verify import compare_engines  # noqa: E402


@pytest.fixture(scope="module")
def trt_modules():
    modules, why = probe_tensorrt()
    if modules is None:
        pytest.skip(why)
    return modules


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_engine_builds_loads_and_agrees(precision, tiny_onnx, engine_images, tmp_path, trt_modules):
    images = folder_images(engine_images, ["def_front", "ok_front"])
    path = build_engine(
        tiny_onnx,
        tmp_path,
        precision=precision,
        max_batch=8,
        workspace_mb=256,
        calib_images=images if precision == "int8" else None,
        modules=trt_modules,
    )
    assert f".{precision}.b8.engine" in path.name
    with load_engine(tiny_onnx) as ref, load_engine(path) as eng:
        assert eng.infer(np.zeros((3, 1, 32, 32), np.float32)).shape == (3, 1)
        cmp = compare_engines(ref, eng, images, batch_size=16)  # 16 > max batch: chunked
    assert cmp.n == 32
    if precision == "fp32":
        assert cmp.flips == 0 and cmp.max_diff < 1e-3
    if precision == "int8":
        assert any(tmp_path.glob("*.int8.calib"))
    assert any(tmp_path.glob("timing.*.cache"))

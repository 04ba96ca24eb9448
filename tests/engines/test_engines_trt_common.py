"""The pure-Python parts of the TensorRT path, without TensorRT: naming, compatibility, calibration, progress."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engines.errors import UserError
from engines.imagesets import folder_images
from engines.meta import ModelMeta
from engines.preprocess import preprocess
from engines.trt_build import probe_tensorrt
from engines.trt_common import (
    BuildProgress,
    CalibrationBatches,
    CalibratorCore,
    check_compatible,
    engine_file_name,
    gpu_slug,
)

META = ModelMeta("seedcnn", ["def_front", "ok_front"], "ok_front", 32, 1, [0.5], [0.25])
INFO = {
    "tensorrt_version": "10.3.0",
    "gpu": "Orin (nvgpu)",
    "precision": "fp16",
    "max_batch": 8,
    "checkpoint": "casting_seedcnn.pt",
}


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("NVIDIA GeForce RTX 3060", "geforce-rtx-3060"),
        ("Orin (nvgpu)", "orin-nvgpu"),
        ("NVIDIA Jetson Xavier NX", "jetson-xavier-nx"),
        ("", "unknown-gpu"),
    ],
)
def test_gpu_slug(name, slug):
    assert gpu_slug(name) == slug


def test_engine_file_name_encodes_what_it_needs():
    assert engine_file_name("casting_seedcnn", "10.3.0", "Orin (nvgpu)", "int8", 8) == (
        "casting_seedcnn.trt10.3.0.orin-nvgpu.int8.b8.engine"
    )
    with pytest.raises(UserError, match="unknown precision 'bf16'; supported: fp32, fp16, int8"):
        engine_file_name("m", "10.3.0", "Orin", "bf16", 8)
    with pytest.raises(UserError, match="max batch"):
        engine_file_name("m", "10.3.0", "Orin", "fp16", 0)


@pytest.mark.parametrize(
    ("version", "gpu", "message"),
    [
        ("10.3.0", "Orin (nvgpu)", None),
        ("10.3.0", "orin nvgpu", None),  # same model, spelled differently by another driver
        ("10.7.0", "Orin (nvgpu)", r"built with TensorRT 10\.3\.0, this machine has TensorRT 10\.7\.0; rebuild"),
        ("10.3.0", "NVIDIA GeForce RTX 3060", r"built on GPU 'Orin \(nvgpu\)', this machine has 'NVIDIA GeForce"),
    ],
)
def test_version_and_gpu_checks(version, gpu, message):
    path = Path("models/casting_seedcnn.trt10.3.0.orin-nvgpu.fp16.b8.engine")
    if message is None:
        check_compatible(path, INFO, version, gpu)
        return
    with pytest.raises(UserError, match=message) as info:
        check_compatible(path, INFO, version, gpu)
    # the line says how to rebuild, with the original precision and batch
    assert "inspector build-engine --checkpoint casting_seedcnn.pt --out models --precision fp16 --batch 8" in str(
        info.value
    )


def test_calibration_batches_are_full_and_preprocessed_like_the_line(engine_images):
    images = folder_images(engine_images, META.classes)  # 32 images
    batches = CalibrationBatches(images.paths, META, batch_size=10)
    assert (len(batches), batches.dropped, batches.shape, batches.nbytes) == (3, 2, (10, 1, 32, 32), 10 * 32 * 32 * 4)
    got = list(batches)
    assert len(got) == 3 and all(b.shape == (10, 1, 32, 32) and b.dtype == np.float32 for b in got)
    assert all(b.flags["C_CONTIGUOUS"] for b in got)
    import cv2

    expected = preprocess([cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in images.paths[10:20]], META)
    np.testing.assert_array_equal(got[1], expected)


def test_calibration_needs_one_full_batch(engine_images):
    images = folder_images(engine_images, META.classes)
    with pytest.raises(UserError, match="INT8 calibration needs at least 64 images"):
        CalibrationBatches(images.paths, META, batch_size=64)


def test_calibrator_core_serves_batches_then_none_and_keeps_the_cache(engine_images, tmp_path):
    images = folder_images(engine_images, META.classes)
    batches = CalibrationBatches(images.paths, META, batch_size=8)
    device: list[np.ndarray] = []  # stands in for GPU memory: the address of the copied batch

    def to_device(batch: np.ndarray) -> int:
        device.append(batch.copy())
        return device[-1].ctypes.data

    cache = tmp_path / "cal" / "model.int8.calib"
    core = CalibratorCore(batches, cache, to_device)
    assert core.get_batch_size() == 8
    assert core.read_calibration_cache() is None
    ptrs = [core.get_batch(["input"]) for _ in range(4)]
    assert [p[0] for p in ptrs] == [d.ctypes.data for d in device]
    assert core.get_batch(["input"]) is None  # end of data: TensorRT stops calibrating
    core.write_calibration_cache(memoryview(b"TRT-1000-EntropyCalibration2\ninput: 3c010a14\n"))
    again = CalibratorCore(batches, cache, to_device)
    assert again.read_calibration_cache().startswith(b"TRT-1000-EntropyCalibration2")


def test_build_progress_reports_top_level_phases():
    lines: list[str] = []
    p = BuildProgress(report=lines.append, min_interval_s=0.0)
    p.phase_start("Building engine", None, 3)
    p.phase_start("Tactic selection", "Building engine", 100)
    assert p.step_complete("Tactic selection", 5) is True
    assert p.step_complete("Building engine", 0) is True
    p.phase_finish("Tactic selection")
    p.phase_finish("Building engine")
    assert lines == [
        "TensorRT build: Building engine (3 steps)",
        "TensorRT build: Building engine 1/3",
        "TensorRT build: Building engine done",
    ]


def test_probe_says_why_tensorrt_is_unusable():
    modules, why = probe_tensorrt()
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        assert modules is None and "tensorrt" in why


class _FakeCuda:
    """Stand-in for pycuda.driver that only names the GPU: the refusal must come before TensorRT reads the file."""

    class Device:
        def __init__(self, index: int) -> None:
            self.index = index

        def name(self) -> str:
            return "NVIDIA GeForce RTX 3060"

        def retain_primary_context(self):
            from types import SimpleNamespace

            return SimpleNamespace(push=lambda: None, pop=lambda: None)


@pytest.mark.parametrize(
    ("trt_version", "message"),
    [
        (
            "10.7.0",
            r"built with TensorRT 10\.3\.0, this machine has TensorRT 10\.7\.0; rebuild it on this machine: "
            r"inspector build-engine",
        ),
        ("10.3.0", r"built on GPU 'Orin \(nvgpu\)', this machine has 'NVIDIA GeForce RTX 3060'; rebuild"),
    ],
)
def test_load_engine_refuses_other_tensorrt_or_gpu(trt_version, message, tmp_path):
    from types import SimpleNamespace

    from engines.base import load_engine
    from engines.export import file_sha256
    from engines.meta import write_sidecar

    path = tmp_path / "casting_seedcnn.trt10.3.0.orin-nvgpu.fp16.b8.engine"
    path.write_bytes(b"serialized engine bytes")
    write_sidecar(path, META, tensorrt={**INFO, "engine_sha256": file_sha256(path)})
    trt = SimpleNamespace(__version__=trt_version)  # no Runtime: deserializing would fail the test loudly
    with pytest.raises(UserError, match=message):
        load_engine(path, modules=(trt, _FakeCuda))

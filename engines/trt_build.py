"""Build a TensorRT 10 engine from the checked ONNX: FP32, FP16 or INT8 (entropy calibration), with an
optimization profile for the dynamic batch, a timing cache and progress output.

TensorRT and pycuda are imported lazily (:func:`probe_tensorrt`), so this module imports anywhere. The
TensorRT calls follow the TensorRT 10 Python API; they have NOT been run on this project's development
machine (no TensorRT, no GPU) - see README "Engines".
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from engines.errors import UserError
from engines.imagesets import ImageSet
from engines.meta import read_sidecar, write_sidecar
from engines.trt_common import BuildProgress, CalibrationBatches, CalibratorCore, engine_file_name, gpu_slug
from ground.files import file_sha256

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

Modules = tuple[ModuleType, ModuleType]  # (tensorrt, pycuda.driver)


def probe_tensorrt() -> tuple[Modules | None, str]:
    """(tensorrt, pycuda.driver) when both import and a CUDA GPU answers, else (None, why not)."""
    try:
        import tensorrt as trt
    except ImportError:
        return None, "the tensorrt Python package is not installed (it comes with JetPack / the TensorRT wheels)"
    try:
        import pycuda.driver as cuda
    except ImportError:
        return None, "pycuda is not installed (pip install 'inspector[jetson]')"
    try:
        cuda.init()
        if cuda.Device.count() < 1:
            return None, "no CUDA GPU found"
    except Exception as exc:  # noqa: BLE001 - pycuda raises its own error types
        return None, f"CUDA is not usable ({exc})"
    return (trt, cuda), ""


def gpu_name(cuda: ModuleType, device: int = 0) -> str:
    return str(cuda.Device(device).name())


def make_calibrator(trt: ModuleType, cuda: ModuleType, batches: CalibrationBatches, cache_path: Path) -> object:
    """An ``IInt8EntropyCalibrator2`` that delegates to :class:`CalibratorCore` (the tested part)."""
    device_mem = cuda.mem_alloc(batches.nbytes)

    def to_device(batch: np.ndarray) -> int:
        cuda.memcpy_htod(device_mem, batch)
        return int(device_mem)

    core = CalibratorCore(batches, cache_path, to_device)

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.core, self.device_mem = core, device_mem  # keep the device buffer alive with the calibrator

        def get_batch_size(self) -> int:
            return self.core.get_batch_size()

        def get_batch(self, names: list[str]) -> list[int] | None:
            return self.core.get_batch(names)

        def read_calibration_cache(self):
            return self.core.read_calibration_cache()

        def write_calibration_cache(self, cache: bytes) -> None:
            self.core.write_calibration_cache(cache)

    return EntropyCalibrator()


def make_progress_monitor(trt: ModuleType, progress: BuildProgress) -> object:
    class ProgressMonitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            progress.phase_start(phase_name, parent_phase, num_steps)

        def step_complete(self, phase_name: str, step: int) -> bool:
            return progress.step_complete(phase_name, step)

        def phase_finish(self, phase_name: str) -> None:
            progress.phase_finish(phase_name)

    return ProgressMonitor()


def build_engine(
    onnx_path: Path,
    out_dir: Path,
    precision: str = "fp16",
    max_batch: int = 8,
    workspace_mb: int = 1024,
    calib_images: ImageSet | None = None,
    modules: Modules | None = None,
    report: Callable[[str], object] = print,
) -> Path:
    """Build ``out_dir/<stem>.trt<ver>.<gpu>.<precision>.b<batch>.engine`` + sidecar; returns its path."""
    if modules is None:
        modules, why = probe_tensorrt()
        if modules is None:
            raise UserError(f"cannot build a TensorRT engine here: {why}")
    trt, cuda = modules
    meta = read_sidecar(onnx_path)
    device = cuda.Device(0)
    ctx = device.retain_primary_context()  # the context TensorRT's runtime API uses too
    ctx.push()
    try:
        gpu = gpu_name(cuda)
        name = engine_file_name(onnx_path.stem, trt.__version__, gpu, precision, max_batch)
        engine_path = Path(out_dir) / name
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
        parser = trt.OnnxParser(network, logger)
        if not parser.parse(Path(onnx_path).read_bytes()):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise UserError(f"{onnx_path}: TensorRT cannot parse this ONNX ({errors[:200]})")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)

        inp = network.get_input(0)
        c, s = meta.channels, meta.input_size
        profile = builder.create_optimization_profile()
        profile.set_shape(inp.name, (1, c, s, s), (max_batch, c, s, s), (max_batch, c, s, s))
        config.add_optimization_profile(profile)

        if precision in ("fp16", "int8"):
            if not getattr(builder, "platform_has_fast_fp16", True):  # deprecated in later TensorRT 10 releases
                report(f"warning: {gpu} has no fast FP16; the engine may be no faster than FP32")
            config.set_flag(trt.BuilderFlag.FP16)  # INT8 layers fall back to FP16, not FP32
        calibrator = None
        if precision == "int8":
            if calib_images is None:
                raise UserError("--precision int8 needs --calib-data DIR with representative images")
            batches = CalibrationBatches(calib_images.paths, meta, max_batch)
            cache_path = Path(out_dir) / f"{onnx_path.stem}.{gpu_slug(gpu)}.int8.calib"
            report(
                f"INT8 calibration over {len(batches) * max_batch} images "
                f"({batches.dropped} left over), cache {cache_path}"
            )
            config.set_flag(trt.BuilderFlag.INT8)
            calibrator = make_calibrator(trt, cuda, batches, cache_path)
            config.int8_calibrator = calibrator
            config.set_calibration_profile(profile)

        timing_path = Path(out_dir) / f"timing.trt{trt.__version__}.{gpu_slug(gpu)}.cache"
        cache = config.create_timing_cache(timing_path.read_bytes() if timing_path.is_file() else b"")
        config.set_timing_cache(cache, ignore_mismatch=False)
        monitor = make_progress_monitor(trt, BuildProgress(report=report))
        config.progress_monitor = monitor

        report(f"building {name} (this takes minutes on a Jetson)...")
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise UserError(f"{onnx_path}: TensorRT engine build failed (see the TensorRT messages above)")
        engine_path.write_bytes(bytes(serialized))
        timing_path.write_bytes(bytes(config.get_timing_cache().serialize()))
    finally:
        ctx.pop()

    onnx_meta = meta.extra or {}
    write_sidecar(
        engine_path,
        meta,
        tensorrt={
            "tensorrt_version": trt.__version__,
            "gpu": gpu,
            "precision": precision,
            "max_batch": max_batch,
            "onnx": Path(onnx_path).name,
            "onnx_sha256": file_sha256(onnx_path),
            "checkpoint": onnx_meta.get("source"),
            "engine_sha256": file_sha256(engine_path),
        },
    )
    return engine_path

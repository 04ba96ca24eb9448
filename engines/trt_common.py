"""Pure-Python parts of the TensorRT path: engine naming, compatibility checks, calibration batching,
build progress. Importable and tested without TensorRT, pycuda or a GPU.

A serialized TensorRT engine only runs with the TensorRT version and the GPU model that built it, so both go
into the file name and the sidecar, and a mismatch is refused with the command that rebuilds it.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engines.errors import UserError
from engines.imagesets import read_image
from engines.meta import ModelMeta
from engines.preprocess import preprocess

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")


def gpu_slug(gpu_name: str) -> str:
    """'NVIDIA GeForce RTX 3060' -> 'geforce-rtx-3060'; 'Orin (nvgpu)' -> 'orin-nvgpu'."""
    s = re.sub(r"[^a-z0-9]+", "-", gpu_name.lower()).strip("-")
    s = re.sub(r"^nvidia-", "", s)
    return s or "unknown-gpu"


def engine_file_name(stem: str, trt_version: str, gpu_name: str, precision: str, max_batch: int) -> str:
    """``casting_seedcnn.trt10.3.0.orin.fp16.b8.engine``: what it needs to run is readable in a listing."""
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}; supported: {', '.join(PRECISIONS)}")
    if max_batch < 1:
        raise UserError(f"max batch must be at least 1, got {max_batch}")
    return f"{stem}.trt{trt_version}.{gpu_slug(gpu_name)}.{precision}.b{max_batch}.engine"


def rebuild_command(info: dict, engine_path: Path) -> str:
    source = info.get("checkpoint") or "MODEL.pt"
    return (
        f"inspector build-engine --checkpoint {source} --out {engine_path.parent} "
        f"--precision {info.get('precision', 'fp16')} --batch {info.get('max_batch', 8)}"
    )


def check_compatible(engine_path: Path, info: dict, trt_version: str, gpu_name: str) -> None:
    """Refuse an engine built by another TensorRT version or on another GPU model, saying how to rebuild."""
    built_v, built_gpu = info.get("tensorrt_version"), info.get("gpu")
    how = f"rebuild it on this machine: {rebuild_command(info, engine_path)} (or run the .onnx)"
    if built_v is not None and str(built_v) != str(trt_version):
        raise UserError(f"{engine_path}: built with TensorRT {built_v}, this machine has TensorRT {trt_version}; {how}")
    if built_gpu is not None and gpu_slug(str(built_gpu)) != gpu_slug(gpu_name):
        raise UserError(f"{engine_path}: built on GPU {built_gpu!r}, this machine has {gpu_name!r}; {how}")


class CalibrationBatches:
    """Full batches of preprocessed images for an INT8 calibrator (TensorRT wants every batch full).

    The images go through the shared preprocessing, so calibration sees exactly what the line sees.
    A short final batch is dropped (and counted), never padded with fake images.
    """

    def __init__(
        self, paths: Sequence[Path], meta: ModelMeta, batch_size: int, reader: Callable[[Path], np.ndarray] = read_image
    ) -> None:
        if batch_size < 1:
            raise UserError(f"calibration batch size must be at least 1, got {batch_size}")
        if len(paths) < batch_size:
            raise UserError(
                f"INT8 calibration needs at least {batch_size} images (one batch), got {len(paths)}; "
                "give --calib-data a folder with a few hundred representative images"
            )
        self.paths, self.meta, self.batch_size, self._reader = list(paths), meta, batch_size, reader
        self.num_batches = len(self.paths) // batch_size
        self.dropped = len(self.paths) - self.num_batches * batch_size

    @property
    def shape(self) -> tuple[int, int, int, int]:
        m = self.meta
        return (self.batch_size, m.channels, m.input_size, m.input_size)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * 4

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(self.num_batches):
            chunk = self.paths[i * self.batch_size : (i + 1) * self.batch_size]
            yield np.ascontiguousarray(preprocess([self._reader(p) for p in chunk], self.meta), np.float32)


class CalibratorCore:
    """What an ``IInt8EntropyCalibrator2`` does, minus TensorRT: hand out device pointers, keep the cache.

    ``to_device(array) -> int`` copies a batch to the GPU and returns its address (pycuda on the target).
    With a cache file present, TensorRT reads it and skips calibration: rebuilds take seconds, not minutes.
    """

    def __init__(self, batches: CalibrationBatches, cache_path: Path, to_device: Callable[[np.ndarray], int]):
        self.batches, self.cache_path, self._to_device = batches, Path(cache_path), to_device
        self._it = iter(batches)
        self.served = 0

    def get_batch_size(self) -> int:
        return self.batches.batch_size

    def get_batch(self, names: list[str]) -> list[int] | None:
        try:
            batch = next(self._it)
        except StopIteration:
            return None
        self.served += 1
        log.info("calibration batch %d/%d", self.served, len(self.batches))
        return [self._to_device(batch)]

    def read_calibration_cache(self) -> bytes | None:
        if self.cache_path.is_file():
            log.info("using calibration cache %s", self.cache_path)
            return self.cache_path.read_bytes()
        return None

    def write_calibration_cache(self, cache: bytes) -> None:
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        self.cache_path.write_bytes(bytes(cache))


@dataclass
class BuildProgress:
    """What ``trt.IProgressMonitor`` reports, turned into lines a person watching a Jetson build can read."""

    report: Callable[[str], None] = log.info
    min_interval_s: float = 2.0
    _phases: dict[str, tuple[int, str | None]] = field(default_factory=dict)
    _last: float = 0.0

    def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
        self._phases[phase_name] = (num_steps, parent_phase)
        if parent_phase is None:
            self.report(f"TensorRT build: {phase_name} ({num_steps} steps)")

    def step_complete(self, phase_name: str, step: int) -> bool:
        steps, parent = self._phases.get(phase_name, (0, None))
        now = time.monotonic()
        if parent is None and steps and now - self._last >= self.min_interval_s:
            self._last = now
            self.report(f"TensorRT build: {phase_name} {step + 1}/{steps}")
        return True  # False would cancel the build

    def phase_finish(self, phase_name: str) -> None:
        _, parent = self._phases.pop(phase_name, (0, None))
        if parent is None:
            self.report(f"TensorRT build: {phase_name} done")

"""TensorRT 10 backend for ``.engine`` files: named I/O tensors, ``execute_async_v3`` on a CUDA stream,
pycuda page-locked host buffers and device buffers sized for the engine's largest batch.

Checks before TensorRT sees the file: the sidecar exists, the file's SHA-256 matches the one recorded at
build time (a truncated or corrupted copy is caught here), and the TensorRT version and GPU model match the
build (engines are not portable). Written against the TensorRT 10 API; NOT run on the development machine
(no TensorRT, no GPU) - see README "Engines".
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import ModuleType

import numpy as np

from engines.base import Engine
from engines.errors import UserError
from engines.meta import read_sidecar
from engines.trt_common import check_compatible
from ground.files import file_sha256

log = logging.getLogger(__name__)


def build_info(path: Path, extra: dict) -> dict:
    """The sidecar's TensorRT build record; an engine from elsewhere (trtexec) has none and is allowed."""
    info = extra.get("tensorrt")
    if not isinstance(info, dict):
        log.warning("%s: sidecar has no TensorRT build record; version and GPU cannot be checked", path)
        return {}
    return info


def check_engine_file(path: Path, info: dict) -> None:
    """A corrupted or truncated engine is refused by checksum, before TensorRT tries to deserialize it."""
    want = info.get("engine_sha256")
    if want and file_sha256(path) != want:
        raise UserError(
            f"{path}: engine file is corrupted or was replaced (checksum differs from its sidecar); "
            "rebuild it with `inspector build-engine`"
        )


class TensorRTEngine(Engine):
    backend = "tensorrt"

    def __init__(
        self,
        path: Path,
        device: int = 0,
        threads: int | None = None,
        modules: tuple[ModuleType, ModuleType] | None = None,
    ) -> None:
        """``modules``: (tensorrt, pycuda.driver) already imported; default: probe for them."""
        del threads  # accepted so one `model.threads` setting fits every backend; TensorRT runs on the GPU
        self.path = Path(path)
        self.meta = read_sidecar(self.path)
        info = build_info(self.path, self.meta.extra or {})
        check_engine_file(self.path, info)
        from engines.trt_build import gpu_name, probe_tensorrt

        why = ""
        if modules is None:
            modules, why = probe_tensorrt()
        if modules is None:
            raise UserError(f"{self.path}: cannot run a TensorRT engine here: {why}; use the .onnx model instead")
        trt, cuda = modules
        self._cuda = cuda
        self._ctx = cuda.Device(device).retain_primary_context()
        self._ctx.push()
        try:
            check_compatible(self.path, info, trt.__version__, gpu_name(cuda, device))
            self._setup(trt, cuda, info)
        finally:
            self._ctx.pop()
        self.backend = f"tensorrt-{info.get('precision', '?')}"

    def _setup(self, trt: ModuleType, cuda: ModuleType, info: dict) -> None:
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self._engine is None:
            raise UserError(f"{self.path}: TensorRT could not deserialize this engine; rebuild it on this machine")
        self._context = self._engine.create_execution_context()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise UserError(f"{self.path}: expected 1 input and 1 output tensor, got {inputs} / {outputs}")
        self._in, self._out = inputs[0], outputs[0]
        max_shape = tuple(self._engine.get_tensor_profile_shape(self._in, 0)[2])
        m = self.meta
        if tuple(max_shape[1:]) != (m.channels, m.input_size, m.input_size):
            raise UserError(f"{self.path}: engine input {max_shape} does not match its sidecar; rebuild both")
        self.max_batch = int(max_shape[0])
        self._host_in = cuda.pagelocked_empty((self.max_batch, *max_shape[1:]), np.float32)
        self._host_out = cuda.pagelocked_empty((self.max_batch, m.num_outputs), np.float32)
        self._dev_in = cuda.mem_alloc(self._host_in.nbytes)
        self._dev_out = cuda.mem_alloc(self._host_out.nbytes)
        self._stream = cuda.Stream()
        self._context.set_tensor_address(self._in, int(self._dev_in))
        self._context.set_tensor_address(self._out, int(self._dev_out))

    def infer(self, batch: np.ndarray) -> np.ndarray:
        batch = self.check_input(batch)
        if len(batch) > self.max_batch:  # larger batches run in engine-sized chunks
            return np.concatenate(
                [self.infer(batch[i : i + self.max_batch]) for i in range(0, len(batch), self.max_batch)]
            )
        n, cuda = len(batch), self._cuda
        self._ctx.push()  # the caller's thread may differ from the loader's
        try:
            self._host_in[:n] = batch
            cuda.memcpy_htod_async(self._dev_in, self._host_in[:n], self._stream)
            self._context.set_input_shape(self._in, tuple(batch.shape))
            if not self._context.execute_async_v3(self._stream.handle):
                raise RuntimeError(f"{self.path.name}: TensorRT execution failed")
            cuda.memcpy_dtoh_async(self._host_out[:n], self._dev_out, self._stream)
            self._stream.synchronize()
            return self._host_out[:n].copy()
        finally:
            self._ctx.pop()

    def close(self) -> None:
        if getattr(self, "_context", None) is None:
            return
        self._ctx.push()
        try:
            self._context = self._engine = self._runtime = None
            self._dev_in.free()
            self._dev_out.free()
        finally:
            self._ctx.pop()

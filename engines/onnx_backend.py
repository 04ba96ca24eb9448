"""ONNX Runtime backend for ``.onnx`` files: TensorRT or CUDA execution providers when installed, else CPU.

Metadata comes from the sidecar (``model.onnx.json``); the graph's input shape is checked against it so a
sidecar that belongs to another export is caught at load, not as wrong verdicts on the line.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from engines.base import Engine
from engines.errors import UserError
from engines.meta import read_sidecar

log = logging.getLogger(__name__)

# Preferred order; only those this onnxruntime build offers are used.
PROVIDER_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def choose_providers(available: list[str], requested: list[str] | None = None) -> list[str]:
    """The execution providers to ask for: ``requested`` (checked) or the preferred ones available."""
    if requested:
        missing = [p for p in requested if p not in available]
        if missing:
            raise UserError(
                f"ONNX Runtime provider(s) {', '.join(missing)} not available; this build has {', '.join(available)}"
            )
        return list(requested)
    chosen = [p for p in PROVIDER_ORDER if p in available]
    return chosen or ["CPUExecutionProvider"]


class OnnxEngine(Engine):
    backend = "onnxruntime"

    def __init__(self, path: Path, threads: int | None = None, providers: list[str] | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        self.meta = read_sidecar(self.path)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3  # errors only: provider fallbacks are logged by us, once
        if threads:
            opts.intra_op_num_threads = int(threads)
            opts.inter_op_num_threads = 1
        chosen = choose_providers(ort.get_available_providers(), providers)
        provider_args: list = []
        for name in chosen:
            if name == "TensorrtExecutionProvider":  # cache built engines beside the model: minutes saved per start
                cache = self.path.parent / ".trt_cache"
                provider_args.append((name, {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache)}))
            else:
                provider_args.append(name)
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=opts, providers=provider_args)
        except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types for bad files
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(
                f"{self.path}: not a loadable ONNX model ({first[:160]}); re-export it with `inspector build-engine`"
            ) from None
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self._check_graph_shape(list(inp.shape))
        self.providers = self.session.get_providers()
        self.backend = f"onnxruntime-{self.providers[0].replace('ExecutionProvider', '').lower()}"
        log.debug("%s: providers %s", self.path.name, self.providers)

    def _check_graph_shape(self, shape: list) -> None:
        m = self.meta
        want = [m.channels, m.input_size, m.input_size]
        got = shape[1:]
        if len(shape) != 4 or any(isinstance(g, int) and g != w for g, w in zip(got, want, strict=True)):
            raise UserError(
                f"{self.path}: graph input {shape} does not match its sidecar (N, {m.channels}, {m.input_size}, "
                f"{m.input_size}); the .json belongs to another export - re-export both together"
            )

    def infer(self, batch: np.ndarray) -> np.ndarray:
        batch = self.check_input(batch)
        outs = self.session.run(None, {self.input_name: batch})
        self.last_maps = outs[1] if len(outs) > 1 else None
        return outs[0]

    def close(self) -> None:
        self.session = None

"""The engine interface and the suffix table that picks a backend.

An engine is small: ``meta`` + ``infer(batch) -> probabilities`` + ``close()``. Backends are imported lazily
from an explicit table, so a missing TensorRT or torch never breaks ONNX.
"""

from __future__ import annotations

import importlib
import logging
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from engines.errors import UserError
from engines.meta import ModelMeta

log = logging.getLogger(__name__)

# suffix -> (module, class). Order is the order shown in error messages.
BACKENDS: dict[str, tuple[str, str]] = {
    ".pt": ("engines.torch_backend", "TorchEngine"),
    ".onnx": ("engines.onnx_backend", "OnnxEngine"),
    ".engine": ("engines.tensorrt_backend", "TensorRTEngine"),
}


class Engine(ABC):
    """A loaded model. ``infer`` takes float32 NCHW from :func:`engines.preprocess.preprocess`."""

    meta: ModelMeta
    path: Path
    backend: str = "?"
    last_maps: np.ndarray | None = None  # anomaly models: the anomaly map (N, 1, S, S) of the last infer

    @abstractmethod
    def infer(self, batch: np.ndarray) -> np.ndarray:
        """float32 (N, C, S, S) -> float32 probabilities (N, meta.num_outputs)."""

    def close(self) -> None:  # noqa: B027 - optional for backends that hold nothing
        """Release the backend's resources; safe to call twice."""

    def warm_up(self, batch_size: int = 1) -> None:
        """One inference at load so the first real part does not pay for lazy initialisation."""
        m = self.meta
        self.infer(np.zeros((batch_size, m.channels, m.input_size, m.input_size), np.float32))

    def check_input(self, batch: np.ndarray) -> np.ndarray:
        m = self.meta
        expected = (m.channels, m.input_size, m.input_size)
        if batch.ndim != 4 or tuple(batch.shape[1:]) != expected:
            raise UserError(
                f"{self.path.name}: input batch shape {tuple(batch.shape)} does not match the model's "
                f"(N, {m.channels}, {m.input_size}, {m.input_size}); preprocess with engines.preprocess"
            )
        return np.ascontiguousarray(batch, dtype=np.float32)

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load_engine(path: str | Path, *, warm_up: bool = True, expect_input_size: int | None = None, **options) -> Engine:
    """Open a model file with the backend its suffix names; every failure is one clear :class:`UserError`.

    ``expect_input_size`` (the configuration's ``model.input_size``) refuses a model built for another size.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in BACKENDS:
        raise UserError(f"{p}: unknown model file type {suffix or '(none)'!r}; supported: {', '.join(BACKENDS)}")
    if not p.is_file():
        raise UserError(f"{p}: model file not found; check the path or train/export one first")
    module_name, class_name = BACKENDS[suffix]
    module = importlib.import_module(module_name)
    engine: Engine = getattr(module, class_name)(p, **options)
    if expect_input_size is not None and engine.meta.input_size != expect_input_size:
        engine.close()
        raise UserError(
            f"{p}: model input size is {engine.meta.input_size} but the configuration expects "
            f"{expect_input_size}; fix model.input_size or use a model trained at that size"
        )
    if warm_up:
        engine.warm_up()
    log.info("loaded %s with %s backend", p, engine.backend)
    return engine


def store_metadata(path: str | Path, meta: ModelMeta) -> Path:
    """Persist changed metadata (a new threshold): inside a ``.pt`` checkpoint, else in the sidecar JSON."""
    p = Path(path)
    if p.suffix.lower() == ".pt":
        from engines.checkpoint import update_checkpoint_meta

        update_checkpoint_meta(p, meta)
        return p
    from engines.meta import write_sidecar

    return write_sidecar(p, meta)

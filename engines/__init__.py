"""Model engines: one small interface over PyTorch, ONNX Runtime and TensorRT."""

from engines.base import BACKENDS, Engine, load_engine
from engines.errors import UserError
from engines.meta import ModelMeta

__all__ = ["BACKENDS", "Engine", "ModelMeta", "UserError", "load_engine"]

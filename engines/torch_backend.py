"""PyTorch backend for ``.pt`` checkpoints: CPU, or CUDA (FP16 there unless told otherwise)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engines.base import Engine
from engines.errors import UserError


class TorchEngine(Engine):
    backend = "pytorch"

    def __init__(self, path: Path, device: str | None = None, fp16: bool | None = None, threads: int | None = None):
        try:
            import torch
        except ImportError:
            raise UserError(
                f"{path}: a .pt checkpoint needs PyTorch (pip install 'inspector[train]'); "
                "or export it with `inspector build-engine` and run the .onnx"
            ) from None
        from engines.archs import build_network, inference_network, load_weights
        from engines.checkpoint import load_checkpoint

        self.path = Path(path)
        self.meta, state, _ = load_checkpoint(path)
        if threads:
            torch.set_num_threads(threads)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.fp16 = (self.device.type == "cuda") if fp16 is None else fp16
        if self.meta.kind == "anomaly":  # engines.anomaly: (score, map) out, activation inside
            from engines.anomaly import build_anomaly_network

            self.fp16 = False  # |a|^2 - 2ab + |b|^2 cancels badly in half precision
            try:
                self.net = build_anomaly_network(self.meta, state).to(self.device)
            except UserError as exc:
                raise UserError(f"{path}: {exc}") from None
        else:
            try:
                net = build_network(self.meta)
            except UserError as exc:  # say which file, and what to do with it
                raise UserError(f"{path}: {exc}; this checkpoint needs a newer inspector, or retrain it") from None
            load_weights(net, state, self.meta, path)
            self.net = inference_network(net, self.meta).to(self.device)
        if self.fp16:
            self.net = self.net.half()
        self._torch = torch
        self.backend = f"pytorch-{self.device.type}{'-fp16' if self.fp16 else ''}"

    def infer(self, batch: np.ndarray) -> np.ndarray:
        batch = self.check_input(batch)
        torch = self._torch
        with torch.inference_mode():
            x = torch.from_numpy(batch).to(self.device)
            if self.fp16:
                x = x.half()
            out = self.net(x)
            if isinstance(out, tuple):  # anomaly models: (score, map)
                out, amap = out
                self.last_maps = amap.float().cpu().numpy()
            return out.float().cpu().numpy()

    def close(self) -> None:
        self.net = None

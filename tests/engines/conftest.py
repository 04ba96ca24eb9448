"""Engines test fixtures: one tiny trained checkpoint (seconds on a CPU) and its ONNX export, shared."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest

# the shared synthetic-part drawing from tests/conftest.py (a module named "conftest" too, so load it by path)
_spec = importlib.util.spec_from_file_location("_tests_root_conftest", Path(__file__).parents[1] / "conftest.py")
_root_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_root_conftest)
make_part_image = _root_conftest.make_part_image


def _images(root: Path, n: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    for cls in ("def_front", "ok_front"):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            cv2.imwrite(str(root / cls / f"{cls}_{i:03d}.png"), make_part_image(cls == "def_front", rng, 64))
    return root


@pytest.fixture(scope="session")
def engine_images(tmp_path_factory) -> Path:
    """Class folders of synthetic castings: ``def_front`` (notched) and ``ok_front``, 16 each."""
    return _images(tmp_path_factory.mktemp("engine_images"), 16, seed=1)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, engine_images) -> Path:
    """A SeedCNN at 32x32 gray, trained for a few steps so its scores are decisive, saved as model.pt."""
    import torch

    from engines.archs import build_network
    from engines.checkpoint import save_checkpoint
    from engines.imagesets import folder_images, preprocessed_batches
    from engines.meta import ModelMeta

    torch.set_num_threads(1)
    torch.manual_seed(0)
    meta = ModelMeta("seedcnn", ["def_front", "ok_front"], "ok_front", 32, 1, [0.5], [0.25])
    train = _images(tmp_path_factory.mktemp("engine_train"), 24, seed=2)
    imgs = folder_images(train, meta.classes)
    x = torch.from_numpy(np.concatenate(list(preprocessed_batches(imgs.paths, meta, 64))))
    y = torch.tensor([[1.0] if lab == "def_front" else [0.0] for lab in imgs.labels])
    net = build_network(meta)
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    net.train()
    for _ in range(40):
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(net(x), y)
        loss.backward()
        opt.step()
    path = tmp_path_factory.mktemp("engine_ckpt") / "tiny.pt"
    save_checkpoint(path, net.state_dict(), meta)
    return path


@pytest.fixture(scope="session")
def tiny_onnx(tiny_checkpoint, tmp_path_factory) -> Path:
    from engines.export import export_onnx

    return export_onnx(tiny_checkpoint, tmp_path_factory.mktemp("engine_onnx") / "tiny.onnx")

"""Runtime test fixtures: a tiny exported ONNX model, a drawn line video, an Xvfb display."""

from __future__ import annotations

from pathlib import Path

import cv2
import pytest
from runtime_kit import LINE_FRAMES, LINE_SPRITES, render


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory) -> Path:
    """An untrained seedcnn exported to ONNX: the real backend and file format, small and fast."""
    torch = pytest.importorskip("torch", reason="exporting the test model needs torch (the train extra)")
    torch.set_num_threads(1)
    from engines.archs import build_network
    from engines.checkpoint import save_checkpoint
    from engines.export import export_onnx
    from engines.meta import ModelMeta

    d = tmp_path_factory.mktemp("model")
    meta = ModelMeta("seedcnn", ["def_front", "ok_front"], "ok_front", 32, 1, [0.5], [0.25], 0.5)
    torch.manual_seed(0)
    save_checkpoint(d / "tiny.pt", build_network(meta).state_dict(), meta)
    return export_onnx(d / "tiny.pt", d / "tiny.onnx")


@pytest.fixture(scope="session")
def line_video(tmp_path_factory) -> Path:
    """640x240 at 30 fps, 5 parts moving right at 9 px/frame, MJPG in AVI."""
    path = tmp_path_factory.mktemp("line") / "line.avi"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (640, 240))
    assert w.isOpened()
    for img in render(LINE_SPRITES, LINE_FRAMES):
        w.write(img)
    w.release()
    return path


@pytest.fixture(scope="session")
def line_config(tmp_path_factory, tiny_onnx) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "line.yaml"
    path.write_text(
        "detection:\n  method: threshold\n  threshold: 100\n  min_area: 800\n"
        f"model:\n  path: {tiny_onnx}\n"
        "display:\n  enabled: auto\n"
    )
    return path

"""bench/gpu_check.py's CPU-safe parts: data loading, a CPU training step, the agreement figures, no-CUDA exit."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import load_bench


@pytest.fixture(scope="module")
def gpu_check():
    return load_bench("gpu_check")


def test_real_folder_and_synthetic_data(gpu_check, engine_images, tmp_path):
    meta, x, y, source = gpu_check.load_data(engine_images, 20, 32)
    assert meta.classes == ["def_front", "ok_front"] and meta.ok_class == "ok_front" and meta.binary
    assert x.shape == (20, 1, 32, 32) and x.dtype == np.float32 and set(y) == {0, 1}
    assert "real images" in source
    meta, x, y, source = gpu_check.load_data(tmp_path / "absent", 10, 32)
    assert x.shape == (10, 1, 32, 32) and list(y[:2]) == [0, 1] and "synthetic" in source


def test_training_step_and_agreement_on_cpu(gpu_check):
    import torch

    torch.set_num_threads(1)
    meta, x, y, _ = gpu_check.load_data(None, 16, 32)
    tr, te = gpu_check.split(len(x))
    assert len(set(tr) | set(te)) == 16 and not set(tr) & set(te)
    state = gpu_check.train(meta, x[tr], y[tr], epochs=1, device="cpu", batch=8)
    assert "classifier.4.weight" in state
    p32 = np.array([[0.1], [0.9], [0.49], [0.7]], np.float32)
    p16 = np.array([[0.1], [0.9], [0.51], [0.7]], np.float32)
    a = gpu_check.agreement(meta, p32, p16, np.array([1, 0, 1, 0]))
    assert a["verdicts_differ"] == 1 and a["agreement"] == 0.75
    assert a["accuracy_fp32"] == 1.0 and a["accuracy_fp16"] == 0.75
    assert a["max_score_diff"] == pytest.approx(0.02, abs=1e-6)


def test_without_cuda_it_says_so_and_exits_0(gpu_check, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present: the full check runs instead")
    assert gpu_check.main([]) == 0
    assert "no CUDA GPU visible to PyTorch" in capsys.readouterr().out

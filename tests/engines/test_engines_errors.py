"""Every way a model file can be wrong gives one clear line (a UserError; the CLI prints it and exits 1)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from engines.base import load_engine
from engines.errors import UserError
from engines.meta import read_sidecar, sidecar_path, write_sidecar
from inspector.cli import main


def _copy_onnx(tiny_onnx: Path, dst: Path, sidecar: bool = True) -> Path:
    out = dst / "model.onnx"
    shutil.copy(tiny_onnx, out)
    if sidecar:
        shutil.copy(sidecar_path(tiny_onnx), sidecar_path(out))
    return out


def _missing(tmp, **_):
    return tmp / "nope.onnx", {}


def _unknown_suffix(tmp, **_):
    p = tmp / "model.tflite"
    p.write_bytes(b"x")
    return p, {}


def _corrupt_pt(tmp, **_):
    p = tmp / "model.pt"
    p.write_bytes(b"PK\x03\x04 definitely not a zip archive")
    return p, {}


def _corrupt_onnx(tmp, tiny_onnx, **_):
    p = _copy_onnx(tiny_onnx, tmp)
    p.write_bytes(p.read_bytes()[:300])  # truncated in transfer
    return p, {}


def _corrupt_engine(tmp, tiny_onnx, **_):
    """A truncated copy of an engine whose sidecar records the full file's checksum (as build-engine writes)."""
    import hashlib

    p = tmp / "model.trt10.3.0.orin.fp16.b8.engine"
    full = bytes(range(256)) * 64
    write_sidecar(
        p,
        read_sidecar(tiny_onnx),
        tensorrt={
            "tensorrt_version": "10.3.0",
            "gpu": "Orin",
            "precision": "fp16",
            "max_batch": 8,
            "engine_sha256": hashlib.sha256(full).hexdigest(),
        },
    )
    p.write_bytes(full[:1000])
    return p, {}


def _onnx_no_sidecar(tmp, tiny_onnx, **_):
    return _copy_onnx(tiny_onnx, tmp, sidecar=False), {}


def _engine_no_sidecar(tmp, **_):
    p = tmp / "model.engine"
    p.write_bytes(b"\0" * 64)
    return p, {}


def _input_size_mismatch(tmp, tiny_onnx, **_):
    return _copy_onnx(tiny_onnx, tmp), {"expect_input_size": 64}


def _pt_input_size_mismatch(tmp, tiny_checkpoint, **_):
    return tiny_checkpoint, {"expect_input_size": 224}


def _sidecar_from_other_export(tmp, tiny_onnx, **_):
    p = _copy_onnx(tiny_onnx, tmp)
    data = json.loads(sidecar_path(p).read_text())
    data["input_size"] = 64
    sidecar_path(p).write_text(json.dumps(data))
    return p, {}


def _sidecar_not_json(tmp, tiny_onnx, **_):
    p = _copy_onnx(tiny_onnx, tmp)
    sidecar_path(p).write_text("{ not json")
    return p, {}


CASES = [
    # (case, what the one line must say)
    (_missing, r"nope\.onnx: model file not found"),
    (_unknown_suffix, r"unknown model file type '\.tflite'; supported: \.pt, \.onnx, \.engine"),
    (_corrupt_pt, r"model\.pt: not a readable PyTorch checkpoint"),
    (_corrupt_onnx, r"model\.onnx: not a loadable ONNX model .*re-export it"),
    (_corrupt_engine, r"engine file is corrupted or was replaced .*rebuild it"),
    (_onnx_no_sidecar, r"metadata sidecar model\.onnx\.json not found"),
    (_engine_no_sidecar, r"metadata sidecar model\.engine\.json not found"),
    (_input_size_mismatch, r"model input size is 32 but the configuration expects 64"),
    (_pt_input_size_mismatch, r"model input size is 32 but the configuration expects 224"),
    (_sidecar_from_other_export, r"does not match its sidecar .*re-export both together"),
    (_sidecar_not_json, r"unreadable metadata sidecar"),
]


@pytest.mark.parametrize(("case", "message"), CASES, ids=[c[0].__name__.strip("_") for c in CASES])
def test_load_error_is_one_clear_line(case, message, tmp_path, tiny_onnx, tiny_checkpoint):
    path, opts = case(tmp_path, tiny_onnx=tiny_onnx, tiny_checkpoint=tiny_checkpoint)
    with pytest.raises(UserError, match=message) as info:
        load_engine(path, **opts)
    assert "\n" not in str(info.value)


def test_engine_without_tensorrt_says_use_the_onnx(tmp_path, tiny_onnx):
    try:
        import tensorrt  # noqa: F401

        pytest.skip("tensorrt is installed here")
    except ImportError:
        pass
    p = tmp_path / "model.engine"
    p.write_bytes(b"\0" * 64)
    write_sidecar(p, read_sidecar(tiny_onnx))  # no build record: accepted with a warning, then TensorRT needed
    with pytest.raises(UserError, match=r"cannot run a TensorRT engine here: the tensorrt .*use the \.onnx"):
        load_engine(p)


@pytest.mark.parametrize("command", ["bench-engine", "build-engine"])
def test_cli_prints_one_line_and_exits_1(command, tmp_path, capsys):
    missing = str(tmp_path / "missing.pt")
    argv = (
        [command, missing] if command == "bench-engine" else [command, "--checkpoint", missing, "--out", str(tmp_path)]
    )
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "missing.pt" in err and "not found" in err
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--precision", "int8"], "--precision int8 needs --calib-data DIR"),
        (["--batch", "0"], "--batch and --workspace must be positive"),
    ],
)
def test_build_engine_option_errors(extra, message, tiny_checkpoint, tmp_path, capsys):
    assert main(["build-engine", "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path), *extra]) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not any(tmp_path.iterdir())  # refused before exporting anything

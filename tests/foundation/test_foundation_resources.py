"""The shipped model and demo sample are found from a checkout and from a plain (non-editable) install."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from inspector import resources

ROOT = Path(__file__).resolve().parents[2]


def test_checkout_files_are_found_first(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # not in the checkout: the relative default path is resolved against it
    assert resources.resolve_model("models/casting_seedcnn.onnx") == ROOT / "models" / "casting_seedcnn.onnx"
    assert resources.demo_dir() == ROOT / "demo"


def test_an_install_without_a_checkout_finds_them_under_its_prefix(tmp_path, monkeypatch) -> None:
    prefix = tmp_path / "venv"
    model = prefix / "share" / "inspector" / "models" / "casting_seedcnn.onnx"
    model.parent.mkdir(parents=True)
    model.write_bytes(b"onnx")
    (prefix / "share" / "inspector" / "demo" / "ok_front").mkdir(parents=True)
    monkeypatch.setattr(resources, "CHECKOUT", tmp_path / "site-packages")
    monkeypatch.setattr(sysconfig, "get_path", lambda name: str(prefix))
    monkeypatch.chdir(tmp_path)
    assert resources.resolve_model("models/casting_seedcnn.onnx") == model
    assert resources.demo_dir() == prefix / "share" / "inspector" / "demo"
    assert resources.resolve_model("models/none.onnx") == Path("models/none.onnx")  # not found: as given


@pytest.mark.slow
def test_the_wheel_carries_the_model_and_the_demo_sample(tmp_path) -> None:
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    (wheel,) = tmp_path.glob("inspector-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    data = next(n.split("/data/")[0] for n in names if ".data/data/" in n) + "/data/share/inspector/"
    want = ["models/casting_seedcnn.onnx", "models/casting_seedcnn.onnx.json"]
    want += [f"demo/{p.relative_to(ROOT / 'demo')}" for p in sorted((ROOT / "demo").rglob("*")) if p.is_file()]
    missing = [w for w in want if data + w not in names]
    assert not missing, missing
    assert "ground/errors.py" in names and "inspector/line.py" in names

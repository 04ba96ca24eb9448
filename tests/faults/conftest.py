"""Fault-test fixtures: the kit (tiny ONNX model, short video) built once, world-readable for `nobody`."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from faults_kit import make_kit


@pytest.fixture(scope="session")
def kit():
    d = Path(tempfile.mkdtemp(prefix="inspector-faults-"))
    d.chmod(0o755)
    try:
        yield make_kit(d / "kit")
    finally:
        shutil.rmtree(d, ignore_errors=True)

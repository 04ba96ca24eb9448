"""Gate test fixtures over the kit in gate_kit.py: a line (pty pair + simulator + actuator), gate-sim process."""

from __future__ import annotations

from pathlib import Path

import pytest
from gate_kit import Line, SimProcess


@pytest.fixture
def line(tmp_path: Path):
    made: list[Line] = []

    def make(**overrides: object) -> Line:
        made.append(Line(tmp_path, **overrides))
        return made[-1]

    yield make
    for ln in made:
        ln.close()


@pytest.fixture
def sim_process(tmp_path: Path):
    sp = SimProcess(tmp_path)
    yield sp
    sp.close()

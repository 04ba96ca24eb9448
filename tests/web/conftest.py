"""Web console fixtures: the demo line's configuration (a real rendered line, the shipped model) and a running
line with the console on a free port. Tests skip, saying why, without the web extra."""

from __future__ import annotations

import pytest
from web_kit import RunningLine

pytest.importorskip("fastapi", reason="the web extra (fastapi, uvicorn) is not installed")
pytest.importorskip("uvicorn", reason="the web extra (fastapi, uvicorn) is not installed")


@pytest.fixture(scope="session")
def demo_cfg():
    """The demo line's configuration: the rendered line (24 parts, 640x480, 30 fps) and the shipped model."""
    from inspector.config import InspectorConfig
    from inspector.demoline import prepare_demo

    cfg, _truth = prepare_demo(InspectorConfig())
    cfg.display.enabled = "off"
    return cfg


@pytest.fixture
def running_line(demo_cfg, tmp_path):
    """The demo line looping at its recorded pace, with a defect log and the console on a free port."""
    made: list[RunningLine] = []

    def start(**web) -> RunningLine:
        cfg = demo_cfg.model_copy(deep=True)
        cfg.source.loop = True
        cfg.source.realtime = True
        cfg.log.db = str(tmp_path / "logs" / "new" / "log.db")  # a folder the defect log creates
        cfg.web.enabled = True
        cfg.web.port = 0
        for k, v in web.items():
            setattr(cfg.web, k, v)
        made.append(RunningLine(cfg))
        return made[-1]

    yield start
    for r in made:
        r.stop()

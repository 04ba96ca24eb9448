"""Web console fixtures: the demo line's configuration (a real rendered line, the shipped model), a free port,
plain HTTP helpers over the standard library (real uvicorn answers them), and an in-process line on a thread."""

from __future__ import annotations

import http.client
import json
import socket
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/waiting.py
from waiting import wait_for  # noqa: E402

pytest.importorskip("fastapi", reason="the web extra (fastapi, uvicorn) is not installed")
pytest.importorskip("uvicorn", reason="the web extra (fastapi, uvicorn) is not installed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(
    port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None
) -> tuple[int, dict, bytes]:
    """One raw HTTP request (the path is sent exactly as given: no client-side normalisation of '..')."""
    con = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        con.request(method, path, body=body, headers=headers or {})
        r = con.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        con.close()


def get_json(port: int, path: str) -> dict:
    status, _, data = request(port, "GET", path)
    assert status == 200, (path, status, data)
    return json.loads(data)


def post_json(port: int, path: str, payload, headers: dict | None = None) -> tuple[int, dict]:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    status, _, data = request(port, "POST", path, raw, {"Content-Type": "application/json", **(headers or {})})
    return status, json.loads(data)


@pytest.fixture(scope="session")
def demo_cfg():
    """The demo line's configuration: the rendered line (24 parts, 640x480, 30 fps) and the shipped model."""
    from inspector.config import InspectorConfig
    from inspector.demoline import prepare_demo

    cfg, _truth = prepare_demo(InspectorConfig())
    cfg.display.enabled = "off"
    return cfg


class RunningLine:
    """A real Line inspecting on a worker thread (started and stopped on the test's thread)."""

    def __init__(self, cfg) -> None:
        from inspector.line import Line, LineRequest

        self.line = Line(cfg, LineRequest(view=False)).start()
        self.port = self.line.console.server.port
        self.thread = threading.Thread(target=self.line.run, name="test-line", daemon=True)
        self.thread.start()
        assert wait_for(lambda: self.line.console.server.started, 10), "the console did not start"

    def stop(self) -> None:
        self.line.request_stop()
        self.thread.join(20)
        assert not self.thread.is_alive(), "the line did not stop"
        self.line.stop()


@pytest.fixture
def running_line(demo_cfg, tmp_path):
    """The demo line looping at its recorded pace, with a defect log and the console on a free port."""
    made: list[RunningLine] = []

    def start(**web) -> RunningLine:
        cfg = demo_cfg.model_copy(deep=True)
        cfg.source.loop = True
        cfg.source.realtime = True
        cfg.log.db = str(tmp_path / "log.db")
        cfg.web.enabled = True
        cfg.web.port = 0
        for k, v in web.items():
            setattr(cfg.web, k, v)
        made.append(RunningLine(cfg))
        return made[-1]

    yield start
    for r in made:
        r.stop()

"""Web console test helpers: a free port, plain HTTP over the standard library (real uvicorn answers it, paths
sent exactly as given), and a real line inspecting on a worker thread."""

from __future__ import annotations

import http.client
import json
import socket
import threading

from tests.waiting import wait_for


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

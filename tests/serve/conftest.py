"""The classify API under test: real uvicorn on a free localhost port, the shipped ONNX model, stdlib HTTP clients."""

from __future__ import annotations

import http.client
import json
import re
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the web extra (fastapi) is not installed: pip install -e '.[web]'")
pytest.importorskip("uvicorn", reason="the web extra (uvicorn) is not installed: pip install -e '.[web]'")
pytest.importorskip("multipart", reason="the web extra (python-multipart) is not installed: pip install -e '.[web]'")

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "casting_seedcnn.onnx"
DEMO = ROOT / "demo"


def _documented() -> list[re.Pattern]:
    """The lines docs/errors.md lists for `inspector serve` (its 'The classify API' tables), as patterns:
    ``"<status> <line>"`` for HTTP answers, ``"exit 1 <line>"`` for the command; `…` stands for a varying part."""
    text = (ROOT / "docs" / "errors.md").read_text()
    section = text.split("## The classify API", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `[a-z0-9-]+` \| (\d{3}|exit 1) \| [^|]+ \| `(.+?)` \|$", section, re.M)
    return [re.compile(re.escape(f"{status} {msg}").replace("…", ".*")) for status, msg in rows]


def is_documented(status: int | str, line: str) -> bool:
    """Whether ``line`` (an error answer with HTTP ``status``, or ``"exit 1"``) is listed in docs/errors.md."""
    return any(p.fullmatch(f"{status} {line}") for p in DOCUMENTED)


def demo_images() -> list[Path]:
    """The bundled sample: 300x300 casting photos in ok_front/ and def_front/."""
    return sorted(DEMO.glob("*/*.jpeg"))


DOCUMENTED = _documented()


class Reply:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    @property
    def json(self):
        return json.loads(self.body)


class Client:
    """One keep-alive HTTP/1.1 connection (http.client): what a line PC's integration would use."""

    def __init__(self, port: int, timeout: float = 30.0) -> None:
        self.port, self.timeout = port, timeout
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None) -> Reply:
        try:
            self.conn.request(method, path, body=body, headers=headers or {})
            r = self.conn.getresponse()
            data = r.read()
        except (http.client.HTTPException, OSError):
            self.conn.close()
            raise
        if r.getheader("connection", "").lower() == "close":
            self.conn.close()
        return Reply(r.status, {k.lower(): v for k, v in r.getheaders()}, data)

    def get(self, path: str, headers: dict | None = None) -> Reply:
        return self.request("GET", path, headers=headers)

    def post_image(self, data: bytes, ctype: str = "image/jpeg", query: str = "", headers: dict | None = None) -> Reply:
        return self.request("POST", "/v1/classify" + query, data, {"Content-Type": ctype, **(headers or {})})

    def post_multipart(
        self, files: list[tuple[str, bytes, str]], fields: list[tuple[str, str]] = (), query: str = ""
    ) -> Reply:
        body, ctype = multipart(files, fields)
        return self.request("POST", "/v1/classify" + query, body, {"Content-Type": ctype})

    def close(self) -> None:
        self.conn.close()


def multipart(files: list[tuple[str, bytes, str]], fields: list[tuple[str, str]] = ()) -> tuple[bytes, str]:
    """A multipart/form-data body: file parts (filename, bytes, content type) named 'image', then text fields."""
    boundary = uuid.uuid4().hex
    out = []
    for name, data, ctype in files:
        out.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
            f"Content-Type: {ctype}\r\n\r\n".encode()
            + data
            + b"\r\n"
        )
    for key, value in fields:
        out.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode())
    out.append(f"--{boundary}--\r\n".encode())
    return b"".join(out), f"multipart/form-data; boundary={boundary}"


def read_reply(s: socket.socket) -> bytes:
    """One raw HTTP/1.1 response (head and body, by its Content-Length) from a socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        got = s.recv(65536)
        if not got:
            return data
        data += got
    head, _, rest = data.partition(b"\r\n\r\n")
    n = int(re.search(rb"content-length: (\d+)", head, re.I).group(1))
    while len(rest) < n:
        got = s.recv(65536)
        if not got:
            break
        rest += got
    return head + b"\r\n\r\n" + rest


class GatedEngine:
    """The real ONNX engine, held at each ``infer`` until the test opens the gate: a slowed engine for overload.

    ``entered`` is set each time a batch reaches the engine; ``sizes`` records every batch's size.
    """

    def __init__(self, engine) -> None:
        self.engine, self.meta, self.path, self.backend = engine, engine.meta, engine.path, engine.backend
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.sizes: list[int] = []

    def infer(self, batch: np.ndarray) -> np.ndarray:
        self.sizes.append(len(batch))
        self.entered.set()
        if not self.gate.wait(30):
            raise TimeoutError("the test never opened the gate")
        return self.engine.infer(batch)


@pytest.fixture(scope="session")
def onnx_engine():
    from engines.base import load_engine

    engine = load_engine(MODEL)
    yield engine
    engine.close()


def start_server(engine, **settings):
    """A real uvicorn server in this process on a free 127.0.0.1 port; returns the started Server."""
    from inspector.serve.app import ServeSettings, create_app
    from inspector.serve.classifier import Classifier
    from inspector.serve.http import Server

    app = create_app(Classifier(engine), ServeSettings(**settings))
    return Server(app, "127.0.0.1", 0).start()


@pytest.fixture(scope="module")
def server(onnx_engine) -> Iterator:
    s = start_server(onnx_engine, max_batch=16, max_wait_ms=2.0, max_queue=64, max_upload_bytes=2 * 1024 * 1024)
    yield s
    s.stop()


@pytest.fixture
def client(server) -> Iterator[Client]:
    c = Client(server.port)
    yield c
    c.close()


@pytest.fixture(scope="session")
def expected(onnx_engine) -> dict[str, tuple[str, float, str]]:
    """Offline verdicts for the demo images through `inspector evaluate`'s own scoring path:
    training.evaluate.score_items (decode, THE preprocessing, the engine), then the model's threshold."""
    from training.data import Item
    from training.evaluate import score_items

    meta = onnx_engine.meta
    items = [Item(f"{p.parent.name}/{p.name}", p, p.parent.name) for p in demo_images()]
    scored = score_items(onnx_engine, items, {c: c for c in meta.classes})
    scores = meta.defect_scores(scored.probs)
    classes = meta.predicted_classes(scored.probs)
    out = {}
    for it, s, c in zip(scored.items, scores, classes, strict=True):
        out[it.key] = ("ok" if c == meta.ok_class else "defect", float(s), c)
    return out

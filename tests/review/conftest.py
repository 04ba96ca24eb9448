"""Review fixtures: a real defect log written by `inspector demo` (the real DefectLog writer, the shipped
model, the bundled demo line), a generated 100,000-row log, and the review server on a free port."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import inspector, load_bench

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def demo_log_master(tmp_path_factory) -> Path:
    """The demo line (24 parts) inspected with a defect log that keeps every crop."""
    if not (ROOT / "models" / "casting_seedcnn.onnx").is_file() or not (ROOT / "demo" / "ok_front").is_dir():
        pytest.skip("shipped model or demo/ images not in this checkout")
    d = tmp_path_factory.mktemp("demo_log")
    cfg = d / "line.yaml"
    cfg.write_text("log:\n  ok_sample_fraction: 1.0\n")
    env = {"XDG_CACHE_HOME": str(d / "cache")}  # the rendered demo line stays in the test's folder
    r = inspector("demo", "--no-display", "--config", cfg, "--log-db", d / "log.db", cwd=d, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    con = sqlite3.connect(d / "log.db")
    n, imgs = con.execute("SELECT COUNT(*), COUNT(image) FROM parts").fetchone()
    con.close()
    assert n == 24 and imgs == 24, (n, imgs)
    return d / "log.db"


@pytest.fixture
def demo_log(demo_log_master, tmp_path) -> Path:
    """A copy of the demo log (database and crops) for one test: the "copied log" case, and marks stay local."""
    dst = tmp_path / "copy"
    dst.mkdir()
    shutil.copyfile(demo_log_master, dst / "log.db")
    shutil.copytree(demo_log_master.parent / "log_images", dst / "log_images")
    return dst / "log.db"


@pytest.fixture(scope="session")
def big_log_master(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("big_log") / "big.db"
    return load_bench("review_page").make_log(path, 100_000, seed=1)


@pytest.fixture
def big_log(big_log_master, tmp_path) -> Path:
    dst = tmp_path / "big.db"
    shutil.copyfile(big_log_master, dst)
    return dst


def free_port() -> int:
    from inspector.review.http import free_port as fp

    return fp()


class ReviewServer:
    """`inspector review --web` as a real process (real uvicorn) on a free port."""

    def __init__(self, db: Path, host: str = "127.0.0.1", env: dict | None = None, extra: tuple = ()) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, **(env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "inspector", "review", "--db", str(db), "--web", f"{host}:{self.port}", *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(self.base + "/api/info", timeout=2).read()
                return
            except (urllib.error.URLError, ConnectionError):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.close()
                    raise AssertionError(f"review server did not start: {self.proc.stderr.read()}") from None
                time.sleep(0.05)

    def request(self, path: str, data: bytes | None = None, headers: dict | None = None, method: str | None = None):
        """-> (status, body bytes, headers); HTTP errors are returned, not raised."""
        req = urllib.request.Request(self.base + path, data=data, headers=headers or {}, method=method)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.read(), r.headers
        except urllib.error.HTTPError as e:
            return e.code, e.read(), e.headers

    def close(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.stderr.read() if self.proc.stderr else ""


@pytest.fixture
def review_server():
    servers: list[ReviewServer] = []

    def start(db: Path, **kw) -> ReviewServer:
        pytest.importorskip("fastapi", reason="the web extra (fastapi) is not installed")
        pytest.importorskip("uvicorn", reason="the web extra (uvicorn) is not installed")
        s = ReviewServer(db, **kw)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.close()

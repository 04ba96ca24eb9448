"""`inspector serve` as a user starts it: a child process, its one-line errors, the token, Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading

import pytest

from tests.serve.conftest import MODEL, ROOT, Client, demo_images, is_documented, read_reply

URL = re.compile(r"on http://127\.0\.0\.1:(\d+) ")


class Child:
    """`python -m inspector serve ...` with its stderr read on a thread, so the URL line can be awaited."""

    def __init__(self, *args: str, env: dict | None = None, verbose: bool = False) -> None:
        cmd = [sys.executable, "-m", "inspector", *(["-vv"] if verbose else []), "serve", "--model", str(MODEL), *args]
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env={**os.environ, **(env or {})}
        )
        self.lines: list[str] = []
        self.port: int | None = None
        self.ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line)
            m = URL.search(line)
            if m:
                self.port = int(m.group(1))
                self.ready.set()
        self.ready.set()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise


def test_serve_cli_end_to_end(expected) -> None:
    child = Child("--port", "0")
    try:
        assert child.ready.wait(60) and child.port, "".join(child.lines)
        assert "serving casting_seedcnn@" in child.lines[-1] and "/docs" in child.lines[-1]
        c = Client(child.port)
        assert c.get("/healthz").json["status"] == "ok"
        for p in demo_images()[::7]:
            r = c.post_image(p.read_bytes())
            assert r.json["results"][0]["verdict"] == expected[f"{p.parent.name}/{p.name}"][0]
        # the default 20 MB limit: a declared 21 MB body is refused, with the limit named
        with socket.create_connection(("127.0.0.1", child.port), timeout=10) as s:
            s.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n")
            s.sendall(f"Content-Length: {21 * 1024 * 1024}\r\n\r\n".encode())
            head = read_reply(s)
        assert head.startswith(b"HTTP/1.1 413") and b"the limit is 20 MB" in head
        assert c.get("/healthz").status == 200
        c.close()
    finally:
        rc = child.stop()
    assert rc == 0, "".join(child.lines)
    assert child.lines[-1].strip() == "stopped"
    assert not any("Traceback" in line for line in child.lines)


def test_token_guards_v1_routes(expected) -> None:
    """--token-env: /v1 routes need the bearer token (compared in constant time); health and metrics do not.
    The token never appears in the server's output."""
    secret = "s3cret-token-for-the-test"
    env = {"INSPECTOR_API_TOKEN": secret}
    child = Child("--port", "0", "--token-env", "INSPECTOR_API_TOKEN", env=env, verbose=True)  # debug logging on
    try:
        assert child.ready.wait(60) and child.port, "".join(child.lines)
        c = Client(child.port)
        jpeg = demo_images()[0].read_bytes()
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": secret}):
            r = c.post_image(jpeg, headers=headers)
            assert r.status == 401 and "INSPECTOR_API_TOKEN" in r.json["error"], r.body
            assert c.get("/v1/model", headers=headers).status == 401
        ok = {"Authorization": f"Bearer {secret}"}
        assert c.post_image(jpeg, headers=ok).status == 200
        assert c.get("/v1/model", headers=ok).status == 200
        assert c.get("/healthz").status == 200 and c.get("/metrics").status == 200
        assert 'reason="token"} 6.0' in c.get("/metrics").body.decode()
        c.close()
    finally:
        child.stop()
    assert not any(secret in line for line in child.lines)


def _one_error(args: list[str], env: dict | None = None, code: str | None = None) -> str:
    if code is None:
        cmd = [sys.executable, "-m", "inspector", "serve", *args]
    else:
        cmd = [sys.executable, "-c", code, *args]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})})
    assert p.returncode == 1, (p.returncode, p.stderr)
    errors = [line for line in p.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in p.stderr, p.stderr
    return errors[0][len("error: ") :]


def test_port_in_use_is_one_line() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        msg = _one_error(["--model", str(MODEL), "--port", str(port)])
    assert msg == f"port 127.0.0.1:{port} is already in use (another server?); pick another with --port"
    assert is_documented("exit 1", msg)


@pytest.mark.parametrize(
    ("args", "env", "line"),
    [
        (["--max-batch", "0"], None, "--max-batch 0: must be at least 1"),
        (["--port", "70000"], None, "--port 70000: must be 0 to 65535"),
        (["--max-wait-ms", "-1"], None, "--max-wait-ms -1: must be 0 to 1000"),
        (["--max-upload-mb", "0"], None, "--max-upload-mb 0: must be above 0 and at most 1024"),
        (["--max-images", "100"], None, "--max-images 100 is more than --max-queue 64; raise --max-queue"),
        (["--threshold", "1.5"], None, "--threshold 1.5: must be in [0, 1]"),
        (
            ["--token-env", "NO_SUCH_VAR_FOR_TEST"],
            None,
            "--token-env NO_SUCH_VAR_FOR_TEST: that environment variable is not set or empty; export a token in it",
        ),
        (
            ["--host", "no.such.host.invalid"],
            None,
            "--host 'no.such.host.invalid': not an address of this machine; "
            "use 127.0.0.1 (the default) or the address clients reach it on (0.0.0.0 for all)",
        ),
    ],
)
def test_bad_options_are_one_line(args, env, line) -> None:
    assert _one_error(["--model", str(MODEL), "--port", "0", *args], env) == line
    assert is_documented("exit 1", line), line


def test_missing_model_is_one_line(tmp_path) -> None:
    msg = _one_error(["--model", str(tmp_path / "nope.onnx"), "--port", "0"])
    assert msg == f"{tmp_path / 'nope.onnx'}: model file not found; check the path or train/export one first"


def test_without_web_extra_is_one_line() -> None:
    """FastAPI absent (import blocked in the child): one line naming the extra, no traceback."""
    code = (
        "import sys; sys.modules['fastapi'] = None; from inspector.cli import main; "
        "sys.exit(main(['serve'] + sys.argv[1:]))"
    )
    msg = _one_error(["--model", str(MODEL), "--port", "0"], code=code)
    assert msg == "inspector serve needs the web extra: pip install 'inspector[web]'"
    assert is_documented("exit 1", msg)


def test_accepted_connections_have_tcp_nodelay(onnx_engine) -> None:
    """The server's side of a client connection has TCP_NODELAY: without it Nagle holds each response's body
    behind its head until the client's delayed ACK (about 40 ms a request, seen once in this API's history)."""
    from tests.serve.conftest import start_server
    from tests.waiting import wait_for

    srv = start_server(onnx_engine)
    c = Client(srv.port)
    try:
        assert c.get("/healthz").status == 200
        conns = srv._server.server_state.connections  # uvicorn's open connections (its protocols)
        assert wait_for(lambda: len(conns) == 1, 5)
        sock = next(iter(conns)).transport.get_extra_info("socket")
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        c.close()
        srv.stop()


def test_address_of_another_machine_is_one_line() -> None:
    """A host that resolves but is not this machine's (TEST-NET-1): uvicorn cannot bind; one error line."""
    msg = _one_error(["--model", str(MODEL), "--host", "192.0.2.1", "--port", "8123"])
    assert msg == "192.0.2.1:8123: cannot listen there (see the log line above); check --host and --port"
    assert is_documented("exit 1", msg)

"""The small HTTP plumbing of `inspector serve`: a uvicorn server on a socket we bind ourselves, and the token check.

Binding first turns "port in use" and "no such address" into one clear :class:`UserError` (uvicorn would log and
exit), and lets tests ask for port 0 and learn the real port. uvicorn and FastAPI are imported only here and in
:mod:`inspector.serve.app`, never by the runtime, so the line runs without the ``web`` extra.
"""

from __future__ import annotations

import errno
import hmac
import logging
import os
import socket
import threading
import time
from typing import Any

from ground.errors import UserError

log = logging.getLogger(__name__)

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
WEB_EXTRA = "inspector serve needs the web extra: pip install 'inspector[web]'"


def require_web_extra() -> None:
    """One line instead of an ImportError when FastAPI, uvicorn or python-multipart are missing."""
    try:
        import fastapi  # noqa: F401
        import multipart  # noqa: F401 - python-multipart, for multipart/form-data uploads
        import uvicorn  # noqa: F401
    except ImportError:
        raise UserError(WEB_EXTRA) from None


def is_local(host: str) -> bool:
    return host in LOCAL_HOSTS


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: any free one); every failure is one UserError."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        raise UserError(
            f"--host {host!r}: not an address of this machine; use 127.0.0.1 (the default) or the address "
            "clients reach it on (0.0.0.0 for all)"
        ) from None
    family, kind, proto, _, addr = infos[0]
    # proto IPPROTO_TCP (not 0): asyncio sets TCP_NODELAY only on sockets that say they are TCP; without it
    # Nagle holds a response's body behind its head until the client's delayed ACK, 40 ms per request
    sock = socket.socket(family, kind, proto or socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise UserError(
                f"port {host}:{port} is already in use (another server?); pick another with --port"
            ) from None
        if exc.errno == errno.EACCES:
            raise UserError(
                f"port {host}:{port}: permission denied (ports below 1024 need root); use one above 1024"
            ) from None
        raise UserError(f"{host}:{port}: cannot listen there ({exc.strerror}); check --host and --port") from None
    sock.set_inheritable(True)
    return sock


def read_token(env_name: str | None) -> str | None:
    """The token from the environment variable ``env_name`` (never from the command line, never logged)."""
    if not env_name:
        return None
    value = os.environ.get(env_name, "")
    if not value.strip():
        raise UserError(f"--token-env {env_name}: that environment variable is not set or empty; export a token in it")
    return value.strip()


def token_ok(expected: str | None, authorization: str | None) -> bool:
    """``Authorization: Bearer <token>`` compared in constant time; True when no token is configured."""
    if expected is None:
        return True
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), expected.encode())


class Server:
    """uvicorn serving ``app`` on an already bound socket: :meth:`run` blocks; :meth:`start` runs it in a thread."""

    def __init__(self, app: Any, sock: socket.socket, **uvicorn_options: Any) -> None:
        """``uvicorn_options``: more ``uvicorn.Config`` settings (``http="h11"``, ``loop="asyncio"``: the
        pure-Python parser and loop; by default uvicorn takes httptools and uvloop when installed)."""
        import uvicorn

        self.sock = sock
        host, port = sock.getsockname()[:2]
        self.host, self.port = host, port
        config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_keep_alive=30,
            server_header=False,
            **uvicorn_options,
        )
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def run(self) -> None:
        """Serve until Ctrl-C / SIGTERM (uvicorn installs those handlers on the main thread)."""
        self._server.run(sockets=[self.sock])

    def start(self, timeout: float = 20.0) -> Server:
        """Serve in a daemon thread; returns once uvicorn is accepting, else raises RuntimeError."""
        self._thread = threading.Thread(target=self.run, name="serve-http", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:  # uvicorn offers a flag, not an event, for "accepting now"
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start on {self.url} within {timeout:g} s")
            time.sleep(0.005)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Ask uvicorn to finish (open requests complete) and wait for it; idempotent."""
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error("serve-http thread still alive %.1f s after stop()", timeout)
        self.sock.close()

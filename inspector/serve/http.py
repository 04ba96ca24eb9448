"""The small HTTP plumbing of `inspector serve`: the uvicorn runner, the address check, the token check.

"Port in use", "no such address" and a bind uvicorn refuses each become one clear :class:`UserError` (uvicorn
would log and exit); port 0 picks a free port and :class:`Server` reports the real one. uvicorn and FastAPI
are imported only here and in :mod:`inspector.serve.app`, never by the runtime, so the line runs without the
``web`` extra.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Any

from ground.errors import UserError
from inspector import webaccess

log = logging.getLogger(__name__)


def require_web_extra() -> None:
    """One line instead of an ImportError when FastAPI, uvicorn or python-multipart are missing."""
    webaccess.require_web_extra("inspector serve", ("multipart",))  # python-multipart, for multipart uploads


def is_local(host: str) -> bool:
    return webaccess.is_loopback(host)


def check_address(host: str, port: int) -> None:
    """Refuse, in one line, a host that is not an address and a port another server already holds.

    uvicorn binds the socket itself (on ``host`` as configured: 127.0.0.1 unless told); this check runs first so
    the usual mistakes get a clear line instead of uvicorn's log and exit. A port that cannot be bound for
    another reason still fails in uvicorn, and :meth:`Server.run` turns that into one line too.
    """
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise UserError(
            f"--host {host!r}: not an address of this machine; use 127.0.0.1 (the default) or the address "
            "clients reach it on (0.0.0.0 for all)"
        ) from None
    if port == 0:
        return
    probe = "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host
    try:
        with socket.create_connection((probe, port), timeout=0.5):
            pass
    except OSError:
        return  # nobody answers there: free (or not ours to reach; uvicorn will say)
    raise UserError(f"port {host}:{port} is already in use (another server?); pick another with --port")


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
    return webaccess.token_matches(expected, webaccess.bearer(authorization))


class Server:
    """uvicorn serving ``app`` on host:port: :meth:`run` blocks (the CLI); :meth:`start` runs it in a thread (tests).

    ``on_started(server)`` is called once uvicorn listens (``port`` 0: :attr:`port` is then the real one).
    ``uvicorn_options``: more ``uvicorn.Config`` settings (``http="h11"``, ``loop="asyncio"``: the pure-Python
    parser and loop; by default uvicorn takes httptools and uvloop when installed).
    """

    def __init__(self, app: Any, host: str, port: int, on_started: Any = None, **uvicorn_options: Any) -> None:
        import uvicorn

        self.host, self.port = host, port
        outer = self

        class _Uvicorn(uvicorn.Server):
            async def startup(self, sockets: Any = None) -> None:
                await super().startup(sockets)
                if self.started and self.servers and self.servers[0].sockets:
                    outer.port = self.servers[0].sockets[0].getsockname()[1]
                    if on_started is not None:
                        on_started(outer)

        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            log_config=None,  # our logging (the CLI's format), not uvicorn's own
            access_log=False,
            lifespan="on",
            timeout_keep_alive=30,
            server_header=False,
            **uvicorn_options,
        )
        self._server = _Uvicorn(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def run(self) -> None:
        """Serve until Ctrl-C / SIGTERM (uvicorn installs those handlers on the main thread)."""
        try:
            self._server.run()
        except SystemExit:  # uvicorn exits when it cannot bind (its log line above says why)
            raise UserError(
                f"{self.host}:{self.port}: cannot listen there (see the log line above); check --host and --port"
            ) from None

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

"""The review page's HTTP plumbing: where it listens, its token check, and the uvicorn server it runs on.

Small and self-contained on purpose (the live console and the API have their own). Listens on 127.0.0.1
unless told a host; beyond localhost the mutating routes need the token from the environment variable named by
``--token-env``, compared in constant time, never logged.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import socket
from dataclasses import dataclass

from ground.errors import UserError

log = logging.getLogger(__name__)

WEB_EXTRA = "needs the web extra: pip install 'inspector[web]'"
DEFAULT_PORT = 8765
DEFAULT_TOKEN_ENV = "INSPECTOR_REVIEW_TOKEN"


def require_web(what: str = "inspector review --web") -> None:
    """One line, not a traceback, when FastAPI or uvicorn is missing."""
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise UserError(f"{what} {WEB_EXTRA}") from None


def parse_listen(text: str) -> tuple[str, int]:
    """``PORT``, ``HOST:PORT`` or ``[v6]:PORT`` -> (host, port); host defaults to 127.0.0.1."""
    text = text.strip()
    host, port = "127.0.0.1", text
    if text.startswith("["):
        host, _, port = text[1:].partition("]")
        port = port.lstrip(":")
    elif ":" in text:
        host, _, port = text.rpartition(":")
    try:
        n = int(port)
        if not 1 <= n <= 65535:
            raise ValueError
    except ValueError:
        raise UserError(f"--web {text!r}: expected PORT or HOST:PORT, e.g. 8765 or 0.0.0.0:8765") from None
    return host or "127.0.0.1", n


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class Guard:
    """Who may mutate: anyone on a loopback listener; with the token beyond it."""

    token: str | None  # None: no token needed (loopback)

    @classmethod
    def for_host(cls, host: str, token_env: str) -> Guard:
        token = os.environ.get(token_env) or None
        if is_loopback(host):
            return cls(None)
        if not token:
            raise UserError(
                f"--web {host}: listening beyond localhost needs a token for marking; set the environment "
                f"variable {token_env} (or name another with --token-env)"
            )
        return cls(token)

    def allows(self, given: str | None) -> bool:
        if self.token is None:
            return True
        return given is not None and hmac.compare_digest(given.encode(), self.token.encode())


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def serve(app: object, host: str, port: int) -> None:
    """Run uvicorn in the foreground until Ctrl-C. A port that cannot be bound is one line, not a traceback."""
    import uvicorn

    check_bind(host, port)  # again: the caller may have printed its address meanwhile
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    try:
        server.run()
    except SystemExit:  # uvicorn logs the bind error and exits
        server.started = False
    if not server.started:
        raise UserError(
            f"--web {host}:{port}: cannot listen there (in use, or not this machine's address); give another"
        )


def check_bind(host: str, port: int) -> None:
    """Bind once, as uvicorn will (SO_REUSEADDR), so a busy port or a foreign address is our one line rather
    than uvicorn's log record and exit."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family, _, _, _, addr = infos[0]
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(addr)
    except OSError as exc:
        raise UserError(
            f"--web {host}:{port}: cannot listen there ({exc.strerror or exc}); give a free port, or an address "
            "of this machine"
        ) from None

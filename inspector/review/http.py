"""The review page's HTTP plumbing: where it listens, its token check, and the uvicorn server it runs on.

Small and self-contained on purpose (the live console and the API have their own). Listens on 127.0.0.1
unless told a host; beyond localhost the mutating routes need the token from the environment variable named by
``--token-env``, compared in constant time, never logged.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass

from ground.errors import UserError
from inspector.webaccess import is_loopback, require_web_extra, token_matches

log = logging.getLogger(__name__)

DEFAULT_PORT = 8765
DEFAULT_TOKEN_ENV = "INSPECTOR_REVIEW_TOKEN"


def require_web(what: str = "inspector review --web") -> None:
    """One line, not a traceback, when FastAPI or uvicorn is missing."""
    require_web_extra(what)


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
        return token_matches(self.token, given)


def free_port() -> int:
    """A free localhost port (tests and benches start the page on one)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _BindError(logging.Filter):
    """Keeps uvicorn's "error while attempting to bind" record (it logs the OSError, then exits) so that the
    user gets our one line instead."""

    def __init__(self) -> None:
        super().__init__()
        self.exc: OSError | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, OSError):
            self.exc = record.msg
            return False
        return True


def serve(app: object, host: str, port: int, on_started: Callable[[], None] | None = None) -> None:
    """Run uvicorn in the foreground until Ctrl-C; ``on_started`` once it listens. An address it cannot listen
    on (a busy port, another machine's address) is one line, not uvicorn's log record and a traceback."""
    import uvicorn

    class _Server(uvicorn.Server):
        async def startup(self, sockets: list | None = None) -> None:
            await super().startup(sockets=sockets)
            if self.started and on_started is not None:
                on_started()

    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="off")
    server = _Server(config)
    caught = _BindError()
    logging.getLogger("uvicorn.error").addFilter(caught)
    try:
        server.run()
    except SystemExit:  # uvicorn exits when it cannot bind
        pass
    finally:
        logging.getLogger("uvicorn.error").removeFilter(caught)
    if not server.started:
        exc = caught.exc
        why = "" if exc is None else os.strerror(exc.errno) if exc.errno and exc.errno > 0 else str(exc)
        raise UserError(
            f"--web {host}:{port}: cannot listen there ({why or 'the server did not start'}); give a free port, "
            "or an address of this machine"
        )

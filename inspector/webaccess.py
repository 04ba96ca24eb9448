"""What the three web front ends share (the live console `run --web`, `review --web`, `serve`): whether the
extra they need is installed, whether an address is this machine only, and the token check.

Kept free of FastAPI and uvicorn imports, so a command can say in one line that the ``web`` extra is missing.
"""

from __future__ import annotations

import hmac
import importlib.util
import ipaddress

from ground.errors import UserError

#: the packages each front end needs; python-multipart (module ``multipart``) only for the API's uploads
WEB_PACKAGES = ("fastapi", "uvicorn")


def require_web_extra(what: str, extra_modules: tuple[str, ...] = ()) -> None:
    """One line naming ``what`` ("inspector serve", ...) when a package of the ``web`` extra is missing."""
    for name in (*WEB_PACKAGES, *extra_modules):
        if importlib.util.find_spec(name) is None:
            raise UserError(f"{what} needs the web extra: pip install 'inspector[web]'")


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and 'localhost': only this machine reaches such a listener, so it needs no token."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def token_matches(expected: str, given: str | None) -> bool:
    """The token a request carries against the configured one, in constant time (no timing oracle)."""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def bearer(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, else None."""
    scheme, _, given = (authorization or "").partition(" ")
    return given.strip() if scheme.lower() == "bearer" else None

"""The live console's HTTP side: FastAPI routes over a :class:`~inspector.web.console.WebConsole`, served by
uvicorn on its own thread, and the token check for the one mutating route.

Routes (all JSON errors are one line, ``{"error": "..."}``, with a 4xx status):

- ``GET /`` the page; ``GET /static/<name>`` its script and style (a fixed list, no file paths);
- ``GET /stream.mjpg`` the overlay as MJPEG (``multipart/x-mixed-replace``), at most ``web.stream_fps``;
- ``GET /api/state`` counts, yield, fps, latency, the health snapshot; ``GET /api/defects`` recent rejects;
- ``GET /api/defects/{id}/crop.jpg|thumb.jpg|map.jpg`` by part id (an integer), never by path;
- ``GET /api/scores`` the histogram of recent OK and defect scores with the threshold;
- ``POST /api/threshold`` ``{"threshold": 0.7, "who": "...", "reason": "..."}`` (token when required);
  ``GET /api/threshold/history`` the audit rows.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import socket
import sqlite3
import threading
from importlib import resources
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from ground.errors import UserError
from inspector.web.audit import AuditLog
from inspector.web.console import ThresholdChange, WebConsole
from inspector.webaccess import bearer, is_loopback, token_matches

log = logging.getLogger(__name__)

STATIC = {"index.html": "text/html; charset=utf-8", "console.js": "text/javascript", "console.css": "text/css"}
BOUNDARY = "frame"
MAX_BODY = 4096  # the one POST body is a few fields


def read_token(host: str, token_env: str | None) -> str | None:
    """The token threshold changes must carry (None: none needed); a UserError when beyond localhost without one."""
    token = os.environ.get(token_env, "") if token_env else ""
    if token_env and not token:
        raise UserError(
            f"web.token_env names {token_env}, which is unset or empty; export {token_env}=<a long random token> "
            "or drop web.token_env"
        )
    if not token and not is_loopback(host):
        raise UserError(
            f"web.host {host} serves the network: set web.token_env to the name of an environment variable holding "
            "a token (threshold changes must carry it), or listen on 127.0.0.1"
        )
    return token or None


class ThresholdBody(BaseModel):
    """What a threshold change carries; who and why go into the audit row."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    threshold: float = Field(ge=0.0, le=1.0, allow_inf_nan=False, strict=True)  # no "0.5", no true
    who: str = Field(min_length=1, max_length=80)
    reason: str = Field(min_length=1, max_length=500)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _one_line(exc: ValidationError | RequestValidationError) -> str:
    errs = exc.errors()
    if not errs:
        return "invalid request"
    e = errs[0]
    where = ".".join(str(x) for x in e.get("loc", ()) if x != "body") or "body"
    return f"{where}: {e.get('msg', 'invalid')}"


def build_app(console: WebConsole, audit: AuditLog | None, token: str | None) -> FastAPI:
    """The console's routes over ``console``; ``audit`` None: threshold changes are refused (no defect log)."""
    app = FastAPI(title="inspector live console", docs_url=None, redoc_url=None, openapi_url=None)
    pages = {name: resources.files("inspector.web").joinpath("static", name).read_bytes() for name in STATIC}

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if exc.status_code != 404 or exc.detail != "Not Found" else f"not found: {request.url.path}"
        return _error(exc.status_code, str(detail))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(400, _one_line(exc))

    @app.get("/")
    def index() -> Response:
        return Response(pages["index.html"], media_type=STATIC["index.html"], headers={"Cache-Control": "no-store"})

    @app.get("/static/{name}")
    def static(name: str) -> Response:
        if name not in pages:
            raise HTTPException(404, f"not found: /static/{name}")
        return Response(pages[name], media_type=STATIC[name])

    @app.get("/api/state")
    def state() -> dict[str, Any]:
        return console.state()

    @app.get("/api/defects")
    def defects() -> dict[str, Any]:
        return {"defects": console.defects()}

    @app.get("/api/defects/{part_id}/{kind}.jpg")
    def defect_image(part_id: int, kind: str) -> Response:
        if kind not in ("crop", "thumb", "map"):
            raise HTTPException(404, f"no image '{kind}': use crop.jpg, thumb.jpg or map.jpg")
        data = console.defect_image(part_id, kind)
        if data is None:
            raise HTTPException(404, f"part {part_id}: no {kind} image among the recent defects")
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    @app.get("/api/scores")
    def scores() -> dict[str, Any]:
        return console.histogram()

    @app.get("/api/threshold/history")
    def history() -> Any:
        try:
            changes = audit.history() if audit is not None else []
        except sqlite3.Error as exc:
            return _error(503, f"threshold history unreadable in {audit.db.name}: {exc}; retry")
        return {"changes": changes, "audited": audit is not None}

    @app.post("/api/threshold")
    async def set_threshold(request: Request) -> JSONResponse:
        if token is not None and not _token_ok(request, token):
            return _error(401, "threshold change refused: missing or wrong token (header Authorization: Bearer ...)")
        if "application/json" not in request.headers.get("content-type", ""):
            return _error(415, "threshold change: send a JSON body (Content-Type: application/json)")
        raw = await request.body()
        if len(raw) > MAX_BODY:
            return _error(413, f"threshold change: body over {MAX_BODY} bytes")
        try:
            body = ThresholdBody.model_validate(json.loads(raw))
        except json.JSONDecodeError as exc:
            return _error(400, f"threshold change: body is not JSON ({exc.msg} at char {exc.pos})")
        except ValidationError as exc:
            return _error(400, f"threshold change: {_one_line(exc)}")
        if audit is None:
            return _error(409, "threshold change refused: changes are audited in the defect log; run with --log-db")
        if console.ended.is_set():
            return _error(409, "threshold change refused: the line is not inspecting")
        address = request.client.host if request.client else "?"
        return await asyncio.to_thread(_change, console, audit, body, address)

    return app


def _change(console: WebConsole, audit: AuditLog, body: ThresholdBody, address: str) -> JSONResponse:
    """Apply between two frames, then write the audit row (one change at a time)."""
    with console.change_lock:
        change = ThresholdChange(float(body.threshold), body.who.strip(), address, body.reason.strip())
        if not console.request_threshold(change):
            return _error(503, "threshold change not applied: the line reached no frame boundary within 5 s; retry")
        line = console.line
        run = getattr(line.dlog, "run", None)
        try:
            row_id = audit.append(
                time=change.applied_at,
                who=change.who,
                address=change.address,
                old=change.old,
                new=change.new,
                reason=change.reason,
                run=run,
                model=line.model_label,
            )
        except Exception as exc:  # noqa: BLE001 - the change stands; say plainly the audit failed
            log.error("threshold change applied but its audit row was not written to %s: %s", audit.db, exc)
            return _error(500, f"threshold applied ({change.old:g} -> {change.new:g}) but the audit row failed: {exc}")
    return JSONResponse({"id": row_id, "old": change.old, "new": change.new, "time": change.applied_at})


def _token_ok(request: Request, token: str) -> bool:
    given = bearer(request.headers.get("authorization")) or request.headers.get("x-inspector-token")
    return token_matches(token, given)


async def mjpeg(console: WebConsole, request: Request) -> Any:
    """The stream's body: each new JPEG as one part, waiting off the event loop; ends on disconnect or close."""
    seq = 0
    console.clients += 1
    try:
        while not console.closing.is_set():
            if await request.is_disconnected():
                break
            seq, jpeg = await asyncio.to_thread(console.latest_jpeg, seq, 1.0)
            if jpeg is None:
                continue
            head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n".encode()
            yield head + jpeg + b"\r\n"
    finally:
        console.clients -= 1


def add_stream(app: FastAPI, console: WebConsole) -> None:
    @app.get("/stream.mjpg")
    async def stream(request: Request) -> StreamingResponse:
        return StreamingResponse(
            mjpeg(console, request),
            media_type=f"multipart/x-mixed-replace; boundary={BOUNDARY}",
            headers={"Cache-Control": "no-store"},
        )


class HttpServer:
    """uvicorn on its own thread, on a socket uvicorn binds here, at construction (a port in use fails the start
    at once, as one line, instead of in the server's thread)."""

    def __init__(self, app: FastAPI, host: str, port: int) -> None:
        import uvicorn

        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=1,
            access_log=False,
        )
        self.sock = _bind(config)
        self.host, self.port = host, self.sock.getsockname()[1]
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._serve, name="web-console", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            self.server.run(sockets=[self.sock])
        except Exception:  # noqa: BLE001 - the console failing must not take the line with it
            log.exception("web console server stopped")

    @property
    def started(self) -> bool:
        return bool(self.server.started)

    def close(self, timeout_s: float = 3.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout_s)
        if self.thread.is_alive():
            self.server.force_exit = True
            self.thread.join(1.0)
            if self.thread.is_alive():
                log.warning("web console: server thread still alive after %.1f s", timeout_s + 1.0)
        self.sock.close()


class _Last(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.message = ""

    def emit(self, record: logging.LogRecord) -> None:
        self.message = record.getMessage()


def _bind(config: Any) -> socket.socket:
    """uvicorn's own bind (it logs the reason and exits on failure): its reason becomes one UserError line."""
    uv_log = logging.getLogger("uvicorn.error")
    last, propagate = _Last(), uv_log.propagate
    uv_log.addHandler(last)
    uv_log.propagate = False
    try:
        return config.bind_socket()
    except SystemExit:
        reason = re.sub(r"^\[Errno -?\d+\] ", "", last.message) or "bind failed"
        raise UserError(
            f"web console: cannot listen on {config.host}:{config.port} ({reason}); choose another --web port"
        ) from None
    finally:
        uv_log.removeHandler(last)
        uv_log.propagate = propagate

"""The review page's FastAPI app: the gallery's JSON, images by row id, and the marks.

Images are asked for by the row id of the part (``/img/123/crop``), never by a path: the file is the one the
row names, and only when it lies inside the log's images folder. Only ``POST /api/marks`` changes anything,
in one short write transaction; beyond localhost it needs the token.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from ground.errors import UserError
from inspector.defectlog.query import parse_when
from inspector.review.http import Guard
from inspector.review.store import MARKS, Filters, ReviewStore, default_who, parse_cursor

log = logging.getLogger(__name__)
STATIC = Path(__file__).with_name("static")


class MarkRequest(BaseModel):
    ids: list[int] = Field(min_length=1, max_length=10_000, description="row ids (parts.id) to mark")
    mark: str = Field(description="confirm_defect, false_reject, missed, confirm_ok, defect, ok or clear")
    who: str | None = Field(default=None, max_length=80, description="the reviewer's name")


def _when(text: str | None, what: str) -> float | None:
    if text is None or not text.strip():
        return None
    try:
        return float(text)
    except ValueError:
        return parse_when(text, what)


def create_app(store: ReviewStore, guard: Guard, *, local_hosts: set[str] | None = None) -> FastAPI:
    """The app for one store. ``local_hosts``: on a loopback listener, the Host headers accepted (a page on
    another site that a browser is tricked into sending here by DNS rebinding carries a different one)."""
    app = FastAPI(title="inspector review", docs_url=None, redoc_url=None, openapi_url=None)
    who_default = default_who()
    reasons: dict[str, Any] = {"at": -1e9, "list": []}  # the filter's suggestions, refreshed once a minute

    def common_reasons() -> list[str]:
        now = time.monotonic()
        if now - reasons["at"] > 60:
            reasons["list"], reasons["at"] = store.reasons(), now
        return reasons["list"]

    @app.exception_handler(StarletteHTTPException)  # FastAPI's and the router's own 404/405
    async def _http_error(_req: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(_req: Request, exc: RequestValidationError) -> JSONResponse:
        e = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "bad request"}
        where = ".".join(str(x) for x in e.get("loc", ()) if x not in ("query", "body", "path"))
        return JSONResponse({"error": f"{where or 'request'}: {e.get('msg')}"}, status_code=422)

    @app.middleware("http")
    async def _host_check(request: Request, call_next: Any) -> Any:
        if local_hosts is not None and request.headers.get("host", "") not in local_hosts:
            return JSONResponse({"error": "unexpected Host header; open the page by 127.0.0.1 or localhost"}, 421)
        return await call_next(request)

    def filters(
        since: str | None = Query(None, max_length=40),
        until: str | None = Query(None, max_length=40),
        verdict: str | None = Query(None, max_length=20),
        score_min: float | None = Query(None),
        score_max: float | None = Query(None),
        reason: str | None = Query(None, max_length=200),
        reviewed: str | None = Query(None, max_length=8),
        mark: str | None = Query(None, max_length=20),
    ) -> Filters:
        """The gallery's filters from the query string (a dependency of the routes that filter)."""
        try:
            rev = {"": None, None: None, "yes": True, "true": True, "no": False, "false": False}[reviewed]
        except KeyError:
            raise HTTPException(400, f"reviewed {reviewed!r}: use yes or no") from None
        try:
            f = Filters(
                _when(since, "since"),
                _when(until, "until"),
                verdict or None,
                score_min,
                score_max,
                reason or None,
                rev,
                mark or None,
            )
            f.where()  # validates verdict and mark
        except (UserError, ValueError) as exc:
            raise HTTPException(400, str(exc)) from None
        return f

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/api/info")
    def info() -> dict[str, Any]:
        return {
            "db": store.db.name,
            "writable": store.writable,
            "read_only_reason": store.read_only_reason,
            "token_required": guard.token is not None,
            "who": who_default,
            "marks": list(MARKS),
            "reasons": common_reasons(),
        }

    @app.get("/api/parts")
    def parts(
        f: Filters = Depends(filters),  # noqa: B008 - FastAPI's dependency idiom (the closure's filters)
        after: str | None = Query(None, max_length=60),
        limit: int = Query(60, ge=1, le=500),
    ) -> dict[str, Any]:
        try:
            cursor = parse_cursor(after)
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        return store.page(f, limit=limit, after=cursor)

    @app.get("/api/count")
    def count(f: Filters = Depends(filters)) -> dict[str, Any]:  # noqa: B008 - as above
        return {"count": store.count(f)}

    @app.get("/api/summary")
    def summary() -> dict[str, Any]:
        return store.summary()

    @app.get("/api/parts/{row_id}")
    def part(row_id: int) -> dict[str, Any]:
        d = store.part(row_id)
        if d is None:
            raise HTTPException(404, f"no part with id {row_id} in this log")
        return d

    @app.get("/img/{row_id}/{kind}")
    def image(row_id: int, kind: str) -> FileResponse:
        if kind not in ("crop", "map"):
            raise HTTPException(404, "images are /img/<id>/crop or /img/<id>/map")
        p = store.image_path(row_id, kind)
        if p is None:
            raise HTTPException(404, f"part {row_id} has no {kind} on disk")
        media = "image/png" if p.suffix.lower() == ".png" else "image/jpeg"
        return FileResponse(p, media_type=media, headers={"Cache-Control": "private, max-age=3600"})

    @app.post("/api/marks")
    def marks(body: MarkRequest, request: Request) -> dict[str, Any]:
        given = request.headers.get("x-review-token")
        auth = request.headers.get("authorization", "")
        if given is None and auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        if not guard.allows(given):
            raise HTTPException(401, "marking needs the review token (X-Review-Token header)")
        source = request.client.host if request.client else None
        try:
            return store.mark(body.ids, body.mark, who=body.who, source=source)
        except PermissionError as exc:
            raise HTTPException(409, str(exc)) from None
        except KeyError as exc:
            raise HTTPException(404, str(exc.args[0])) from None
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app

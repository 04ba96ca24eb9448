"""The classify API as a FastAPI app: routes, the upload guard, one-line JSON errors.

Stateless by design: a request carries its image(s) and gets its verdict(s); nothing is stored between
requests, so any number of copies behind an HTTP load balancer answer alike (docs/api.md). No route takes a
file path or writes anything; the optional token (``--token-env``) guards the ``/v1`` routes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from inspector.records import Verdict
from inspector.serve.batcher import Batcher, BatchStats, QueueFull, Stopped
from inspector.serve.classifier import Classifier, Crop, Judged
from inspector.serve.http import token_ok
from inspector.serve.metrics import ServeMetrics
from inspector.serve.uploads import (
    DEFAULT_MAX_PIXELS,
    MULTIPART,
    ApiError,
    check_crop,
    check_type,
    decode_upload,
    media_type,
    parse_crop,
)

log = logging.getLogger(__name__)

RETRY_AFTER_S = 1
# One small image is decoded on the event loop (a 300x300 JPEG: ~0.7 ms with the views; measured 0.25 ms less
# CPU per request than the thread-pool hop); larger or several images go to the thread pool so the loop stays free.
INLINE_DECODE_BYTES = 256 * 1024


@dataclass
class ServeSettings:
    """The knobs of one server (the CLI's options)."""

    max_batch: int = 16
    max_wait_ms: float = 2.0
    max_queue: int = 64
    max_upload_bytes: int = 20 * 1024 * 1024
    max_images: int = 32  # images in one multipart request
    max_pixels: int = DEFAULT_MAX_PIXELS
    token: str | None = None  # None: no token asked (bound to localhost, or the operator's choice)
    token_env: str | None = None  # its variable's name, for the error message only

    def __post_init__(self) -> None:
        for name in ("max_batch", "max_queue", "max_upload_bytes", "max_images", "max_pixels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {self.max_wait_ms}")
        if self.max_images > self.max_queue:
            raise ValueError(f"max_images ({self.max_images}) must not exceed max_queue ({self.max_queue})")


@dataclass(slots=True)
class _Upload:
    data: bytes
    content_type: str | None
    where: str
    name: str | None
    crop: Crop | None


@dataclass(slots=True)
class _Done:
    judged: Judged
    batch_size: int
    t_batch_start: float
    t_done: float


class ClassifyService:
    """The classifier behind a batcher, and the metrics that watch both. Owned by one app."""

    def __init__(self, classifier: Classifier, settings: ServeSettings) -> None:
        self.classifier, self.settings = classifier, settings
        self.metrics = ServeMetrics(classifier.model_id, getattr(classifier.engine, "backend", "?"), self._depth)
        self.batcher = Batcher(
            self._run_batch,
            max_batch=settings.max_batch,
            max_wait_ms=settings.max_wait_ms,
            max_queue=settings.max_queue,
            on_batch=self._on_batch,
        )

    def _depth(self) -> float:
        return float(self.batcher.depth)

    def _run_batch(self, payloads: list[list[Any]]) -> list[_Done]:
        t0 = time.monotonic()
        try:
            judged = self.classifier.judge(payloads)
        except Exception as exc:  # noqa: BLE001 - as on the line: an engine failure is "no verdict", not a pass
            log.error("inference failed for %d image(s): %s", len(payloads), exc)
            judged = [Judged(Verdict.NO_VERDICT, None, None, f"inference failed: {exc}") for _ in payloads]
        t1 = time.monotonic()
        return [_Done(j, len(payloads), t0, t1) for j in judged]

    def _on_batch(self, b: BatchStats) -> None:
        self.metrics.batch_size.observe(b.size)
        self.metrics.inference.observe(b.seconds)

    def prepare(self, uploads: list[_Upload]) -> list[list[Any]]:
        """Decode, check and cut each upload into its model views (a worker thread of the event loop)."""
        out = []
        for u in uploads:
            img = decode_upload(u.data, media_type(u.content_type), u.where, self.settings.max_pixels)
            check_crop(u.crop, img, u.where)
            out.append(self.classifier.views(img, u.crop))
        return out

    def close(self) -> None:
        self.batcher.close()


def create_app(classifier: Classifier, settings: ServeSettings | None = None) -> FastAPI:
    """The app for one classifier; its batcher stops when the app shuts down."""
    settings = settings or ServeSettings()
    service = ClassifyService(classifier, settings)
    cls = classifier

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        try:
            yield
        finally:
            service.close()

    app = FastAPI(
        title="inspector classify API",
        version="1",
        description=(
            "Classify part images good or defective with the line's model and preprocessing. "
            f'Model {cls.model_id}. Errors are one line: {{"error": "..."}}.'
        ),
        lifespan=lifespan,
    )
    app.state.service = service
    app.add_middleware(_Guard, service=service)
    _errors(app, service)

    def authorise(request: Request) -> None:
        if not token_ok(settings.token, request.headers.get("authorization")):
            raise ApiError(
                401,
                f"missing or wrong token: send 'Authorization: Bearer <token>' (the value of {settings.token_env} "
                "on the server)",
                "token",
            )

    @app.post("/v1/classify", summary="Classify one image or several", openapi_extra=_CLASSIFY_DOC)
    async def classify(request: Request, crop: str | None = None) -> JSONResponse:
        t0 = time.monotonic()
        authorise(request)
        uploads = await _uploads(request, crop, settings)
        service.batcher.expect()  # a batch forming now may wait for this request's images
        try:
            if len(uploads) == 1 and len(uploads[0].data) <= INLINE_DECODE_BYTES:
                views = service.prepare(uploads)  # about 0.7 ms: cheaper here than a hop to the thread pool
            else:
                views = await run_in_threadpool(service.prepare, uploads)
        except BaseException:
            service.batcher.withdraw()
            raise
        try:
            futures = service.batcher.submit(views, expected=True)
        except QueueFull as exc:
            raise ApiError(
                503, f"busy: {exc}; retry after {RETRY_AFTER_S} s", "queue_full", {"Retry-After": str(RETRY_AFTER_S)}
            ) from None
        except Stopped:
            raise ApiError(503, "shutting down; retry on another server", "queue_full") from None
        done: list[_Done] = await asyncio.gather(*(asyncio.wrap_future(f) for f in futures))
        results = []
        for i, (u, d) in enumerate(zip(uploads, done, strict=True)):
            j = d.judged
            service.metrics.verdict(j.verdict)
            results.append(
                {
                    "index": i,
                    "name": u.name,
                    "verdict": j.verdict.value,
                    "score": j.score,
                    "class": j.cls,
                    "threshold": cls.threshold,
                    "model": cls.model_id,
                    "crop": u.crop.as_list() if u.crop else None,
                    "reason": j.reason,
                    "latency_ms": round((d.t_done - t0) * 1e3, 3),
                    "batch_size": d.batch_size,
                }
            )
        service.metrics.latency.observe(time.monotonic() - t0)
        return JSONResponse({"model": cls.model_id, "results": results})

    @app.get("/v1/model", summary="The model: classes, threshold, preprocessing, held-out metrics")
    async def model(request: Request) -> dict:
        authorise(request)
        return {
            **cls.describe(),
            "batching": {
                "max_batch": settings.max_batch,
                "max_wait_ms": settings.max_wait_ms,
                "max_queue": settings.max_queue,
            },
            "limits": {
                "max_upload_bytes": settings.max_upload_bytes,
                "max_images": settings.max_images,
                "max_pixels": settings.max_pixels,
            },
        }

    @app.get("/healthz", summary="Liveness: 200 while the engine worker runs")
    async def healthz() -> JSONResponse:
        b = service.batcher
        body = {
            "status": "ok" if b.alive else "down",
            "model": cls.model_id,
            "queue": b.depth,
            "max_queue": b.max_queue,
        }
        return JSONResponse(body, status_code=200 if b.alive else 503)

    @app.get("/metrics", summary="Prometheus metrics", include_in_schema=True)
    async def metrics() -> Response:
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


async def _uploads(request: Request, query_crop: str | None, settings: ServeSettings) -> list[_Upload]:
    """The request's image(s): a JPEG/PNG body, or the file parts of a multipart form."""
    ctype = request.headers.get("content-type")
    if media_type(ctype) != MULTIPART:
        check_type(ctype)
        body = await request.body()
        return [_Upload(body, ctype, "request body", None, parse_crop(query_crop))]
    try:
        form = await request.form(max_files=settings.max_images, max_fields=settings.max_images + 8)
    except HTTPException as exc:  # Starlette's multipart errors (too many files, malformed body)
        raise ApiError(
            400, f"multipart body: {str(exc.detail).rstrip('.')}; send each image as a file part", "bad_form"
        ) from None
    try:
        files: list[tuple[str, UploadFile]] = []
        crops: list[str] = []
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                files.append((key, value))
            elif key == "crop":
                crops.append(value)
            else:
                raise ApiError(
                    400,
                    f"multipart field {key!r} is not known; send images as file parts and 'crop' fields",
                    "bad_form",
                )
        if not files:
            raise ApiError(
                400,
                "multipart body has no image file part; send each image as a file (curl -F image=@part.jpg)",
                "empty",
            )
        if crops and query_crop:
            raise ApiError(422, "crop given both in the query and in the form; give it once", "bad_crop")
        if crops and len(crops) not in (1, len(files)):
            raise ApiError(
                422, f"{len(crops)} crop fields for {len(files)} images; give one for all or one per image", "bad_crop"
            )
        boxes = [parse_crop(c, f"crop field {i}") for i, c in enumerate(crops)] or [parse_crop(query_crop)]
        out = []
        for i, (_key, f) in enumerate(files):
            name = (f.filename or "")[:200] or None
            where = f"part {i}" + (f" ({name})" if name else "")
            check_type(f.content_type, where)
            out.append(_Upload(await f.read(), f.content_type, where, name, boxes[i] if len(boxes) > 1 else boxes[0]))
        return out
    finally:
        await form.close()


def _one_line(text: Any) -> str:
    return " ".join(str(text).split())


def _errors(app: FastAPI, service: ClassifyService) -> None:
    """Every error is ``{"error": "<one line>"}`` with its status; rejects are counted by reason."""

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError) -> JSONResponse:
        service.metrics.rejects.labels(exc.reason).inc()
        return JSONResponse({"error": exc.message}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 404:
            msg = f"no route {request.method} {request.url.path}; see /docs for the API"
        elif exc.status_code == 405:
            msg = f"{request.method} is not allowed on {request.url.path}; see /docs for the API"
        else:
            msg = _one_line(exc.detail)
        return JSONResponse({"error": msg}, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return JSONResponse({"error": _one_line(f"{where}: {first.get('msg', 'invalid request')}")}, status_code=422)

    @app.exception_handler(Exception)
    async def internal_error(_request: Request, exc: Exception) -> JSONResponse:
        log.error("classify API: internal error: %s", exc, exc_info=True)
        return JSONResponse({"error": f"internal error ({type(exc).__name__}); see the server log"}, status_code=500)


class _Guard:
    """Pure ASGI middleware: the upload size limit (Content-Length and bytes actually read) and request counts."""

    def __init__(self, app: Any, service: ClassifyService) -> None:
        self.app, self.service = app, service
        self.limit = service.settings.max_upload_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = [500]

        async def send_counted(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            declared = self._content_length(scope)
            if declared is not None and declared > self.limit:
                raise self._too_large(f"{declared:,} bytes (Content-Length)")
        except ApiError as exc:
            self.service.metrics.rejects.labels(exc.reason).inc()
            await JSONResponse({"error": exc.message}, status_code=exc.status)(scope, receive, send_counted)
            self.service.metrics.request(scope["path"], status[0])
            return
        received = 0

        async def receive_counted() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise self._too_large(f"more than {self.limit:,} bytes sent")
            return message

        try:
            await self.app(scope, receive_counted, send_counted)
        finally:
            self.service.metrics.request(scope["path"], status[0])

    def _too_large(self, what: str) -> ApiError:
        mb = self.limit / (1024 * 1024)
        return ApiError(413, f"upload too large: {what}, the limit is {mb:g} MB (--max-upload-mb)", "too_large")

    @staticmethod
    def _content_length(scope: dict) -> int | None:
        for k, v in scope.get("headers", ()):
            if k == b"content-length":
                try:
                    n = int(v)
                except ValueError:
                    n = -1
                if n < 0:
                    raise ApiError(
                        400, f"Content-Length {v.decode(errors='replace')!r} is not a byte count", "bad_form"
                    )
                return n
        return None


_CLASSIFY_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "One image as the body (image/jpeg or image/png), or several as file parts of a "
        "multipart/form-data body (any field name; optional 'crop' fields: one for all images or one per image).",
        "content": {
            "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
            "image/png": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "image": {"type": "array", "items": {"type": "string", "format": "binary"}},
                        "crop": {"type": "string", "description": "x,y,w,h in pixels"},
                    },
                }
            },
        },
    },
}

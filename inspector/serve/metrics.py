"""Prometheus figures of the classify API, in a registry of its own (``GET /metrics``).

Requests by route and status, classify latency, the batcher's batch sizes and queue depth, images by verdict,
and refusals by reason (queue full, too large, not an image, ...), so a plant sees overload before clients do.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from inspector.metrics import INFERENCE_BUCKETS_S
from inspector.records import Verdict

PREFIX = "inspector_api"
REQUEST_BUCKETS_S = (0.002, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
ROUTES = ("/v1/classify", "/v1/model", "/healthz", "/metrics", "/docs", "/openapi.json")
REASONS = ("queue_full", "too_large", "empty", "bad_type", "not_image", "bad_image", "bad_crop", "bad_form", "token")


class ServeMetrics:
    """Counters the API bumps; ``queue_depth`` is read from the batcher when scraped."""

    def __init__(self, model_id: str, backend: str, queue_depth: Callable[[], float]) -> None:
        self.registry = r = CollectorRegistry()
        Info(f"{PREFIX}_model", "the model this API classifies with", registry=r).info(
            {"model": model_id, "backend": backend}
        )
        self.requests = Counter(
            f"{PREFIX}_requests", "HTTP requests by route and status", ["route", "status"], registry=r
        )
        self.latency = Histogram(
            f"{PREFIX}_request_seconds",
            "POST /v1/classify: request received to response ready (successful requests)",
            buckets=REQUEST_BUCKETS_S,
            registry=r,
        )
        self.batch_size = Histogram(
            f"{PREFIX}_batch_size", "images per engine call (dynamic batching)", buckets=BATCH_BUCKETS, registry=r
        )
        self.inference = Histogram(
            f"{PREFIX}_batch_seconds",
            "one batch: normalise, engine call, decisions",
            buckets=INFERENCE_BUCKETS_S,
            registry=r,
        )
        self.images = Counter(f"{PREFIX}_images", "images classified, by verdict", ["verdict"], registry=r)
        self._by_verdict = {v: self.images.labels(v.value) for v in Verdict}
        self.rejects = Counter(f"{PREFIX}_rejects", "requests refused, by reason", ["reason"], registry=r)
        for reason in REASONS:
            self.rejects.labels(reason)  # every reason shows from the start, at 0
        depth = Gauge(f"{PREFIX}_queue_depth", "images waiting for the engine", registry=r)
        depth.set_function(queue_depth)

    def request(self, path: str, status: int) -> None:
        self.requests.labels(path if path in ROUTES else "other", str(status)).inc()

    def verdict(self, v: Verdict) -> None:
        self._by_verdict[v].inc()

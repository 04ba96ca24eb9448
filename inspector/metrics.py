"""Prometheus metrics for one `inspector run`: an HTTP endpoint that plant monitoring scrapes.

Two kinds of figure, so the inspection thread pays next to nothing:

- per part, :class:`RunMetrics` is a sink (``on_part``) that bumps prometheus_client's own counters and
  histograms: parts by verdict, capture-to-verdict latency, inference time per batch;
- everything the run already counts (frames, dropped frames, stalls, the gate's and the defect log's state) is
  read only when scraped, by a collector on the HTTP thread; the frame rates are worked out there from those
  counts, so no per-frame work is added at all.

Each run has its own :class:`~prometheus_client.CollectorRegistry` (nothing global), served by
:class:`MetricsServer` on localhost unless the configuration names another address.
"""

from __future__ import annotations

import errno
import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector

from ground.errors import UserError
from inspector.health import GateHealth, HealthProbe, LogHealth, ModelHealth
from inspector.records import Part, Verdict

log = logging.getLogger(__name__)

PREFIX = "inspector"
RATE_WINDOW_S = 5.0  # frame rates are averaged over at least this long (or since the previous scrape)
LATENCY_BUCKETS_S = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0)
INFERENCE_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


class RunMetrics:
    """The run's registry, and a PartSink that counts each part as the gate and the log see it.

    ``attach`` hands over what the collector reads at scrape time (all optional): the loop's ``LoopStats``, the
    capture thread, the gate actuator, the defect log.
    """

    def __init__(self, model: str = "", backend: str = "") -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.parts = Counter(
            f"{PREFIX}_parts", "parts judged, by verdict (no_verdict parts are rejected)", ["verdict"], registry=r
        )
        self._by_verdict = {v: self.parts.labels(v.value) for v in Verdict}  # bound once: no label lookup per part
        self.latency = Histogram(
            f"{PREFIX}_latency_seconds",
            "capture to verdict, per part with a verdict",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.inference = Histogram(
            f"{PREFIX}_inference_seconds",
            "engine inference time per batch of crops",
            buckets=INFERENCE_BUCKETS_S,
            registry=r,
        )
        self._last_batch: int | None = None
        self.probe = HealthProbe(model=ModelHealth(model, backend))  # what a scrape reads
        self.collector = _RunCollector(self, model, backend)
        r.register(self.collector)
        try:
            ProcessCollector(namespace="", registry=r)  # process_cpu_seconds_total, memory, start time
        except Exception:  # noqa: BLE001 - no /proc (not Linux): the run's own figures still work
            log.debug("process metrics unavailable", exc_info=True)

    def attach(self, *, stats: Any = None, capture: Any = None, gate: Any = None, dlog: Any = None) -> None:
        """The line's stages the scrape reads (through one :class:`~inspector.health.Health` snapshot)."""
        self.probe.attach(stats=stats, capture=capture, gate=gate, dlog=dlog)

    # -- PartSink (the inspection thread) ------------------------------------------------------------------
    def on_part(self, part: Part) -> None:
        self._by_verdict[part.verdict].inc()
        if part.verdict is not Verdict.NO_VERDICT and part.t_verdict_ns is not None:
            self.latency.observe((part.t_verdict_ns - part.t_capture_ns) / 1e9)
        # the parts of one batch share their inference start: the batch's time is observed once
        t_batch = part.t_infer_start_ns
        if t_batch is not None and t_batch != self._last_batch:
            self._last_batch = t_batch
            engine_ms = part.engine_ms
            if engine_ms is not None:
                self.inference.observe(engine_ms / 1e3)

    def close(self) -> None:
        pass


class _RunCollector:
    """Reads the run's own counters when scraped (HTTP thread); derives frame rates from them."""

    def __init__(self, m: RunMetrics, model: str, backend: str) -> None:
        self.m = m
        self.info = {"model": model, "backend": backend}
        self._lock = threading.Lock()  # two scrapes at once share the rate window; never taken by inspection
        self._samples: deque[tuple[float, int, int, int]] = deque()  # (t, captured, dropped, inspected)

    def collect(self) -> Iterator[Metric]:
        m, p = self.m, PREFIX
        info = InfoMetricFamily(f"{p}_model", "the model this run inspects with")
        info.add_metric([], self.info)
        yield info
        h = m.probe.snapshot()
        cam, insp = h.camera, h.inspection
        captured, dropped, inspected = cam.frames, cam.dropped, insp.frames
        for name, doc, value in (
            ("frames_captured", "frames read from the source", captured),
            ("frames_inspected", "frames the inspection loop processed", inspected),
            ("skipped_frames", "live frames replaced by a newer one before inspection took them (dropped)", dropped),
            ("corrupt_frames", "undecodable frames skipped", cam.corrupt),
            (
                "source_stalls",
                "times the source gave no frame for source.stall_timeout_s (parts in flight rejected)",
                cam.stalls,
            ),
            ("source_reopens", "successful reopens of the source after a stall", cam.reopens),
            (
                "inspection_errors",
                "frames that could not be inspected (parts in flight rejected)",
                insp.errors,
            ),
        ):
            yield _counter(f"{p}_{name}", doc, value)
        cam_fps, skip_fps, insp_fps = self._rates(captured, dropped, inspected, insp.t_start)
        yield _gauge(f"{p}_camera_fps", f"frames/s read from the source (over >= {RATE_WINDOW_S:g} s)", cam_fps)
        yield _gauge(f"{p}_skipped_fps", "frames/s dropped because inspection was busy", skip_fps)
        yield _gauge(f"{p}_inspection_fps", "frames/s inspected", insp_fps)
        yield _gauge(f"{p}_source_live", "1: a live source (camera, stream); 0: a recording", int(cam.live))
        yield _gauge(
            f"{p}_source_stalled",
            "1 while the source is stalled (parts pass the camera unseen)",
            int(cam.stalled),
        )
        if h.gate is not None:
            yield from _gate_metrics(h.gate)
        if h.log is not None:
            yield from _log_metrics(h.log)

    def _rates(self, captured: int, dropped: int, inspected: int, t_start: float | None) -> tuple[float, ...]:
        now = time.monotonic()
        with self._lock:
            s = self._samples
            if not s:
                s.append((t_start if t_start is not None else now, 0, 0, 0))
            s.append((now, captured, dropped, inspected))
            while len(s) > 2 and s[1][0] <= now - RATE_WINDOW_S:  # keep one sample at least a window old
                s.popleft()
            t0, c0, d0, i0 = s[0]
        dt = now - t0
        if dt <= 0:
            return 0.0, 0.0, 0.0
        return (captured - c0) / dt, (dropped - d0) / dt, (inspected - i0) / dt


def _gate_metrics(g: GateHealth) -> Iterator[Metric]:
    p = f"{PREFIX}_gate"
    for name, doc, value in (
        ("connected", "1 while the port is open and the controller talks", g.connected),
        ("link_down", "1 while the link is known to be down (the controller is in its fail-safe)", g.link_down),
        ("running", "1 while the controller reports RUN (not fail-safe)", g.running),
        (
            "hold",
            "1 while the host holds the controller in fail-safe (HOLD: camera stall, unacknowledged reject)",
            g.held,
        ),
    ):
        yield _gauge(f"{p}_{name}", doc, int(value))
    reasons = GaugeMetricFamily(f"{p}_hold_reason", "1 for each reason the gate is held", labels=["reason"])
    for reason in g.hold_reasons:
        reasons.add_metric([reason], 1)
    yield reasons
    yield _gauge(
        f"{p}_rejects_unacked", "rejects sent that the controller has not acknowledged (yet)", g.rejects_unacked
    )
    yield _gauge(f"{p}_parts_in_flight", "parts between the camera and the gate", g.in_flight)
    yield _gauge(f"{p}_queue", "verdicts waiting for the gate's serial thread", g.queue)
    events = CounterMetricFamily(
        f"{p}_events", "the gate actuator's counters (docs/gate-protocol.md)", labels=["event"]
    )
    for k, v in sorted(g.events.items()):
        events.add_metric([k], v)
    yield events


def _log_metrics(d: LogHealth) -> Iterator[Metric]:
    p = f"{PREFIX}_log"
    st = d.counters
    yield _gauge(f"{p}_queue", "rows and gate outcomes waiting for the defect-log writer", d.queue)
    yield _gauge(f"{p}_images_waiting", "crops queued for writing (log.queue_size bounds it)", d.images_waiting)
    yield _counter(f"{p}_rows", "parts written to the defect log", st.get("rows", 0))
    yield _counter(
        f"{p}_rows_dropped",
        "rows dropped because log.max_pending_rows were already waiting for the database",
        st.get("rows_dropped", 0),
    )
    yield _counter(f"{p}_images", "crops written", st.get("images", 0))
    dropped = CounterMetricFamily(f"{p}_images_dropped", "crops not written, by why", labels=["why"])
    for why, key in (("queue", "images_dropped_queue"), ("disk", "images_dropped_disk"), ("error", "image_errors")):
        dropped.add_metric([why], st.get(key, 0))
    yield dropped


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=float(value or 0))


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=float(value or 0))


class MetricsServer:
    """``GET /metrics`` on ``host:port`` in a daemon thread. A port in use or a bad address is a UserError."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        self.host, self.port = host, port
        try:
            self._httpd, self._thread = start_http_server(port, addr=host, registry=registry)
        except socket.gaierror:
            raise UserError(
                f"metrics.host '{host}': not an address of this machine; use 127.0.0.1 (the default) "
                "or the address of the network monitoring reaches it on"
            ) from None
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise UserError(
                    f"metrics port {host}:{port} is already in use (another inspector or exporter?); "
                    "pick another with --metrics-port or metrics.port"
                ) from None
            if exc.errno == errno.EACCES:
                raise UserError(
                    f"metrics port {host}:{port}: permission denied (ports below 1024 need root); "
                    "pick a port above 1024"
                ) from None
            raise UserError(
                f"metrics {host}:{port}: cannot listen there ({exc.strerror}); check metrics.host and metrics.port"
            ) from None
        self.address = self._httpd.server_address[:2]
        if host not in LOCAL_HOSTS:
            log.warning(
                "metrics served on %s:%d to the network (no authentication); 127.0.0.1 keeps them local", host, port
            )
        log.info("metrics on http://%s:%d/metrics", host, port)

    def close(self) -> None:
        """Stop serving; idempotent."""
        httpd, self._httpd = getattr(self, "_httpd", None), None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        self._thread.join(timeout=2.0)
        if self._thread.is_alive():
            log.error("metrics server thread still alive after close()")

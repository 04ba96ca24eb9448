"""`inspector run`: inspect a line - find each part, classify it once, signal the gate, log every verdict.

Start order: engine -> sinks (gate, events, defect log, summary) -> capture -> view; shutdown is the reverse,
on the source's end, q in the window, Ctrl-C or SIGTERM. With no source (or ``source.uri: demo``) it runs the
demo line, like `inspector demo`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from engines.errors import UserError

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[2]  # the repository / install root (models/, demo/)


def add_arguments(p: argparse.ArgumentParser, *, sources: bool = True) -> None:
    p.add_argument("--config", metavar="FILE", help="YAML configuration (default: built-in defaults)")
    if sources:
        src = p.add_mutually_exclusive_group()
        src.add_argument("--camera", metavar="N", type=int, help="camera index (USB/V4L2)")
        src.add_argument("--source", metavar="URI", help="video, image folder, rtsp://..., 'gst:PIPELINE' or 'demo'")
    p.add_argument("--model", metavar="PATH", help="model: .onnx (default models/casting_seedcnn.onnx), .engine, .pt")
    p.add_argument("--events", metavar="FILE.jsonl", help="write one JSON line per part here")
    p.add_argument("--truth", metavar="truth.csv", help="score the run against a simulator truth file")
    p.add_argument("--no-display", action="store_true", help="no window: a dashboard in the terminal instead")
    p.add_argument("--realtime", action="store_true", help="files: pace frames at the recorded rate")
    p.add_argument("--serial", metavar="PORT", help="reject gate serial port (or loop://, 'sim')")
    p.add_argument("--log-db", metavar="PATH", help="SQLite defect log")
    p.add_argument("--max-frames", metavar="N", type=int, help="stop after N frames")
    p.add_argument("--snapshot-dir", metavar="DIR", default=".", help="where the window's s key saves PNGs")
    p.add_argument(
        "--metrics-port",
        metavar="PORT",
        type=_port,
        help="serve Prometheus metrics on this port (on 127.0.0.1 unless metrics.host says otherwise)",
    )
    p.add_argument(
        "--mqtt",
        metavar="HOST[:PORT]",
        type=_broker,
        help="publish verdicts and line state to this MQTT broker (port 1883 unless given; see mqtt: in the config)",
    )


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="inspect a line: find each part, classify it once, signal the gate",
        description="Inspect a line. CLI flags override the configuration file.",
    )
    add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = build_config(args)
    truth = getattr(args, "truth", None)
    if truth and not Path(truth).is_file():
        raise UserError(f"--truth {truth}: file not found; give the truth CSV written by `inspector simulate`")
    if cfg.source.uri == "demo":
        from inspector.commands.demo import prepare_demo

        cfg, demo_truth = prepare_demo(cfg)
        truth = truth or demo_truth
        args.watch_pace = True
    return inspect(cfg, args, truth=truth)


def build_config(args: argparse.Namespace):
    from inspector.config import InspectorConfig, load_config

    cfg = load_config(args.config) if getattr(args, "config", None) else InspectorConfig()
    if getattr(args, "camera", None) is not None:
        cfg.source.uri = str(args.camera)
    if getattr(args, "source", None):
        cfg.source.uri = args.source
    if getattr(args, "realtime", False):
        cfg.source.realtime = True
    if getattr(args, "model", None):
        cfg.model.path = args.model
    if getattr(args, "serial", None):
        cfg.gate.port = args.serial
    if getattr(args, "log_db", None):
        cfg.log.db = args.log_db
    if getattr(args, "no_display", False):
        cfg.display.enabled = "off"
    if getattr(args, "metrics_port", None) is not None:
        cfg.metrics.enabled, cfg.metrics.port = True, args.metrics_port
    if getattr(args, "mqtt", None) is not None:
        cfg.mqtt.enabled = True
        cfg.mqtt.host, port = args.mqtt
        if port is not None:
            cfg.mqtt.port = port
    return cfg


def _broker(text: str) -> tuple[str, int | None]:
    host, sep, port = text.rpartition(":") if text.count(":") == 1 else (text, "", "")
    if not host or (sep and not (port.isdigit() and 1 <= int(port) <= 65535)):
        raise argparse.ArgumentTypeError(f"expected HOST or HOST:PORT (port 1-65535), got '{text}'")
    return host, int(port) if sep else None


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"expected a TCP port 1-65535, got '{text}'")
    return int(text)


def resolve_model(path: str) -> Path:
    """As given (or relative to cwd); a relative path not found there is tried against the install root."""
    p = Path(path).expanduser()
    if p.exists() or p.is_absolute():
        return p
    alt = ROOT / p
    return alt if alt.exists() else p


def inspect(cfg, args: argparse.Namespace, truth: str | None = None) -> int:
    from rich.console import Console

    from engines.base import load_engine
    from inspector.events import EventsFile, Summary, summary_table
    from inspector.pipeline import LoopStats, Pipeline, run_loop

    console = Console()
    model_path = resolve_model(cfg.model.path)
    opts = {"threads": cfg.model.threads} if cfg.model.threads else {}
    engine = load_engine(model_path, **opts)
    if weak := engine.meta.weak_warning():  # inspector train's guard tripped and --allow-weak kept the model
        log.warning("%s: %s", model_path, weak)
    closers: list[tuple[str, Any]] = [("engine", engine)]
    stop = threading.Event()
    old_term = _on_sigterm(stop)
    interrupted = False
    stats = LoopStats()
    capture = None
    try:
        _check_input_size(cfg, engine)
        metrics = _metrics(cfg, model_path, engine, closers)  # binds its port now: one in use stops here
        mqtt = _mqtt(cfg, model_path)
        if mqtt is not None:
            closers.append(("mqtt", mqtt))  # closed after every sink: the last stats and 'offline' go out last
        summary = Summary()
        events_path = getattr(args, "events", None)
        # Without --truth nothing is kept in memory: a line may run for weeks.
        events = EventsFile(events_path) if events_path else (_MemoryEvents() if truth else None)
        dlog = _defect_log(cfg, model_path)
        gate = _gate(cfg, dlog)  # the gate reports each part's outcome (sent/acked/fired) into the log
        sinks = [s for s in (gate, events, dlog, summary, metrics, mqtt) if s is not None]
        # the gate closes first: it drains parts still on the belt and reports them to the log before it closes
        closers += [(f"sink {type(s).__name__}", s) for s in sinks if s is not gate and s is not mqtt]
        closers += [("gate", gate)] if gate is not None else []
        undistorter = _undistorter(cfg)
        pipeline = Pipeline(cfg, engine, sinks, undistorter=undistorter)
        window = _want_window(cfg)
        if window and getattr(args, "watch_pace", False):
            cfg.source.realtime = True  # the demo: at the line's own pace, so there is something to watch
        capture = _open_capture(cfg)
        from inspector.config import stall_gate_problem

        if getattr(capture, "live", False) and (problem := stall_gate_problem(cfg)):
            log.warning(problem)
            console.print(f"[bold red]warning:[/] {problem}")
        closers.append(("capture", capture))
        view = _make_view(cfg, args, window)
        closers.append(("view", view))
        stats.summary = summary
        if metrics is not None:
            metrics.attach(stats=stats, capture=capture, gate=gate, dlog=dlog)
        if mqtt is not None:
            mqtt.attach(stats=stats, gate=gate)
        log.info("inspecting %s with %s (%s)", _redact(cfg.source.uri), model_path, engine.backend)
        try:
            run_loop(pipeline, capture, view=view, stats=stats, stop=stop, max_frames=getattr(args, "max_frames", None))
        except KeyboardInterrupt:
            interrupted = True
            stats.t_end = time.monotonic()
            pipeline.flush("run interrupted before the part was classified")
    finally:
        _shutdown(closers)
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)

    cstats = getattr(capture, "stats", None)
    corrupt = int(getattr(cstats, "corrupt", 0) or 0)
    if stats.frames == 0 and not interrupted and not stop.is_set():
        extra = f" ({corrupt} corrupt frame(s) skipped)" if corrupt else ""
        raise UserError(f"source {_redact(cfg.source.uri)}: no frame could be read{extra}; check the file or camera")
    result = summary.to_dict(
        stats.frames, stats.elapsed, stats.dropped,
        stalls=stats.stalls, corrupt_frames=corrupt, inspection_errors=stats.errors,
        model=f"{model_path.name} ({engine.backend})",
    )
    console.print(summary_table(result))
    if mqtt is not None:
        console.print(mqtt.report())
    capture_error = getattr(capture, "error", None)
    # results go beside the events file, else beside the truth file they were scored against (never the cwd)
    out_dir = Path(events_path).parent if events_path else Path(truth).parent if truth else Path.cwd()
    if events_path:
        (out_dir / (Path(events_path).stem + ".summary.json")).write_text(json.dumps(result, indent=2) + "\n")
    if truth:
        from inspector.events import read_events

        _scorecard(console, read_events(events_path) if events_path else events.events, truth, out_dir)
    if capture_error:
        print(f"error: {capture_error}", file=sys.stderr)
        return 1
    return 130 if interrupted else 0


# --- pieces -------------------------------------------------------------------------------------------------
class _MemoryEvents:
    """No --events file: keep the events for the scorecard only."""

    def __init__(self) -> None:
        from inspector.events import part_event

        self._conv = part_event
        self.events: list[dict] = []

    def on_part(self, part) -> None:
        self.events.append(self._conv(part))

    def close(self) -> None:
        pass


def _check_input_size(cfg, engine) -> None:
    want = cfg.model.input_size
    if want is not None and want != engine.meta.input_size:
        raise UserError(
            f"model.input_size is {want} but {engine.path.name} takes {engine.meta.input_size}; "
            "fix the configuration or use the intended model"
        )


def _metrics(cfg, model_path: Path, engine, closers: list[tuple[str, Any]]):
    """metrics.enabled: the run's Prometheus registry (a sink) and its HTTP server (closed last)."""
    if not cfg.metrics.enabled:
        return None
    try:
        from inspector.metrics import MetricsServer, RunMetrics
    except ImportError:
        raise UserError(
            "metrics are enabled but prometheus_client is not installed; pip install prometheus_client "
            "or drop --metrics-port / metrics.enabled"
        ) from None
    metrics = RunMetrics(model=model_path.name, backend=engine.backend)
    closers.append(("metrics server", MetricsServer(metrics.registry, cfg.metrics.host, cfg.metrics.port)))
    return metrics


def _mqtt(cfg, model_path: Path):
    """mqtt.enabled: a sink that publishes each verdict and the line's state (it connects in the background)."""
    if not cfg.mqtt.enabled:
        return None
    try:
        from inspector.mqtt import MqttPublisher
    except ImportError:
        raise UserError(
            "mqtt is enabled but paho-mqtt is not installed; pip install 'paho-mqtt>=2' (or the mqtt extra) "
            "or drop --mqtt / mqtt.enabled"
        ) from None
    return MqttPublisher(cfg.mqtt, model=model_path.name)


def _gate(cfg, dlog=None):
    if not cfg.gate.port:
        return None
    try:
        from inspector.gate import open_actuator
    except ImportError:
        raise UserError("gate.port is set but the reject gate module is not available in this install") from None
    return open_actuator(cfg.gate, on_result=getattr(dlog, "gate_result", None))


def _defect_log(cfg, model_path: Path):
    if not cfg.log.db:
        return None
    try:
        from inspector.defectlog import open_log
    except ImportError:
        raise UserError("log.db is set but the defect log module is not available in this install") from None
    model_hash = hashlib.sha256(model_path.read_bytes()).hexdigest()[:16]
    config_hash = hashlib.sha256(cfg.model_dump_json().encode()).hexdigest()[:16]
    return open_log(cfg.log, model_hash, config_hash)


def _undistorter(cfg):
    if not cfg.calibration.camera:
        return None
    try:
        from calibration.camera import load_undistorter
    except ImportError:
        raise UserError(
            f"calibration.camera {cfg.calibration.camera}: the calibration package is not available; "
            "remove calibration.camera or install it"
        ) from None

    class _Lazy:
        """The undistortion maps need the frame size: built on the first frame."""

        def __init__(self) -> None:
            self.u = None

        def apply(self, frame):
            if self.u is None:
                self.u = load_undistorter(cfg.calibration.camera, (frame.shape[1], frame.shape[0]))
            return self.u.apply(frame)

    return _Lazy()


def _open_capture(cfg):
    from inspector.capture import CaptureThread

    return CaptureThread(cfg.source, cfg.source.uri).start()


def _want_window(cfg) -> bool:
    """display.enabled: off -> no; on -> yes or a clear error; auto -> when a display works."""
    from inspector.overlay import display_available

    mode = cfg.display.enabled
    if mode == "off":
        return False
    if display_available():
        return True
    if mode == "on":
        raise UserError("display.enabled is 'on' but no display is available (DISPLAY unset?); use --no-display")
    return False


def _make_view(cfg, args, window: bool):
    from rich.console import Console

    from inspector.dashboard import Dashboard, LogView
    from inspector.overlay import Window

    if window:
        return Window(scale=cfg.display.scale, snapshot_dir=getattr(args, "snapshot_dir", "."))
    if Console(stderr=True).is_terminal:
        return Dashboard(source=_redact(cfg.source.uri))
    return LogView()


def _redact(uri: str) -> str:
    """Stream credentials never reach a log line, an error or the screen."""
    from inspector.capture.sources import redact

    return redact(uri)


def _on_sigterm(stop: threading.Event):
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, lambda *_: stop.set())


def _shutdown(closers: list[tuple[str, Any]]) -> None:
    """Reverse start order; a failing close is logged, the others still run."""
    for name, obj in reversed(closers):
        try:
            obj.close()
        except Exception as exc:  # noqa: BLE001 - keep closing the rest
            log.error("closing %s failed: %s", name, exc)


def _scorecard(console, events: list[dict], truth: str, out_dir: Path) -> None:
    try:
        from inspector.scorecard import score
    except ImportError:
        raise UserError("--truth needs inspector.scorecard, which is not available in this install") from None
    card = score(events, truth)
    console.print(card.table())
    path = out_dir / "scorecard.json"
    path.write_text(json.dumps(card.to_dict(), indent=2) + "\n")
    console.print(f"scorecard saved to {path}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use: inspector run")

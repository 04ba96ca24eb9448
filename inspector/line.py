"""The composition root: one inspection line built from a validated configuration.

Every command that inspects (`run`, `demo`, `calibrate sharpness`) builds a :class:`Line` instead of wiring the
stages itself. Start order: engine -> metrics server -> MQTT -> sinks (gate, events, defect log, summary,
metrics) -> capture -> view; :meth:`Line.stop` closes them in the reverse order (the gate before the log, so it
can report the parts still on the belt) and names any thread the line started that is still alive.

Under systemd (``$NOTIFY_SOCKET``) the line also speaks the notify protocol (:mod:`inspector.service.notify`:
READY once warmed up with a first frame, a watchdog fed by the capture's and the inspection loop's hooks,
STOPPING first in :meth:`Line.stop`) and, given ``LineRequest.reload``, reloads on SIGHUP between two frames
(:mod:`inspector.service.reload`). Without them nothing changes.

    with Line(cfg, LineRequest(events="run.jsonl")) as line:
        line.run()
    print(line.result())
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engines.base import Engine, load_engine
from ground.errors import UserError
from inspector.capture import CaptureThread
from inspector.capture.base import redact
from inspector.config import InspectorConfig, stall_gate_problem
from inspector.events import EventsFile, MemoryEvents, Summary
from inspector.health import Health, HealthProbe, ModelHealth
from inspector.outputs import (
    check_defect_log,
    check_folder,
    check_not_foreign,
    images_dir,
    is_events_file,
    prepare_folder,
)
from inspector.pipeline import LoopStats, NullView, Pipeline, View, run_loop
from inspector.records import PartSink
from inspector.resources import resolve_model
from inspector.service.notify import ServiceNotifier

log = logging.getLogger(__name__)

#: how long :meth:`Line.stop` waits, in all, for the line's threads to end after every stage is closed
THREAD_GRACE_S = 2.0


@dataclass(frozen=True)
class LineRequest:
    """What one run asks of the line beyond its configuration: the command line's per-run flags."""

    events: str | None = None  # write one JSON line per part here
    keep_events: bool = False  # keep the events in memory (a scorecard without an events file)
    snapshot_dir: str = "."  # where the window's s key saves PNGs
    watch_pace: bool = False  # the demo: at the line's own pace when a window shows it
    view: bool = True  # a window, dashboard or log view; False: none (a tool collecting parts)
    with_outputs: bool = True  # gate, defect log, metrics, MQTT as configured; False: none of them
    # SIGHUP reloads the configuration with this (the file and the run's flags again); None: SIGHUP is not caught
    reload: Callable[[], InspectorConfig] | None = None
    config_file: str | None = None  # what the reload's log lines name


class Line:
    """One line: its stages, started in order, stopped in reverse; a context manager.

    Attributes are the live stages (None where the configuration has none), for the views and for tests.
    """

    def __init__(
        self,
        cfg: InspectorConfig,
        request: LineRequest | None = None,
        *,
        sinks: Sequence[PartSink] = (),
        keep_crops: bool = True,
    ) -> None:
        self.cfg = cfg.model_copy(deep=True)  # the line may pace a demo; the caller's config stays as given
        self.request = request or LineRequest()
        self.extra_sinks = list(sinks)
        self.keep_crops = keep_crops
        self.model_path: Path = resolve_model(self.cfg.model.path)
        self.stats = LoopStats()
        self.stop_event = threading.Event()
        self.summary = Summary()
        self.engine: Engine | None = None
        self.metrics: Any = None
        self.mqtt: Any = None
        self.events: EventsFile | MemoryEvents | None = None
        self.dlog: Any = None
        self.gate: Any = None
        self.pipeline: Pipeline | None = None
        self.capture: CaptureThread | None = None
        self.view: View | None = None
        self.interrupted = False
        self.warnings: list[str] = []  # things the operator should read (the command prints them)
        self.alive_after_stop: list[str] = []  # threads the line started that did not end on stop()
        self.probe = HealthProbe()  # camera, inspection, parts, gate, log, model: one snapshot for any view
        self._stages: list[tuple[str, Any]] = []
        self._threads_before: set[threading.Thread] = set()
        self._old_term: Any = None
        self._old_hup: Any = None
        self._started = False
        self._ready_sent = False
        self.notifier: ServiceNotifier | None = None  # systemd's READY/WATCHDOG/STATUS/STOPPING (no-op without it)
        self.reloader: Any = None  # inspector.service.reload.Reloader, when request.reload is given
        self.console: Any = None  # inspector.web.Console: the live console (web.enabled / --web)

    # --- lifecycle ----------------------------------------------------------------------------------------
    def __enter__(self) -> Line:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Line:
        """Open every stage in order; if one fails, those already open are closed again and the error raised."""
        if self._started:
            return self
        self._started = True
        self._threads_before = set(threading.enumerate())
        self._old_term = _on_sigterm(self.stop_event)
        # reads $NOTIFY_SOCKET / $WATCHDOG_USEC; its ping thread waits for ready() (sent by run())
        self.notifier = ServiceNotifier(status_source=self.status_line).start()
        try:
            self._start()
            if self.request.reload is not None:
                self._start_reload()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        cfg, req = self.cfg, self.request
        opts = {"threads": cfg.model.threads} if cfg.model.threads else {}
        self.engine = self._add("engine", load_engine(self.model_path, **opts))
        self.probe.model = ModelHealth(self.model_path.name, self.engine.backend)
        check_input_size(cfg, self.engine)
        if weak := self.engine.meta.weak_warning():  # inspector train's guard tripped; --allow-weak kept it
            log.warning("%s: %s", self.model_path, weak)
        outputs = req.with_outputs
        if outputs and cfg.metrics.enabled:
            from inspector.metrics import MetricsServer, RunMetrics

            self.metrics = RunMetrics(model=self.model_path.name, backend=self.engine.backend)
            # binds its port now: one in use stops the line here, before anything else is open
            self._add("metrics server", MetricsServer(self.metrics.registry, cfg.metrics.host, cfg.metrics.port))
        if outputs and cfg.mqtt.enabled:
            try:
                from inspector.mqtt import MqttPublisher
            except ModuleNotFoundError as exc:  # paho-mqtt is an optional extra
                if not (exc.name or "").startswith("paho"):
                    raise
                raise UserError(
                    "mqtt is enabled but paho-mqtt is not installed; pip install 'paho-mqtt>=2' (or the mqtt extra) "
                    "or drop --mqtt / mqtt.enabled"
                ) from None
            # closed after every sink: the last stats and 'offline' go out last
            self.mqtt = self._add("mqtt", MqttPublisher(cfg.mqtt, model=self.model_path.name))
        if outputs and cfg.web.enabled:
            from inspector.web import open_console

            # binds its port now; closed after the sinks, so it can linger showing the final counts
            self.console = self._add("web console", open_console(cfg.web, self))
        if req.events:
            self._check_output("--events", req.events, is_events_file, "an events file (JSON lines)")
            self.events = EventsFile(req.events)
        elif req.keep_events:
            self.events = MemoryEvents()  # without a truth file nothing is kept in memory: a line runs for weeks
        if outputs and cfg.log.db:
            from inspector.defectlog import config_hash, file_hash, open_log

            # with a gate, a part's row waits for the gate's outcome (reported pulse + link timeout after its gate
            # time) and is written once with it
            g = cfg.gate
            wait = (g.travel_ms + g.pulse_ms + g.link_timeout_ms) / 1e3 + 1.0 if outputs and g.port else None
            self._check_output("log.db", cfg.log.db)
            check_folder("log.images_dir", images_dir(cfg.log), is_dir=True)
            self.dlog = open_log(cfg.log, file_hash(self.model_path), config_hash(cfg), gate_wait_s=wait)
        if outputs and cfg.gate.port:
            from inspector.gate import open_actuator

            # the gate reports each part's outcome (sent/acked/fired) into the log
            self.gate = open_actuator(cfg.gate, on_result=self.dlog.gate_result if self.dlog is not None else None)
        sinks = [
            s for s in (self.gate, self.events, self.dlog, self.summary, self.metrics, self.mqtt) if s is not None
        ] + self.extra_sinks
        if self.console is not None:
            sinks.append(self.console.sink)
        if self.notifier.enabled:  # under systemd: a camera stall shows in `systemctl status` at once
            from inspector.service.status import StatusOnLineState

            sinks.append(StatusOnLineState(self.notifier, self.status_line))
        # the gate closes first: it drains the parts still on the belt and reports them to the log
        for s in sinks:
            if s is not self.gate and s is not self.mqtt:
                self._add(f"sink {type(s).__name__}", s)
        if self.gate is not None:
            self._add("gate", self.gate)
        self.pipeline = Pipeline(cfg, self.engine, sinks, undistorter=undistorter_for(cfg), keep_crops=self.keep_crops)
        window = want_window(cfg) if req.view else False
        if window and req.watch_pace:
            cfg.source.realtime = True  # the demo: at the line's own pace, so there is something to watch
        self.capture = self._add("capture", open_capture(cfg, on_frame=self.notifier.frame_arrived))
        if outputs and self.capture.live and (problem := stall_gate_problem(cfg)):
            log.warning(problem)
            self.warnings.append(problem)
        view = make_view(cfg, window, req.snapshot_dir, health=self.health) if req.view else NullView()
        self.view = self._add("view", view)
        if self.console is not None:
            self.view = self.console.tee(self.view)  # the stream taps the view; the view stage closes as before
        self.stats.summary = self.summary
        self.probe.attach(stats=self.stats, capture=self.capture, gate=self.gate, dlog=self.dlog)
        if self.metrics is not None:
            self.metrics.attach(stats=self.stats, capture=self.capture, gate=self.gate, dlog=self.dlog)
        if self.mqtt is not None:
            self.mqtt.attach(stats=self.stats, gate=self.gate)
        log.info("inspecting %s with %s (%s)", redact(cfg.source.uri), self.model_path, self.engine.backend)

    def _check_output(self, name: str, path: str, ours: Callable[[Path], bool] | None = None, what: str = "") -> None:
        """Before an output is opened: its folder (created, and said, when missing; refused when not writable) and
        an existing file that is not ours (never overwritten)."""
        if note := prepare_folder(name, path):
            log.info(note)
            self.warnings.append(note)  # the command prints it
        if ours is None:
            check_defect_log(name, path)
        else:
            check_not_foreign(name, path, ours, what)

    @property
    def stages(self) -> list[tuple[str, Any]]:
        """The open stages, (name, object), in start order; :meth:`stop` closes them from the last."""
        return list(self._stages)

    def _add(self, name: str, stage: Any) -> Any:
        self._stages.append((name, stage))
        return stage

    def run(self, max_frames: int | None = None) -> LoopStats:
        """Inspect until the source ends, the view quits, :meth:`request_stop`, SIGTERM, Ctrl-C or ``max_frames``."""
        if self.pipeline is None:
            self.start()
        try:
            self._ready()
            run_loop(
                self.pipeline,
                self.capture,
                view=self.view,
                stats=self.stats,
                stop=self.stop_event,
                max_frames=max_frames,
                progress=self._progressed,
            )
        except KeyboardInterrupt:
            self.interrupted = True
            self.stats.t_end = time.monotonic()
            self.pipeline.flush("run interrupted before the part was classified")
        except Exception:  # the parts in flight are still rejected and logged, whatever stopped the loop
            self.stats.t_end = time.monotonic()
            self.pipeline.flush("run stopped by an error before the part was classified")
            raise
        return self.stats

    def request_stop(self) -> None:
        """Ask :meth:`run` to end after the frame in hand (any thread)."""
        self.stop_event.set()

    def stop(self) -> list[str]:
        """Close the stages in reverse start order (a failing close is logged, the others still run); -> the
        names of threads this line started that are still alive afterwards (also logged)."""
        if self.notifier is not None:
            self.notifier.stopping(f"stopping: {self._stop_reason()}")  # first: a slow shutdown is not a hang
        if self._old_hup is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGHUP, self._old_hup)
            self._old_hup = None
        if self.reloader is not None:
            self.reloader.close()
            self.reloader = None
        stages, self._stages = self._stages, []
        for name, obj in reversed(stages):
            try:
                obj.close()
            except Exception as exc:  # noqa: BLE001 - keep closing the rest
                log.error("closing %s failed: %s", name, exc)
        if self._old_term is not None:
            signal.signal(signal.SIGTERM, self._old_term)
            self._old_term = None
        if self.notifier is not None:
            self.notifier.close()
            self.notifier = None
        self.alive_after_stop = self._threads_left()
        if self.alive_after_stop:
            log.warning("thread(s) still alive after the line stopped: %s", ", ".join(self.alive_after_stop))
        return self.alive_after_stop

    def _threads_left(self) -> list[str]:
        deadline = time.monotonic() + THREAD_GRACE_S
        left = []
        for t in threading.enumerate():
            if t in self._threads_before or t is threading.current_thread():
                continue
            t.join(max(0.0, deadline - time.monotonic()))
            if t.is_alive():
                left.append(t.name)
        return left

    def health(self) -> Health:
        """The line's state now, from any thread (what metrics and MQTT publish)."""
        return self.probe.snapshot()

    # --- the service manager (systemd): readiness, watchdog, reload -------------------------------------------
    def status_line(self) -> str:
        """One line for `systemctl status` (any thread)."""
        from inspector.service.status import status_line

        return status_line(self.health())

    def _ready(self) -> None:
        """Under systemd: READY=1 once the model is warmed up (load_engine did that) and the first frame is in.
        Without a first frame there is no READY: the run ends (the source ended: an error exit) or systemd's
        start timeout restarts it."""
        n = self.notifier
        if n is None or not n.enabled or self._ready_sent:
            return
        cap = self.capture
        while cap.stats.frames == 0 and not cap.ended.is_set():
            if self.stop_event.wait(0.01):
                return
        if cap.stats.frames == 0:
            return
        size = "x".join(map(str, cap.size)) if cap.size else "?"
        n.ready(f"{self.model_label} warmed up; first frame {size} from {redact(self.cfg.source.uri)}")
        self._ready_sent = True

    def _progressed(self) -> None:
        """The inspection thread finished a frame: the watchdog's progress clock; a pending reload goes in here,
        between two frames (one reference read per frame when there is none)."""
        self.notifier.inspection_progressed()
        if self.reloader is not None and self.reloader.pending is not None:
            self._apply_reload()
        if self.console is not None and self.console.pending is not None:
            self.console.apply_pending(self)  # a supervisor's threshold change from the web console

    def _apply_reload(self) -> None:
        s = self.reloader.take()
        if s is None:
            return
        lost = self.pipeline.set_live(s.cfg, s.threshold, s.roi)
        if self.dlog is not None:
            self.dlog.cfg = s.cfg.log  # the writer reads its settings through this reference
        self.cfg = s.cfg
        self.reloader.applied(s, len(lost))

    def _start_reload(self) -> None:
        """SIGHUP (systemctl reload) -> reload; installed before READY=1, since until then a reload would end the
        process. Only on the main thread (Python's rule for signal handlers), and only without a controlling
        terminal: in a terminal SIGHUP means it closed, and the run ends as it always did."""
        from inspector.service.reload import Reloader, controlling_terminal

        if threading.current_thread() is not threading.main_thread():
            log.warning("not on the main thread: SIGHUP will not reload the configuration")
            return
        if controlling_terminal():
            log.info("started from a terminal: SIGHUP (the terminal closing) ends the run; no reload")
            return

        pipeline = self.pipeline
        self.reloader = reloader = Reloader(
            self.request.reload,
            self.cfg,
            label=self.request.config_file or "the configuration",
            model_threshold=float(self.engine.meta.threshold),
            frame_size=lambda: pipeline.frame_size,
            current_roi=lambda: pipeline.roi,
            notifier=self.notifier,
        )
        self._old_hup = signal.signal(signal.SIGHUP, lambda *_: reloader.request())  # only sets an event

    def _stop_reason(self) -> str:
        if self.interrupted:
            return "interrupted"
        if self.stop_event.is_set():
            return "stop requested"
        if self.capture is not None and self.capture.error:
            return self.capture.error
        if self.capture is not None and self.capture.ended.is_set():
            return "source ended"
        return "run ended"

    # --- results ------------------------------------------------------------------------------------------
    @property
    def corrupt_frames(self) -> int:
        return int(self.capture.stats.corrupt) if self.capture is not None else 0

    @property
    def model_label(self) -> str:
        backend = self.engine.backend if self.engine is not None else "?"
        return f"{self.model_path.name} ({backend})"

    def check_frames_read(self) -> None:
        """No frame at all (and no stop asked for): the source is unusable; say so in one line."""
        if self.stats.frames == 0 and not self.interrupted and not self.stop_event.is_set():
            corrupt = self.corrupt_frames
            extra = f" ({corrupt} corrupt frame(s) skipped)" if corrupt else ""
            raise UserError(
                f"source {redact(self.cfg.source.uri)}: no frame could be read{extra}; check the file or camera"
            )

    def result(self) -> dict:
        """The run's summary (counts, rates, latencies), as `inspector run` prints and saves it."""
        s = self.stats
        return self.summary.to_dict(
            s.frames,
            s.elapsed,
            s.dropped,
            stalls=s.stalls,
            corrupt_frames=self.corrupt_frames,
            inspection_errors=s.errors,
            model=self.model_label,
        )


# --- the pieces, public so a tool can build part of a line -----------------------------------------------
def check_input_size(cfg: InspectorConfig, engine: Engine) -> None:
    """model.input_size, when set, must be what the engine takes."""
    want = cfg.model.input_size
    if want is not None and want != engine.meta.input_size:
        raise UserError(
            f"model.input_size is {want} but {engine.path.name} takes {engine.meta.input_size}; "
            "fix the configuration or use the intended model"
        )


class LazyUndistorter:
    """calibration.camera: the undistortion maps need the frame size, so they are built on the first frame."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.u: Any = None

    def apply(self, frame: Any) -> Any:
        if self.u is None:
            from calibration.camera import load_undistorter

            self.u = load_undistorter(self.path, (frame.shape[1], frame.shape[0]))
        return self.u.apply(frame)


def undistorter_for(cfg: InspectorConfig) -> LazyUndistorter | None:
    """The undistortion the configuration asks for (None: calibration.camera unset)."""
    return LazyUndistorter(cfg.calibration.camera) if cfg.calibration.camera else None


def open_capture(cfg: InspectorConfig, on_frame: Callable[[], None] | None = None) -> CaptureThread:
    """The configured source, open and read on its own thread (``on_frame``: called there for every frame)."""
    return CaptureThread(cfg.source, cfg.source.uri, on_frame=on_frame).start()


def want_window(cfg: InspectorConfig) -> bool:
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


def make_view(
    cfg: InspectorConfig, window: bool, snapshot_dir: str = ".", health: Callable[[], Health] | None = None
) -> View:
    """A window when there is a display, a terminal dashboard on a terminal, else log lines; each reads the
    line's state through ``health`` (:meth:`Line.health`)."""
    from rich.console import Console

    from inspector.dashboard import Dashboard, LogView
    from inspector.overlay import Window

    if window:
        return Window(scale=cfg.display.scale, snapshot_dir=snapshot_dir, health=health)
    if Console(stderr=True).is_terminal:
        return Dashboard(source=redact(cfg.source.uri), health=health)
    return LogView(health=health)


def _on_sigterm(stop: threading.Event) -> Any:
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, lambda *_: stop.set())

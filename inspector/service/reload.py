"""Reloading the configuration on SIGHUP (`systemctl reload`), without a restart and without losing a frame.

What can change live: the decision (``model.threshold``, ``model.min_sharpness``), the ROI (``roi.*``, and the
``roi.file`` it names, read again) and the defect log's housekeeping (``log.retention_days``, ``max_size_mb``,
``ok_sample_fraction``, ``min_free_mb``). Everything else (source, model file, gate, log database, metrics, MQTT,
display, detection, tracking) is only read at start: a change there is named in one warning line and not
applied, the running value stays.

The signal handler only sets an event. :class:`Reloader`'s thread then reads and validates the file with the
same loader as start-up (a bad file: one error line, the running settings stay) and, when something live
changed, leaves ONE :class:`Settings` object in :attr:`Reloader.pending`. The inspection thread takes it
between two frames (:meth:`Reloader.take`) and applies it: no frame waits for the file to be read, none is
skipped, and no frame is judged half with the old settings and half with the new.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ground.errors import UserError

if TYPE_CHECKING:
    from inspector.config import InspectorConfig
    from inspector.detect import Roi
    from inspector.service.notify import ServiceNotifier

log = logging.getLogger(__name__)

MODEL_LIVE = ("threshold", "min_sharpness")
LOG_LIVE = ("retention_days", "max_size_mb", "ok_sample_fraction", "min_free_mb")


def controlling_terminal() -> bool:
    """Whether this process has a controlling terminal: there SIGHUP means the terminal went away (the run ends,
    as it always did), not "reload". A service has none (systemd starts it in a session of its own)."""
    try:
        fd = os.open("/dev/tty", os.O_RDONLY | os.O_NOCTTY)
    except OSError:
        return False
    os.close(fd)
    return True


def is_live(key: str) -> bool:
    """Whether a dotted configuration key (``model.threshold``) can change without a restart."""
    section, _, name = key.partition(".")
    return section == "roi" or (section == "model" and name in MODEL_LIVE) or (section == "log" and name in LOG_LIVE)


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """A dumped configuration as ``{"section.field": value}`` (lists stay whole: one value)."""
    if not isinstance(data, dict):
        return {prefix: data}
    out: dict[str, Any] = {}
    for k, v in data.items():
        out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def differences(old: InspectorConfig, new: InspectorConfig) -> tuple[list[tuple[str, Any, Any]], list[str]]:
    """-> (live changes as (key, old, new), keys that changed but need a restart), each in file order."""
    a, b = flatten(old.model_dump()), flatten(new.model_dump())
    live, restart = [], []
    for key in dict.fromkeys([*a, *b]):
        if a.get(key) != b.get(key):
            if is_live(key):
                live.append((key, a.get(key), b.get(key)))
            else:
                restart.append(key)
    return live, restart


def with_live(old: InspectorConfig, new: InspectorConfig) -> InspectorConfig:
    """The running configuration with the live fields taken from ``new`` (the sections that do not change are
    shared with ``old``: nothing mutates a running configuration)."""
    model = old.model.model_copy(update={k: getattr(new.model, k) for k in MODEL_LIVE})
    log_cfg = old.log.model_copy(update={k: getattr(new.log, k) for k in LOG_LIVE})
    return old.model_copy(update={"model": model, "roi": new.roi.model_copy(), "log": log_cfg})


def _fmt(value: Any) -> str:
    return "none" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class Settings:
    """One reload, ready to apply between two frames."""

    cfg: InspectorConfig  # the running configuration with the live fields replaced
    threshold: float  # the decision threshold in force (model.threshold, else the model's own)
    roi: Roi | None  # the new ROI in the running frame size; None: no frame yet (the first builds it)
    changes: tuple[str, ...]  # "model.threshold 0.79 -> 0.7", one per field


class Reloader:
    """SIGHUP -> :meth:`request` (any thread, a signal handler: only sets an event) -> validation on this
    object's thread -> :attr:`pending` -> :meth:`take` and :meth:`applied` on the inspection thread."""

    def __init__(
        self,
        load: Callable[[], InspectorConfig],
        running: InspectorConfig,
        *,
        label: str,
        model_threshold: float,
        frame_size: Callable[[], tuple[int, int] | None],
        current_roi: Callable[[], Roi | None],
        notifier: ServiceNotifier | None = None,
    ) -> None:
        self.load, self.running, self.label = load, running, label
        self.model_threshold = model_threshold
        self.frame_size, self.current_roi = frame_size, current_roi
        self.notifier = notifier
        self.pending: Settings | None = None  # read without a lock on every frame: only a reference
        self.refused = 0
        self.reloads = 0
        self._requested = threading.Event()
        self._closed = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="config-reload", daemon=True)
        self._thread.start()

    def request(self) -> None:
        """Ask for a reload (the SIGHUP handler calls this: it only sets an event)."""
        self._requested.set()

    def _run(self) -> None:
        while True:
            self._requested.wait()
            if self._closed:
                return
            self._requested.clear()
            try:
                self.prepare()
            except Exception:  # noqa: BLE001 - a reload must never stop the line
                log.exception("reload of %s failed; keeping the running settings", self.label)

    def prepare(self) -> Settings | None:
        """Read and check the file; leave the live changes in :attr:`pending` (None: nothing to apply)."""
        if self.notifier is not None:
            self.notifier.reloading()
        try:
            new = self.load()
            roi = self._roi(new)
        except UserError as exc:
            self.refused += 1
            msg = f"reload refused: {exc}; keeping the running settings"
            log.error("%s", msg)
            self._done(msg)
            return None
        live, restart = differences(self.running, new)
        if restart:
            log.warning(
                "reload: %s changed in %s but %s a restart (systemctl restart the unit, or run again); "
                "not applied, the running value stays",
                ", ".join(restart),
                self.label,
                "needs" if len(restart) == 1 else "need",
            )
        changes = [f"{k} {_fmt(a)} -> {_fmt(b)}" for k, a, b in live]
        old_roi = self.current_roi()
        roi_keys = any(k.startswith("roi.") for k, *_ in live)
        if new.roi.file and roi is not None and old_roi is not None and roi != old_roi and not roi_keys:  # edited
            changes.append(f"roi from {new.roi.file}: {_roi_text(old_roi)} -> {_roi_text(roi)}")
        if not changes:
            with self._lock:
                self.pending = None
            tail = f"; needs a restart: {', '.join(restart)}" if restart else ""
            log.warning("reload of %s: no setting that can change live differs%s", self.label, tail)
            self._done(f"reloaded: nothing changed{tail}")
            return None
        cfg = with_live(self.running, new)
        threshold = cfg.model.threshold if cfg.model.threshold is not None else self.model_threshold
        settings = Settings(cfg, float(threshold), roi, tuple(changes))
        with self._lock:
            self.pending = settings  # a newer reload before the next frame replaces an older one
        return settings

    def _roi(self, cfg: InspectorConfig) -> Roi | None:
        """The new ROI in the running frame size (its file read again): a bad one refuses the reload."""
        size = self.frame_size()
        if size is None:
            return None
        from inspector.detect import Roi

        return Roi.from_config(cfg.roi, size)

    def take(self) -> Settings | None:
        """The pending settings, once (the inspection thread, between two frames)."""
        with self._lock:
            s, self.pending = self.pending, None
        return s

    def applied(self, s: Settings, lost: int = 0) -> None:
        """Called by the inspection thread once ``s`` is in force: log it and tell the service manager."""
        self.running = s.cfg
        self.reloads += 1
        extra = f" ({lost} part(s) in flight rejected: the ROI changed)" if lost else ""
        log.warning("reloaded %s: %s%s", self.label, "; ".join(s.changes), extra)
        self._done("reloaded: " + "; ".join(s.changes) + extra)

    def _done(self, status: str) -> None:
        if self.notifier is not None:
            self.notifier.reloaded(status)

    def close(self, timeout_s: float = 2.0) -> None:
        self._closed = True
        self._requested.set()
        self._thread.join(timeout_s)
        if self._thread.is_alive():  # only while reading a file that blocks (a dead network mount)
            log.error("reload thread still alive %.1f s after stop", timeout_s)


def _roi_text(roi: Roi) -> str:
    return f"{roi.x},{roi.y} {roi.w}x{roi.h} {roi.direction} trigger {roi.trigger:g}"

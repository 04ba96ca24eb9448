"""The systemd notify protocol, spoken by ourselves, and a watchdog that only pings while the line is alive.

The protocol is one datagram of ``KEY=VALUE`` lines to the AF_UNIX socket named by ``$NOTIFY_SOCKET`` (a path,
or ``@name`` for Linux's abstract namespace), see sd_notify(3). It is a few lines, so no library: the PyPI
``sdnotify`` package has not been released since 2017 and swallows every error, and ``systemd-python`` needs
libsystemd headers to build. With no ``$NOTIFY_SOCKET`` (a terminal, a test) every call is a no-op.

:class:`ServiceNotifier` is what the line holds. Its hot-path calls, :meth:`~ServiceNotifier.frame_arrived`
and :meth:`~ServiceNotifier.inspection_progressed`, only store a monotonic timestamp. A small thread sends
``WATCHDOG=1`` every half watchdog period, but only while BOTH timestamps are younger than the period: a dead
capture or a hung inference stops the pings and systemd restarts the service (``WatchdogSec=``).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)

MAX_STATUS_CHARS = 200  # systemctl status shows one line; keep the datagram small
SEND_TIMEOUT_S = 1.0  # the longest one notification may wait for room in the service manager's queue


def socket_address(env: Mapping[str, str] | None = None) -> str | None:
    """``$NOTIFY_SOCKET`` as a socket address: ``@name`` -> ``\\0name`` (abstract namespace); None when unset."""
    value = (os.environ if env is None else env).get("NOTIFY_SOCKET", "")
    if not value:
        return None
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    log.warning("NOTIFY_SOCKET=%r is not a socket path or @abstract name (vsock is not supported); ignored", value)
    return None


def watchdog_period_s(env: Mapping[str, str] | None = None, pid: int | None = None) -> float | None:
    """The service manager's watchdog period from ``$WATCHDOG_USEC``, or None when there is none for us.

    ``$WATCHDOG_PID``, when set, names the process the watchdog is meant for (a child inheriting the
    environment must not ping on its parent's behalf).
    """
    env = os.environ if env is None else env
    usec, for_pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
    if not usec:
        return None
    if for_pid and for_pid.strip() != str(os.getpid() if pid is None else pid):
        return None
    try:
        value = int(usec)
    except ValueError:
        log.warning("WATCHDOG_USEC=%r is not a number of microseconds; watchdog off", usec)
        return None
    return value / 1e6 if value > 0 else None


class Notifier:
    """One datagram per message to ``$NOTIFY_SOCKET``. Sending never raises: a failed notification must not
    stop the line (systemd then restarts it for want of pings, which is the right outcome)."""

    def __init__(self, address: str | None = None, *, env: Mapping[str, str] | None = None) -> None:
        self.address = address if address is not None else socket_address(env)
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._warned = False
        if self.address is not None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            # a receiver that stops reading fills its queue (net.unix.max_dgram_qlen) and sendto() would block:
            # never for long, or STOPPING=1 could hold up the shutdown it announces
            self._sock.settimeout(SEND_TIMEOUT_S)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def send(self, *lines: str) -> bool:
        """Send ``KEY=VALUE`` lines as one datagram; True when it was sent."""
        sock = self._sock
        if sock is None:
            return False
        data = "\n".join(lines).encode("utf-8", "replace")
        try:
            with self._lock:
                sock.sendto(data, self.address)
        except OSError as exc:
            if not self._warned:  # once: a missing socket would otherwise log at the ping rate
                log.warning("cannot notify the service manager at %r: %s", self.address.replace("\0", "@"), exc)
                self._warned = True
            return False
        return True

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()


def one_line(text: str) -> str:
    """STATUS= is one line: newlines would start new (unknown) keys in the datagram."""
    text = " ".join(str(text).split())
    return text if len(text) <= MAX_STATUS_CHARS else text[: MAX_STATUS_CHARS - 3] + "..."


class ServiceNotifier:
    """The line's link to systemd: READY, STATUS, STOPPING and a watchdog fed by frames AND inspection progress.

    Use as a context manager (or :meth:`start` / :meth:`close`). The line calls:

    - :meth:`frame_arrived` for every frame the capture delivers (cheap: one timestamp store);
    - :meth:`inspection_progressed` each time the inspection loop completes an iteration (a frame segmented,
      tracked and any due part classified), part or no part, so an empty belt still counts as progress;
    - :meth:`ready` once the model is warmed up and the first frame has arrived;
    - :meth:`status` with a one-line summary whenever it likes (or give ``status_source``, polled by the thread);
    - :meth:`reloading` / :meth:`reloaded` around a SIGHUP reload;
    - :meth:`stopping` when shutdown begins.

    Pings start at :meth:`ready` (systemd arms its watchdog when start-up completes) and stop for good at
    :meth:`stopping`. Both freshness clocks start at :meth:`ready`.
    """

    def __init__(
        self,
        *,
        env: Mapping[str, str] | None = None,
        notifier: Notifier | None = None,
        period_s: float | None = None,
        stale_after_s: float | None = None,
        status_source: Callable[[], str] | None = None,
        status_interval_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._notifier = notifier if notifier is not None else Notifier(env=env)
        self.period_s = period_s if period_s is not None else watchdog_period_s(env)
        self.stale_after_s = stale_after_s if stale_after_s is not None else self.period_s
        self._status_source, self._status_interval_s = status_source, status_interval_s
        self._clock = clock
        self._last_frame = self._last_progress = clock()
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._ping_lock = threading.Lock()  # STOPPING=1 and a ping never cross: no ping after STOPPING=1
        self._thread: threading.Thread | None = None
        self.pings = 0  # WATCHDOG=1 datagrams sent
        self.withheld = 0  # ping ticks skipped because the line was stale
        self._last_stale_reason: str | None = None

    # --- hot path: the line's threads call these for every frame / iteration ----------------------------
    def frame_arrived(self) -> None:
        """A frame came from the capture (called on the capture thread)."""
        self._last_frame = self._clock()

    def inspection_progressed(self) -> None:
        """The inspection loop finished an iteration (called on the inspection thread)."""
        self._last_progress = self._clock()

    # --- state ----------------------------------------------------------------------------------------
    @property
    def enabled(self) -> bool:
        """True under a service manager ($NOTIFY_SOCKET set)."""
        return self._notifier.enabled

    @property
    def watchdog_enabled(self) -> bool:
        return self.enabled and self.period_s is not None

    def stale_reason(self, now: float | None = None) -> str | None:
        """Why the watchdog is withheld right now (None: frames and inspection are both fresh)."""
        now = self._clock() if now is None else now
        limit = self.stale_after_s
        if limit is None:
            return None
        frame_age, progress_age = now - self._last_frame, now - self._last_progress
        if frame_age >= limit:
            return f"no frame for {frame_age:.1f} s"
        if progress_age >= limit:
            return f"inspection made no progress for {progress_age:.1f} s"
        return None

    # --- messages ---------------------------------------------------------------------------------------
    def ready(self, status: str | None = None) -> None:
        """Start-up done (model warmed up, first frame in): READY=1; the watchdog pings from now on."""
        now = self._clock()
        self._last_frame = self._last_progress = now
        lines = ["READY=1", f"MAINPID={os.getpid()}"]
        if status:
            lines.append(f"STATUS={one_line(status)}")
        self._notifier.send(*lines)
        self._ready.set()

    def status(self, summary: str) -> None:
        """STATUS=one line (what `systemctl status` shows)."""
        self._notifier.send(f"STATUS={one_line(summary)}")

    def extend_startup(self, seconds: float) -> None:
        """Ask for more start-up time (EXTEND_TIMEOUT_USEC), e.g. while a TensorRT engine loads on a Jetson."""
        self._notifier.send(f"EXTEND_TIMEOUT_USEC={int(seconds * 1e6)}")

    def reloading(self) -> None:
        """A SIGHUP reload begins (RELOADING=1 with MONOTONIC_USEC, as systemd's Type=notify-reload wants); the
        line keeps inspecting meanwhile, so the watchdog keeps pinging. Finish with :meth:`reloaded`."""
        self._notifier.send("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")

    def reloaded(self, status: str) -> None:
        """The reload is done, applied or refused: READY=1 again and a one-line STATUS saying which."""
        self._notifier.send("READY=1", f"STATUS={one_line(status)}")

    def stopping(self, status: str | None = None) -> None:
        """Shutdown begins: STOPPING=1 and no more pings (a slow shutdown is not a hang)."""
        lines = ["STOPPING=1"]
        if status:
            lines.append(f"STATUS={one_line(status)}")
        with self._ping_lock:
            self._stop.set()
            self._notifier.send(*lines)

    # --- the ping thread --------------------------------------------------------------------------------
    def start(self) -> ServiceNotifier:
        """Start the ping thread (only when systemd set a watchdog for us); idempotent."""
        if self.watchdog_enabled and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="sd-watchdog", daemon=True)
            self._thread.start()
            log.info(
                "systemd watchdog: period %.1f s, pinging every %.1f s while frames and inspection are fresh",
                self.period_s,
                self.period_s / 2,
            )
        return self

    def _run(self) -> None:
        interval = self.period_s / 2
        while not self._ready.is_set():
            if self._stop.wait(0.05):
                return
        next_status = self._clock()
        while not self._stop.is_set():
            reason = self.stale_reason()
            if reason is None:
                with self._ping_lock:
                    if self._stop.is_set():
                        return
                    self._notifier.send("WATCHDOG=1")
                self.pings += 1
                if self._last_stale_reason is not None:
                    log.warning("watchdog: line alive again; pinging")
                    self._last_stale_reason = None
            else:
                self.withheld += 1
                if self._last_stale_reason is None:
                    log.error("watchdog: %s; withholding WATCHDOG=1 so systemd restarts the service", reason)
                    self._notifier.send(f"STATUS={one_line('stalled: ' + reason)}")
                self._last_stale_reason = reason
            if self._status_source is not None and reason is None and self._clock() >= next_status:
                next_status = self._clock() + self._status_interval_s
                try:
                    self.status(self._status_source())
                except Exception:  # noqa: BLE001 - a broken summary must not stop the pings
                    log.exception("watchdog: status_source failed")
            self._stop.wait(interval)

    def close(self, timeout_s: float = 2.0) -> None:
        """Stop the thread (without sending STOPPING: call :meth:`stopping` for that) and close the socket."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout_s)
            if thread.is_alive():
                log.error("watchdog thread %s still alive after %.1f s", thread.name, timeout_s)
        self._notifier.close()

    def __enter__(self) -> ServiceNotifier:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

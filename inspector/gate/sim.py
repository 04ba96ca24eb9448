"""A gate controller simulator speaking the real protocol: commissioning without hardware, and the tests' gate.

It behaves like firmware/gate_controller/gate_controller.ino: boots in fail-safe, schedules REJ commands on
its own clock, fires, reports FIRED, heartbeats, and holds the diverter (or stops the line) when the host's
heartbeats stop or the host sends HOLD, until the host sends RUN. Every diversion and mode change is
recorded (memory and JSONL) with ``time.monotonic_ns()`` - the same clock the inspector stamps parts with -
so a test can check each defect left the line at its part's gate time.

:class:`PtyLink` is the "cable": a pty pair whose slave is reached through a stable symlink (like udev's
/dev/serial/by-id names), so a test can unplug it (close both ends) and plug it back (a new pair, same path).
"""

from __future__ import annotations

import errno
import heapq
import json
import logging
import os
import select
import threading
import time
import tty
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ground.errors import UserError
from inspector.gate import protocol as P

log = logging.getLogger(__name__)


MAX_EVENTS = 20_000  # events kept in memory (the --record file keeps them all); ~1 h of heartbeats


class PtyLink:
    """A pty pair: the simulator owns the master, the host opens ``path`` (a symlink to the slave)."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path else None
        self.master: int | None = None
        self._slave: int | None = None
        self.slave_name: str | None = None
        self.plug()

    def plug(self) -> None:
        """A new pty pair (a USB adapter plugged in): the symlink, when used, points at the new slave."""
        master, slave = os.openpty()
        tty.setraw(slave)  # before the host opens it: no echo, no line editing
        os.set_blocking(master, False)  # the simulator never blocks on a host that does not read
        self.master, self._slave, self.slave_name = master, slave, os.ttyname(slave)
        if self.path is not None:
            tmp = self.path.with_name(self.path.name + ".new")
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(self.slave_name)
            os.replace(tmp, self.path)

    def unplug(self) -> None:
        """Both ends closed: the host's next read fails (EIO) and reopening the path fails until plug()."""
        if self.path is not None:
            self.path.unlink(missing_ok=True)
        for fd in (self.master, self._slave):
            if fd is not None:
                os.close(fd)
        self.master = self._slave = None

    @property
    def port(self) -> str:
        """What the host opens."""
        return str(self.path) if self.path is not None else str(self.slave_name)

    def close(self) -> None:
        if self.master is not None:
            self.unplug()


class DeviceLink:
    """An existing serial device or pty (one end of a socat pair, a USB-serial cable to the inspector's PC)."""

    def __init__(self, path: str, baudrate: int = 115200) -> None:
        import termios

        self.path = path
        try:
            fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        except OSError as exc:
            raise UserError(f"--port {path}: cannot open ({exc.strerror}); give a serial device or pty") from None
        if not os.isatty(fd):
            os.close(fd)
            raise UserError(f"--port {path}: not a serial device or pty; give one, or a new path for a symlink")
        tty.setraw(fd)
        speed = getattr(termios, f"B{baudrate}", None)
        if speed is not None:
            attrs = termios.tcgetattr(fd)
            attrs[4] = attrs[5] = speed
            termios.tcsetattr(fd, termios.TCSANOW, attrs)
        self.master: int | None = fd

    @property
    def port(self) -> str:
        return self.path

    def close(self) -> None:
        if self.master is not None:
            os.close(self.master)
            self.master = None


class GateSimulator:
    """The simulated controller. ``start()`` runs it on a thread; ``close()`` stops it.

    Fault injection for tests (each a count of messages to affect): ``drop_acks`` (of REJ/REJE),
    ``nak_next`` (with ``nak_reason``; every command but HOLD, which needs no resources), ``garble_next``
    (outgoing checksums); ``silent`` stops its heartbeats.
    """

    def __init__(
        self,
        link: PtyLink | DeviceLink,
        *,
        record: str | Path | None = None,
        fail_safe: str = P.MODE_DIVERT,
        link_timeout_ms: float = 1000.0,
        heartbeat_ms: float = 200.0,
        pulse_ms: float = 50.0,
        queue_capacity: int = 48,
        counts_per_mm: float = 10.0,
        belt_speed_mm_s: float = 200.0,
    ) -> None:
        self.link = link
        self.fail_safe = fail_safe
        self.link_timeout_ns = int(link_timeout_ms * 1e6)
        self.heartbeat_ns = int(heartbeat_ms * 1e6)
        self.pulse_ms = pulse_ms
        self.queue_capacity = queue_capacity
        self.counts_per_ns = counts_per_mm * belt_speed_mm_s / 1e9
        self.mode = fail_safe
        self.events: list[dict[str, Any]] = []
        self.fired: dict[int, int] = {}  # part id -> monotonic ns it fired
        self.counters = {
            "rx": 0,
            "rx_errors": 0,
            "crc_errors": 0,
            "fired": 0,
            "late": 0,
            "failsafe": 0,
            "tx_dropped": 0,
            "nak": 0,
        }
        self.drop_acks = 0
        self.nak_next = 0
        self.nak_reason = "FULL"
        self.garble_next = 0
        self.silent = False
        self._record = open(record, "a", encoding="utf-8") if record else None  # noqa: SIM115 - closed in close()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._seq = P.SeqCounter()
        self._framer = P.LineFramer()
        self._queue: list[tuple[int, int, int]] = []  # (fire_at_ns, part, scheduled_ns) heap
        self._enc_queue: list[tuple[int, int]] = []  # (count, part) heap
        self._recent: deque[int] = deque(maxlen=64)  # part ids scheduled lately: retries are idempotent
        self._t0 = time.monotonic_ns()
        now = self._t0
        self._last_rx = now - self.link_timeout_ns  # boot: no link yet
        self._next_hb = now
        self._thread = threading.Thread(target=self._loop, name="gate-sim", daemon=True)
        self._note("mode", mode=self.mode, reason="BOOT")

    # -- public ------------------------------------------------------------------------------------------
    def start(self) -> GateSimulator:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        if self._thread.is_alive():
            log.error("gate simulator thread still alive after 2 s")
        if self._record:
            self._record.close()
            self._record = None

    def encoder(self, t_ns: int | None = None) -> int:
        return int(((t_ns or time.monotonic_ns()) - self._t0) * self.counts_per_ns) % P.CLOCK_MOD

    def clock_ms(self, t_ns: int | None = None) -> int:
        """The controller's own millisecond clock: it starts at boot, like millis() on the board."""
        return ((t_ns or time.monotonic_ns()) - self._t0) // 1_000_000 % P.CLOCK_MOD

    def wait_for(self, predicate: Callable[[GateSimulator], bool], timeout: float) -> bool:
        """Wait until ``predicate(self)`` holds (checked on every event), at most ``timeout`` s."""
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self), timeout)

    def holds(self) -> list[tuple[int, int | None]]:
        """Fail-safe intervals (start_ns, end_ns or None while still held): every part at the gate is diverted."""
        out: list[tuple[int, int | None]] = []
        with self._cond:
            for e in self.events:
                if e["event"] == "mode" and e["mode"] != P.MODE_RUN and (not out or out[-1][1] is not None):
                    out.append((e["t_ns"], None))
                elif e["event"] == "mode" and e["mode"] == P.MODE_RUN and out and out[-1][1] is None:
                    out[-1] = (out[-1][0], e["t_ns"])
        return out

    def diverted_at(self, t_ns: int, tolerance_ns: int) -> bool:
        """Was the diverter out at ``t_ns`` (a fire within tolerance, or a fail-safe hold)?"""
        for start, end in self.holds():
            if start <= t_ns and (end is None or t_ns <= end):
                return True
        with self._cond:
            return any(abs(f - t_ns) <= tolerance_ns for f in self.fired.values())

    # -- internals ---------------------------------------------------------------------------------------
    def _note(self, event: str, **fields: Any) -> None:
        rec = {"t_ns": time.monotonic_ns(), "event": event, **fields}
        with self._cond:
            self.events.append(rec)
            if len(self.events) > MAX_EVENTS:  # a simulator left running (gate-sim, --serial sim): bounded memory
                del self.events[: len(self.events) - MAX_EVENTS // 2]
            self._cond.notify_all()
        if self._record:
            self._record.write(json.dumps(rec) + "\n")
            self._record.flush()

    def _set_mode(self, mode: str, reason: str) -> None:
        if mode == self.mode:
            return
        if mode != P.MODE_RUN:
            self.counters["failsafe"] += 1
        self.mode = mode
        self._note("mode", mode=mode, reason=reason)
        self._send(P.MODE, mode, reason)

    def _send(self, type_: str, *fields: object) -> None:
        fd = self.link.master
        if fd is None:
            return
        line = P.encode(self._seq.next(), type_, *fields)
        if self.garble_next > 0:
            self.garble_next -= 1
            line = line[:-3] + (b"00" if line[-3:-1] != b"00" else b"11") + b"\n"  # wrong checksum
        try:
            os.write(fd, line)
        except OSError as exc:  # a host that does not read (EAGAIN) or an unplugged cable
            self.counters["tx_dropped"] += 1
            if exc.errno not in (errno.EAGAIN, errno.EIO):
                log.warning("gate-sim write failed: %s", exc)

    def _loop(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic_ns()
            deadline = min([self._next_hb, now + 20_000_000] + [q[0] for q in self._queue[:1]])
            timeout = max(0.0, (deadline - now) / 1e9)
            fd = self.link.master
            data = b""
            if fd is None:
                self._stop.wait(min(timeout, 0.005))
            else:
                try:
                    ready, _, _ = select.select([fd], [], [], timeout)
                    if ready:
                        data = os.read(fd, 4096)
                except (OSError, ValueError):  # unplugged under us
                    self._stop.wait(0.002)
            t_rx = time.monotonic_ns()
            for line in self._framer.feed(data):
                self._handle(line, t_rx)
            self._tick(time.monotonic_ns())

    def _tick(self, now: int) -> None:
        while self._queue and self._queue[0][0] <= now:
            fire_at, part, scheduled = heapq.heappop(self._queue)
            self._fire(part, now, (now - scheduled) / 1e6, scheduled)
        enc = self.encoder(now)
        while self._enc_queue and self._enc_queue[0][0] <= enc:
            _, part = heapq.heappop(self._enc_queue)
            self._fire(part, now, 0.0, now)
        if self.mode == P.MODE_RUN and now - self._last_rx > self.link_timeout_ns:
            self._set_mode(self.fail_safe, "HB_TIMEOUT")
        if now >= self._next_hb:
            self._next_hb = now + self.heartbeat_ns
            if not self.silent:
                self._send(
                    P.HB, self.mode, len(self._queue) + len(self._enc_queue), self.encoder(now), self.clock_ms(now)
                )

    def _fire(self, part: int, now: int, late_ms: float, scheduled_ns: int) -> None:
        """``scheduled_ns``: when the command said to fire; ``now`` minus that is this simulator's own
        wake-up lateness (an MCU has microseconds of it; a loaded PC can have tens of ms)."""
        late = max(0, round(late_ms))
        self.counters["fired"] += 1
        if late > 0:
            self.counters["late"] += 1
        with self._cond:
            self.fired[part] = now
        self._note("fire", part=part, late_ms=late, scheduled_ns=scheduled_ns, pulse_ms=self.pulse_ms, mode=self.mode)
        self._send(P.FIRED, part, late)

    def _handle(self, line: bytes, t_rx: int) -> None:
        self.counters["rx"] += 1
        try:
            msg = P.decode(line)
        except P.ProtocolError as exc:
            self.counters["rx_errors"] += 1
            if exc.reason == "CRC":
                self.counters["crc_errors"] += 1
            self._note("rx_error", reason=exc.reason, line=line[:40].decode("ascii", "replace"))
            self._send(P.NAK, "?", exc.reason)  # the sequence number of a bad line cannot be trusted
            return
        self._last_rx = t_rx  # any line with a good checksum proves the link
        try:
            P.check(msg, P.HOST_TYPES)
        except P.ProtocolError as exc:
            self.counters["rx_errors"] += 1
            self._note("rx_error", reason=exc.reason, line=line[:40].decode("ascii", "replace"))
            self._send(P.NAK, msg.seq, exc.reason)
            return
        self._note("rx", seq=msg.seq, type=msg.type, fields=list(msg.fields), t_rx_ns=t_rx)
        if msg.type == P.HB:
            return
        if self.nak_next > 0 and msg.type != P.HOLD:  # a HOLD needs no queue slot: never refused, as in the sketch
            self.nak_next -= 1
            self.counters["nak"] += 1
            self._send(P.NAK, msg.seq, self.nak_reason)
            return
        if msg.type == P.STQ:  # acknowledged first, then answered (as the firmware does)
            self._send(P.ACK, msg.seq)
            c = self.counters
            self._send(P.ST, self.mode, len(self._queue), c["fired"], c["late"], c["rx_errors"], c["failsafe"])
            return
        try:
            self._command(msg, t_rx)
        except P.ProtocolError as exc:
            self._send(P.NAK, msg.seq, exc.reason)
            return
        if self.drop_acks > 0 and msg.type in P.REJECTS:  # lost ACKs of rejects (the fault under test)
            self.drop_acks -= 1
            return
        self._send(P.ACK, msg.seq)

    def _command(self, msg: P.Message, t_rx: int) -> None:
        if msg.type in P.REJECTS:
            part, value = msg.field_int(0), msg.field_int(1)
            if part in self._recent:
                return  # a retry of a command we already hold: acknowledge again, schedule once
            if len(self._queue) + len(self._enc_queue) >= self.queue_capacity:
                self._set_mode(self.fail_safe, "QUEUE_FULL")
                raise P.ProtocolError("FULL", "fire queue full")
            self._recent.append(part)
            if msg.type == P.REJ:
                fire_at = t_rx + value * 1_000_000
                heapq.heappush(self._queue, (max(fire_at, t_rx), part, fire_at))
            elif msg.type == P.REJT:
                ahead = (value - self.clock_ms(t_rx) + P.CLOCK_MOD // 2) % P.CLOCK_MOD - P.CLOCK_MOD // 2
                fire_at = t_rx + ahead * 1_000_000 - (t_rx - self._t0) % 1_000_000  # on the ms tick
                heapq.heappush(self._queue, (max(fire_at, t_rx), part, fire_at))
            else:
                heapq.heappush(self._enc_queue, (value, part))
        elif msg.type == P.CFG:
            mode = {"D": P.MODE_DIVERT, "S": P.MODE_STOP}.get(msg.fields[0])
            if mode is None:
                raise P.ProtocolError("RANGE", f"fail-safe must be D or S, got {msg.fields[0]!r}")
            timeout, pulse, hb = msg.field_int(1), msg.field_int(2), msg.field_int(3)
            if min(timeout, pulse, hb) <= 0:
                raise P.ProtocolError("RANGE", "timeouts must be > 0")
            self.fail_safe, self.link_timeout_ns = mode, timeout * 1_000_000
            self.pulse_ms, self.heartbeat_ns = pulse, hb * 1_000_000
            if self.mode != P.MODE_RUN:
                self.mode = mode
        elif msg.type == P.RUN:
            self._set_mode(P.MODE_RUN, "HOST")
        elif msg.type == P.HOLD:  # the host cannot vouch for what reaches the gate: fail-safe until RUN
            if self.mode != self.fail_safe:
                self._note("hold", reason=msg.fields[0])
            self._set_mode(self.fail_safe, P.HOST_HOLD)


def run_simulator(
    port: str | None, record: str | None, fail_safe: str, stop: threading.Event, on_ready: Callable[[str], None]
) -> dict[str, int]:
    """`inspector gate-sim`: serve until ``stop``. ``port``: an existing serial device or pty to serve on, or a
    new path for a symlink to a fresh pty (None: a fresh pty, its /dev/pts path reported)."""
    link: PtyLink | DeviceLink
    if port and Path(port).exists() and not Path(port).is_symlink():
        link = DeviceLink(port)
    else:
        link = PtyLink(port)
    sim = GateSimulator(link, record=record, fail_safe=fail_safe).start()
    try:
        on_ready(link.port)
        while not stop.wait(0.5):
            pass
    finally:
        sim.close()
        link.close()
    return sim.counters

"""The reject gate actuator: a PartSink that turns verdicts into REJ commands on a serial line.

``on_part`` only enqueues (bounded, never blocks the inspection thread). One I/O thread owns the port: it
writes commands the moment they arrive, retries unacknowledged ones while their part can still be reached,
heartbeats, reopens a port that vanished (USB adapter unplugged) with backoff, and - when the part has passed
the gate - reports what happened to it (``GateResult``) to a callback such as the defect log. The port and its
reader thread are :class:`~inspector.gate.link.GateLink` (it puts the controller's lines into the same inbox);
the holds are :class:`~inspector.gate.holds.Holds`. Tracks, holds and the link are touched by the I/O thread
only; ``stats`` is counted under a lock (the inspection thread counts an inbox overflow) and read as a copy.

Parts whose gate time falls while the controller is (by the host's knowledge) in fail-safe are reported as
``failsafe``: the controller's fail-safe diverted them. See docs/gate-protocol.md.

A *hold* (``hold(reason)`` / ``release()``, HOLD on the wire) puts the controller in fail-safe while the host
cannot vouch for what reaches the gate: the camera stalled (``on_line_state``, from the pipeline), or a reject
could not be acknowledged before its deadline (the actuator holds by itself, until that part has passed).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import serial

from inspector.config import GateConfig
from inspector.gate import protocol as P
from inspector.gate.clock import ClockSync
from inspector.gate.holds import Holds
from inspector.gate.link import GateLink
from inspector.gate.schedule import Schedule, Track
from inspector.records import GateResult, Part

log = logging.getLogger(__name__)

MS = 1_000_000


class GateActuator:
    """PartSink driving a gate controller at ``port`` (a device, a pyserial URL, or a pty path)."""

    def __init__(
        self,
        cfg: GateConfig,
        port: str,
        on_result: Callable[[GateResult], None] | None = None,
        *,
        reconnect_max_s: float = 1.0,
    ) -> None:
        self.cfg = cfg
        self.port = port
        self.on_result = on_result
        self.travel_ns = cfg.travel_ns
        self.stats: dict[str, int] = dict.fromkeys(
            (
                "parts",
                "rejects",
                "sent",
                "retries",
                "acked",
                "nacks",
                "ack_timeouts",
                "fired",
                "late_verdicts",
                "failsafe",
                "missed",
                "unconfirmed",
                "passed",
                "reconnects",
                "link_lost",
                "rx_errors",
                "overflow",
                "write_errors",
                "fired_echo",
                "holds",
                "releases",
            ),
            0,
        )
        self.wire_ns: deque[int] = deque(maxlen=100_000)  # verdict -> REJ written, per first send
        self.connected = threading.Event()  # port open and the controller talking
        self.link_down = threading.Event()  # set while the link is known to be down (after it was up)
        self.running = threading.Event()  # controller in RUN mode (as last reported)
        self.encoder_ready = threading.Event()  # two encoder readings seen: REJE can be used (timebase encoder)
        self._stats_lock = threading.Lock()  # stats are counted on the I/O thread and (overflow) the inspection one
        self._holds = Holds(self._count)
        self.held = self._holds.held  # set while the host holds the gate in fail-safe (any reason)
        self._inbox: queue.Queue = queue.Queue()
        self._link = GateLink(port, cfg.baudrate, self._inbox, reconnect_max_s=reconnect_max_s)
        self._stop = threading.Event()
        self._seq = P.SeqCounter()
        self._schedule = Schedule(cfg, self._count)  # the parts between camera and gate
        self._ctrl_mode: str | None = None
        self._last_ctrl_rx = 0
        # the controller boots in fail-safe: until it reports RUN, every part is diverted
        self._link_down_ns: int | None = time.monotonic_ns() - int(cfg.link_timeout_ms * MS)
        self._sync_due = 0
        self._run_seq: int | None = None
        self._held_synced = False  # the controller has been sent HOLD since it last (re)connected
        self._hold_due = 0
        self._next_hb = 0
        self._warned_silent = False
        self.clock = ClockSync()  # the controller's clock and encoder, from its heartbeats
        self._thread = threading.Thread(target=self._run, name="gate-io", daemon=True)
        self._thread.start()

    # -- PartSink ----------------------------------------------------------------------------------------
    def on_part(self, part: Part) -> None:
        """Enqueue and return: the I/O thread does the rest. A full inbox is counted (never blocks)."""
        if self._inbox.qsize() >= self.cfg.queue_size:
            self._count("overflow")
            self._count("missed")
            log.error(
                "gate inbox full (%d): part %d not sent; the controller will not divert it",
                self.cfg.queue_size,
                part.part_id,
            )
            part.gate = GateResult(
                part.part_id,
                part.rejected,
                "missed",
                part.t_capture_ns + self.travel_ns,
                part.t_capture_ns,
                reason="gate inbox full",
            )
            if self.on_result is not None:  # on record all the same
                self.on_result(part.gate)
            return
        self._inbox.put(("part", part, time.monotonic_ns()))

    def hold(self, reason: str) -> None:
        """Put the controller in fail-safe (divert every part, or stop the line) until every hold is released.

        Non-blocking and idempotent (a reason already held is a no-op); ``reason`` is an upper-case word."""
        self._inbox.put(("hold", reason, time.monotonic_ns()))

    def release(self, reason: str | None = None, after_s: float = 0.0) -> None:
        """Drop hold ``reason`` (None: all) ``after_s`` from now; the last one gone, pending rejects are re-sent
        and the controller is sent RUN. A new hold for the reason before then cancels the release."""
        self._inbox.put(("release", reason, time.monotonic_ns() + int(after_s * 1e9)))

    def on_line_state(self, ok: bool, reason: str) -> None:
        """The pipeline's word on the line (optional sink method): ``ok`` False = the camera sees nothing.

        Parts that passed the camera unseen are still on the belt when frames flow again, so the hold is
        released one belt travel (plus a pulse) later, once the last of them has passed the gate."""
        if not ok:
            self.hold(reason)
        else:
            self.release(reason, after_s=(self.travel_ns + self.cfg.pulse_ms * MS) / 1e9)

    def close(self, drain_s: float | None = None) -> None:
        """Wait (bounded) for parts in flight to pass the gate, then stop; the controller then goes fail-safe."""
        if drain_s is None:
            drain_s = self.travel_ns / 1e9 + (self.cfg.pulse_ms + self.cfg.link_timeout_ms) / 1e3 + 0.5
        self._inbox.put(("drain", None, time.monotonic_ns() + int(drain_s * 1e9)))
        self._thread.join(timeout=drain_s + 3.0)
        if self._thread.is_alive():
            log.error("gate-io thread still alive after close(); port %s", self.port)

    # -- state for monitoring (read from any thread: each is one atomic read under the GIL) ---------------
    @property
    def hold_reasons(self) -> tuple[str, ...]:
        """Why the gate is held now (empty: not held)."""
        return self._holds.reasons

    @property
    def in_flight(self) -> int:
        """Parts between the camera and the gate (until their outcome is reported)."""
        return len(self._schedule)

    @property
    def queue_depth(self) -> int:
        """Verdicts, holds and releases waiting for the I/O thread."""
        return self._inbox.qsize()

    def state(self) -> dict[str, Any]:
        """The gate as monitoring sees it (Prometheus metrics, MQTT stats), from any thread."""
        with self._stats_lock:
            events = dict(self.stats)  # a copy: the gate-io thread keeps counting
        return {
            "connected": self.connected.is_set(),
            "link_down": self.link_down.is_set(),
            "running": self.running.is_set(),
            "held": self.held.is_set(),
            "hold_reasons": sorted(self.hold_reasons),
            "rejects_unacked": max(0, events.get("sent", 0) - events.get("acked", 0)),
            "in_flight": self.in_flight,
            "queue": self.queue_depth,
            "events": events,
        }

    def _count(self, key: str, n: int = 1) -> None:
        with self._stats_lock:
            self.stats[key] += n

    # -- the I/O thread ----------------------------------------------------------------------------------
    def _run(self) -> None:
        drain_until: int | None = None
        while True:
            now = time.monotonic_ns()
            if drain_until is not None and (not len(self._schedule) or now >= drain_until):
                break
            if not self._link.is_open and now >= self._link.next_open:
                self._open(now)
            try:
                item = self._inbox.get(timeout=self._tick_s(now))
            except queue.Empty:
                item = None
            while item is not None:
                kind, obj, t = item
                if kind == "part":
                    self._admit(obj, t)
                elif kind == "rx":
                    self._receive(obj, t)
                elif kind == "rx_error":
                    self._count("rx_errors")
                    log.info("gate: bad line from controller (%s): %r", *obj)
                elif kind == "broken" and obj[1] is self._link.rx_stop:  # not a stale one from an old port
                    self._lost(f"read failed: {obj[0]}")
                elif kind == "hold":
                    self._hold(obj, t)
                elif kind == "release":
                    self._release_at(obj, t)
                elif kind == "drain":
                    drain_until = t
                try:
                    item = self._inbox.get_nowait()
                except queue.Empty:
                    item = None
            self._service(time.monotonic_ns())
        for track in list(self._schedule.tracks.values()):
            self._finalise(track, time.monotonic_ns(), shutdown=True)
        self._stop.set()
        self._link.close()
        log.info("gate %s: %s", self.port, ", ".join(f"{k} {v}" for k, v in self.stats.items() if v))

    def _tick_s(self, now: int) -> float:
        due = [self._next_hb, now + 10 * MS, *self._schedule.ack_deadlines()]
        return max(0.0, min(due) - now) / 1e9

    # -- port ----------------------------------------------------------------------------------------------
    def _open(self, now: int) -> None:
        if not self._link.open(now):
            return
        if self.stats["link_lost"]:
            self._count("reconnects")
            log.warning("gate port %s reopened", self.port)
        self._warned_silent = False
        self._next_hb = now
        self._sync_due = now  # configure the controller and bring it out of fail-safe
        self._held_synced = False
        self.clock.reset()
        self.encoder_ready.clear()

    def _lost(self, why: str) -> None:
        if not self._link.is_open:
            return
        log.warning("gate link lost on %s: %s", self.port, why)
        self._count("link_lost")
        self._link.close()
        self._mark_down(time.monotonic_ns())
        self._link.retry_later(time.monotonic_ns())

    def _mark_down(self, now: int) -> None:
        if self._link_down_ns is None:
            self._link_down_ns = self._link.last_tx_ok or now  # the controller's watchdog started at our last line
        self.connected.clear()
        self.link_down.set()
        self.running.clear()
        self._run_seq = None
        self._ctrl_mode = None
        self._held_synced = False  # it may reboot: a hold is sent again with CFG
        self._schedule.link_down()  # unacknowledged commands go again once the link is back

    def _write(self, type_: str, *fields: object) -> int | None:
        """Write one command; -> its seq, or None when there is no port (the caller keeps the work pending)."""
        if not self._link.is_open:
            return None
        seq = self._seq.next()
        try:
            self._link.write(P.encode(seq, type_, *fields))
        except (serial.SerialException, OSError) as exc:
            self._count("write_errors")
            self._lost(f"write failed: {exc}")
            return None
        return seq

    # -- parts -------------------------------------------------------------------------------------------
    def _admit(self, part: Part, t_enqueued: int) -> None:
        now = time.monotonic_ns()
        track = self._schedule.admit(part, now)
        if track.rejected and self._send_reject(track, now) and not track.extra.get("measured"):
            track.extra["measured"] = True
            if part.t_verdict_ns is not None:
                self.wire_ns.append(self._link.last_tx_ok - part.t_verdict_ns)

    def _send_reject(self, track: Track, now: int) -> bool:
        if not self._link.is_open or self._ctrl_mode is None:
            return False  # no link: sent when it is back (if still in time); meanwhile the fail-safe holds
        part, c = track.part, self.cfg
        enc = self.clock.encoder_at(part.t_capture_ns) if c.timebase == "encoder" else None
        ctrl_ms = self.clock.ctrl_ms_at(track.gate_ns - int(c.wire_delay_ms * MS)) if c.timebase == "clock" else None
        if enc is not None:  # fire at a belt position: speed changes after capture do not move it
            target = (enc + round(c.camera_to_gate_mm * (c.counts_per_mm or 0))) % P.CLOCK_MOD
            seq = self._write(P.REJE, part.part_id, target)
        elif ctrl_ms is not None:  # fire at a time on the controller's clock: transfer delay does not matter
            seq = self._write(P.REJT, part.part_id, ctrl_ms)
        else:  # fire N ms after receipt (also before the first heartbeat): transfer delay adds to the error
            delay_ms = round((track.gate_ns - now) / MS - c.wire_delay_ms)
            seq = self._write(P.REJ, part.part_id, delay_ms)
        if seq is None:
            return False
        self._schedule.sent(track, seq, self._link.last_tx_ok, now)
        return True

    # -- controller messages -----------------------------------------------------------------------------
    def _receive(self, msg: P.Message, t: int) -> None:
        self._last_ctrl_rx = t
        if self._ctrl_mode is None and self._link.is_open:
            self.connected.set()
            self.link_down.clear()
            self._ctrl_mode = "?"
        try:
            if msg.type == P.HB:
                self._set_ctrl_mode(msg.fields[0], t)
                self.clock.add(t, msg.field_int(3), msg.field_int(2))
                if self.clock.encoder_at(t) is not None:
                    self.encoder_ready.set()
            elif msg.type == P.MODE:
                self._set_ctrl_mode(msg.fields[0], t)
            elif msg.type == P.ACK:
                self._acked(msg.field_int(0), t)
            elif msg.type == P.NAK:
                self._nacked(msg, t)
            elif msg.type == P.FIRED:
                self._count("fired_echo")
                self._schedule.fired(msg.field_int(0), t, msg.field_int(1))
            elif msg.type == P.ERR:
                log.error("gate controller error %s: %s", msg.fields[0], msg.fields[1])
        except P.ProtocolError as exc:
            self._count("rx_errors")
            log.info("gate: bad %s from controller: %s", msg.type, exc)

    def _set_ctrl_mode(self, mode: str, t: int) -> None:
        if mode == P.MODE_RUN:
            if self._link_down_ns is not None:
                self._link_down_ns = None
            self.running.set()
            self._run_seq = None
        else:
            self.running.clear()
            if self._link_down_ns is None:
                self._link_down_ns = t  # the controller diverts from now on
            if self._run_seq is None:
                self._sync_due = min(self._sync_due or t, t)
        self._ctrl_mode = mode

    def _acked(self, seq: int, t: int) -> None:
        if seq == self._run_seq:
            return  # RUN acknowledged; the MODE line confirms it
        self._schedule.acked(seq, t)

    def _nacked(self, msg: P.Message, t: int) -> None:
        self._count("nacks")
        if msg.fields[0] == "?":
            return  # the controller could not read our line: the ack timeout resends it
        seq = msg.field_int(0)
        if seq == self._run_seq:
            self._run_seq, self._sync_due = None, t + int(self.cfg.ack_timeout_ms * MS)
            return
        self._schedule.nacked(seq, msg.fields[1], t)

    # -- housekeeping ------------------------------------------------------------------------------------
    def _service(self, now: int) -> None:
        if (
            self._link.is_open
            and self._ctrl_mode is None
            and not self._warned_silent
            and now - self._link.opened_ns > 2_000 * MS
        ):
            self._warned_silent = True
            log.warning(
                "gate port %s is open but the controller has not spoken for 2 s (wrong port or baud rate, "
                "or it is still booting?); until it does, parts are diverted by its fail-safe",
                self.port,
            )
        if self._link.is_open and self._ctrl_mode is not None:
            if now - self._last_ctrl_rx > self.cfg.link_timeout_ms * MS:
                log.warning("gate controller silent for %.0f ms", (now - self._last_ctrl_rx) / MS)
                self._count("link_lost")
                self._mark_down(now)
        if self._link.is_open and now >= self._next_hb:
            self._next_hb = now + int(self.cfg.heartbeat_ms * MS)
            self._write(P.HB, (now // MS) % 2**31)
        self._service_holds(now)
        if (
            self._link.is_open
            and self._ctrl_mode not in (None, P.MODE_RUN)
            and self._sync_due
            and now >= self._sync_due
            and not (self._holds and self._held_synced)
        ):
            self._sync(now)
        self._schedule.service(
            now,
            failsafe_at=self._failsafe_at,
            held=lambda: self._holds.reasons,
            send=self._send_reject,
            hold_unacked=self._hold_unacked,
            finalise=self._finalise,
        )

    def _hold_unacked(self, track: Track, now: int) -> None:
        log.warning(
            "gate: reject of part %d not acknowledged (%s); holding the gate until it has passed",
            track.part.part_id,
            track.result.reason,
        )
        self._hold(P.HOLD_REJECT_UNACKED, now)

    def _sync(self, now: int) -> None:
        """Configure the controller, resend what it may have missed, then ask it to leave fail-safe."""
        c = self.cfg
        fs = "D" if c.fail_safe == "divert" else "S"
        self._write(P.CFG, fs, round(c.link_timeout_ms), round(c.pulse_ms), round(c.heartbeat_ms))
        for track in self._schedule.resendable(now):
            self._send_reject(track, now)
        if self._holds:  # configured and rejects re-sent, but it stays in fail-safe
            self._held_synced = self._write(P.HOLD, self._holds.first) is not None
            return
        self._run_seq = self._write(P.RUN)
        self._sync_due = now + int(max(c.ack_timeout_ms, c.heartbeat_ms) * MS)

    # -- holds -----------------------------------------------------------------------------------------
    def _hold(self, reason: str, now: int) -> None:
        if self._holds.hold(reason):  # newly held: tell the controller now
            self._held_synced, self._hold_due = False, now
            self._send_hold(now)

    def _release_at(self, reason: str | None, t: int) -> None:
        self._holds.release_at(reason, t)

    def _service_holds(self, now: int) -> None:
        if self._holds.service(now, lambda: self._schedule.unacked_short_of_gate(now)):
            self._held_synced, self._run_seq, self._sync_due = False, None, now  # CFG, rejects, then RUN
        elif self._holds:
            self._send_hold(now)

    def _send_hold(self, now: int) -> None:
        if self._link.is_open and self._ctrl_mode == P.MODE_RUN and now >= self._hold_due:
            self._held_synced = self._write(P.HOLD, self._holds.first) is not None
            self._hold_due = now + int(self.cfg.ack_timeout_ms * MS)  # again, while it still says RUN

    def _failsafe_at(self, t: int) -> bool:
        """Was the controller diverting at ``t``, as far as the host can tell?"""
        down = self._link_down_ns
        if down is None:
            return False
        if self._ctrl_mode not in (None, P.MODE_RUN, "?"):
            return True  # it told us it is in fail-safe
        return t - down >= self.cfg.link_timeout_ms * MS  # its watchdog has fired by then

    def _finalise(self, track: Track, now: int, shutdown: bool = False) -> None:
        failsafe = track.failsafe_at_gate if track.failsafe_at_gate is not None else self._failsafe_at(now)
        r = self._schedule.outcome(track, failsafe, shutdown)
        track.part.gate = r  # the part's own record carries what the gate did with it
        if self.on_result is not None:
            try:
                self.on_result(r)
            except Exception:  # a broken consumer must not stop the gate
                log.exception("gate result callback failed for part %d", r.part_id)

"""The serial link to the gate controller: open with backoff, one reader thread per connection, write, close.

The reader frames and decodes the controller's lines and puts them into the actuator's inbox as
``("rx", message, t)``; a line it cannot decode is ``("rx_error", (reason, line), t)`` and a failed read
``("broken", (exc, stop_event), t)``, so that every counter and every decision stays on the actuator's I/O
thread. The link only owns the port; what to write, when, is the actuator's.
"""

from __future__ import annotations

import logging
import queue
import threading
import time

import serial

from inspector.gate import protocol as P

log = logging.getLogger(__name__)

BACKOFF_START_S = 0.05


class GateLink:
    def __init__(self, port: str, baudrate: int, inbox: queue.Queue, *, reconnect_max_s: float = 1.0) -> None:
        self.port = port
        self.baudrate = baudrate
        self._inbox = inbox
        self._ser: serial.SerialBase | None = None
        self._reader: threading.Thread | None = None
        self.rx_stop = threading.Event()  # the current connection's; a stale "broken" carries an older one
        self.backoff_s = BACKOFF_START_S
        self.reconnect_max_s = reconnect_max_s
        self.next_open = 0  # monotonic ns: when to try opening again
        self.opened_ns = 0
        self.last_tx_ok = 0  # monotonic ns of the last successful write

    @property
    def is_open(self) -> bool:
        return self._ser is not None

    def open(self, now: int) -> bool:
        """Try to open the port; -> True on a new connection (its reader started), False: retry at next_open."""
        try:
            ser = serial.serial_for_url(self.port, baudrate=self.baudrate, timeout=0.05, write_timeout=0.2)
            ser.reset_input_buffer()
        except (serial.SerialException, OSError, ValueError) as exc:
            self.next_open = now + int(self.backoff_s * 1e9)
            if self.backoff_s >= self.reconnect_max_s:
                log.warning("gate port %s: %s (retrying every %.1f s)", self.port, exc, self.backoff_s)
            self.backoff_s = min(self.backoff_s * 2, self.reconnect_max_s)
            return False
        self._ser, self.backoff_s, self.opened_ns = ser, BACKOFF_START_S, now
        self.rx_stop = threading.Event()
        self._reader = threading.Thread(target=self._read_loop, args=(ser, self.rx_stop), name="gate-rx", daemon=True)
        self._reader.start()
        return True

    def write(self, data: bytes) -> None:
        """Write one encoded line; raises serial.SerialException / OSError (the caller declares the link lost)."""
        if self._ser is None:
            raise serial.SerialException("port not open")
        self._ser.write(data)
        self.last_tx_ok = time.monotonic_ns()

    def close(self) -> None:
        """Stop the reader (cancel_read wakes a blocked read) and close the port; safe to call twice."""
        ser, self._ser = self._ser, None
        if ser is None:
            return
        self.rx_stop.set()
        try:
            if hasattr(ser, "cancel_read"):
                ser.cancel_read()
        except (OSError, serial.SerialException):
            pass
        if self._reader is not None and self._reader is not threading.current_thread():
            self._reader.join(timeout=1.0)
            if self._reader.is_alive():
                log.error("gate-rx thread still alive after closing %s", self.port)
        try:
            ser.close()
        except (OSError, serial.SerialException):
            pass

    def retry_later(self, now: int) -> None:
        """After a loss: the next open attempt waits the current backoff."""
        self.next_open = now + int(self.backoff_s * 1e9)

    def _read_loop(self, ser: serial.SerialBase, stop: threading.Event) -> None:
        framer = P.LineFramer()
        while not stop.is_set():
            try:
                data = ser.read(max(1, ser.in_waiting))
            except (serial.SerialException, OSError, TypeError, AttributeError) as exc:
                if not stop.is_set():
                    self._inbox.put(("broken", (exc, stop), time.monotonic_ns()))
                return
            t = time.monotonic_ns()
            for line in framer.feed(data):
                try:
                    self._inbox.put(("rx", P.decode(line, P.CTRL_TYPES), t))
                except P.ProtocolError as exc:
                    self._inbox.put(("rx_error", (str(exc), line[:40]), t))

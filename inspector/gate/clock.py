"""The controller's clock (and encoder) as seen from the host, from the controller's heartbeats.

Each controller heartbeat carries its millisecond clock and encoder count, stamped at the same instant. A
heartbeat received at host time h with controller time c gives h - c = offset + transfer delay; the smallest
value over a window is the best estimate of the offset (the delay is never negative), as in NTP's minimum
filter. A command in controller time then does not care how long it takes to arrive, as long as it arrives
before its fire time. Error: the smallest transfer delay seen (sub-ms on a pty, about 1 ms over USB) plus the
crystals' drift over the window (50 ppm x 10 s = 0.5 ms).
"""

from __future__ import annotations

from collections import deque

from inspector.gate.protocol import CLOCK_MOD

MS = 1_000_000


class ClockSync:
    def __init__(self, window: int = 50) -> None:
        self._d: deque[int] = deque(maxlen=window)  # host_ns - ctrl_ns samples
        self._last: tuple[int, int, int] | None = None  # (host_ns, unwrapped ctrl ms, unwrapped encoder)
        self._prev: tuple[int, int, int] | None = None
        self._ctrl_wraps = 0
        self._enc_wraps = 0

    @property
    def ready(self) -> bool:
        return bool(self._d)

    def reset(self) -> None:
        """A new connection or a rebooted controller: its clock starts again."""
        self._d.clear()
        self._last = self._prev = None
        self._ctrl_wraps = self._enc_wraps = 0

    def add(self, host_ns: int, ctrl_ms: int, encoder: int) -> None:
        if self._last is not None:
            last_c = self._last[1] % CLOCK_MOD
            step = (ctrl_ms - last_c) % CLOCK_MOD
            if step > CLOCK_MOD // 2:  # went backwards: the controller restarted
                self.reset()
            elif ctrl_ms < last_c:
                self._ctrl_wraps += 1
            if self._last is not None and encoder < self._last[2] % CLOCK_MOD:
                self._enc_wraps += 1
        c = ctrl_ms + self._ctrl_wraps * CLOCK_MOD
        e = encoder + self._enc_wraps * CLOCK_MOD
        self._prev, self._last = self._last, (host_ns, c, e)
        self._d.append(host_ns - c * MS)

    def ctrl_ms_at(self, host_ns: int) -> int | None:
        """The controller's clock (ms, wrapped to 32 bits) at host time ``host_ns``; None before any heartbeat."""
        if not self._d:
            return None
        return round((host_ns - min(self._d)) / MS) % CLOCK_MOD

    def encoder_at(self, host_ns: int) -> int | None:
        """Encoder count at host time ``host_ns``, from the last two heartbeats' (clock, count) pairs."""
        if self._prev is None or self._last is None:
            return None
        (_, c0, e0), (_, c1, e1) = self._prev, self._last
        if c1 <= c0:
            return None
        ctrl_ms = (host_ns - min(self._d)) / MS
        return round(e1 + (ctrl_ms - c1) * (e1 - e0) / (c1 - c0)) % CLOCK_MOD

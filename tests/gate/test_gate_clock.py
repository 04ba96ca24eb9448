"""ClockSync: the controller's clock and encoder seen from the host (pure logic, fake timestamps)."""

from __future__ import annotations

from inspector.gate.clock import ClockSync
from inspector.gate.protocol import CLOCK_MOD

MS = 1_000_000
OFFSET = 5_000 * MS  # host clock = controller clock + 5 s


def test_minimum_delay_wins() -> None:
    c = ClockSync()
    assert c.ctrl_ms_at(0) is None and not c.ready
    for ctrl_ms, delay_ms in [(100, 7), (300, 1), (500, 30)]:  # heartbeats with varying transfer delay
        c.add(OFFSET + (ctrl_ms + delay_ms) * MS, ctrl_ms, 0)
    assert c.ctrl_ms_at(OFFSET + 1_000 * MS) == 1_000 - 1  # biased by the smallest delay seen (1 ms)


def test_wraps_and_reboots() -> None:
    c = ClockSync()
    c.add(OFFSET, CLOCK_MOD - 100, 0)
    c.add(OFFSET + 200 * MS, 100, 0)  # the 32-bit millisecond clock wrapped
    assert c.ctrl_ms_at(OFFSET + 300 * MS) == 200
    c.add(OFFSET + 400 * MS, 5, 0)  # went backwards: the controller rebooted; forget the old offset
    assert c.ctrl_ms_at(OFFSET + 500 * MS) == 105


def test_encoder_interpolates_between_heartbeats() -> None:
    c = ClockSync()
    c.add(OFFSET + 1000 * MS, 1000, 2000)
    assert c.encoder_at(OFFSET + 1100 * MS) is None  # one reading: no speed yet
    c.add(OFFSET + 1200 * MS, 1200, 2400)  # 2 counts per ms
    assert c.encoder_at(OFFSET + 1100 * MS) == 2200  # between the readings (a capture 100 ms ago)
    assert c.encoder_at(OFFSET + 1300 * MS) == 2600

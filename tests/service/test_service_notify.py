"""The sd_notify protocol against a real AF_UNIX datagram socket that the test binds and listens on."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from notify_kit import Listener

from inspector.service.notify import Notifier, ServiceNotifier, socket_address, watchdog_period_s

PERIOD = 0.4  # a short watchdog period keeps the test quick; the logic does not depend on its size
SLACK = 0.05  # a ping sent just before the deadline may be received a little after it (a loaded machine)


@pytest.fixture
def listener(tmp_path: Path):
    path = str(tmp_path / "notify.sock")
    lst = Listener(path)
    yield lst, {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": str(int(PERIOD * 1e6)), "WATCHDOG_PID": str(os.getpid())}
    lst.close()


class Feeder:
    """A stand-in for the line's capture and inspection threads: calls the hot-path hooks every 20 ms."""

    def __init__(self, svc: ServiceNotifier) -> None:
        self.svc, self.frames, self.progress = svc, threading.Event(), threading.Event()
        self.frames.set()
        self.progress.set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            if self.frames.is_set():
                self.svc.frame_arrived()
            if self.progress.is_set():
                self.svc.inspection_progressed()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)


def _pings(msgs: list[tuple[float, str]]) -> list[float]:
    return [t for t, m in msgs if m == "WATCHDOG=1"]


def test_addresses_and_period_from_the_environment() -> None:
    assert socket_address({}) is None
    assert socket_address({"NOTIFY_SOCKET": "/run/systemd/notify"}) == "/run/systemd/notify"
    assert socket_address({"NOTIFY_SOCKET": "@/org/x"}) == "\0/org/x"
    assert socket_address({"NOTIFY_SOCKET": "vsock:2:999"}) is None
    assert watchdog_period_s({"WATCHDOG_USEC": "10000000"}) == 10.0
    assert watchdog_period_s({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "1"}, pid=2) is None  # not for us
    assert watchdog_period_s({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "2"}, pid=2) == 10.0
    assert watchdog_period_s({"WATCHDOG_USEC": "soon"}) is None
    assert watchdog_period_s({"WATCHDOG_USEC": "0"}) is None


def test_no_notify_socket_is_a_no_op() -> None:
    with ServiceNotifier(env={"WATCHDOG_USEC": "1000000"}) as svc:
        assert not svc.enabled and not svc.watchdog_enabled
        svc.ready("up")
        svc.frame_arrived()
        svc.status("x")
        svc.stopping()
    assert svc.pings == 0 and svc._thread is None


def test_ready_pings_while_fed_and_stopping(listener) -> None:
    lst, env = listener
    with ServiceNotifier(env=env) as svc:
        assert svc.watchdog_enabled and svc.period_s == PERIOD
        feeder = Feeder(svc)
        assert lst.next(0.3) is None, "pinged before READY"
        svc.ready("warmed up; first frame in")
        msg = lst.wait_for("READY=1", 2)
        assert f"MAINPID={os.getpid()}" in msg and "STATUS=warmed up; first frame in" in msg
        msgs = lst.collect(4 * PERIOD)
        pings = _pings(msgs)
        assert len(pings) >= 6, msgs  # every PERIOD/2 for 4 periods: ~8
        assert max(b - a for a, b in zip(pings, pings[1:], strict=False)) < PERIOD  # never a gap systemd acts on
        svc.status("parts 12 | reject 1\nsecond line")
        assert lst.wait_for("STATUS=parts 12 | reject 1 second line", 2)
        svc.reloading()
        msg = lst.wait_for("RELOADING=1", 2)
        usec = int(msg.split("MONOTONIC_USEC=")[1])
        assert abs(usec / 1e6 - time.clock_gettime(time.CLOCK_MONOTONIC)) < 5
        svc.reloaded("reloaded: model.threshold 0.79 -> 0.70")
        assert "STATUS=reloaded: model.threshold 0.79 -> 0.70" in lst.wait_for("READY=1", 2)
        svc.stopping("shutting down")
        msg = lst.wait_for("STOPPING=1", 2)
        assert "STATUS=shutting down" in msg
        assert _pings(lst.collect(2 * PERIOD)) == [], "pinged after STOPPING"
        feeder.close()


@pytest.mark.parametrize("stall", ["frames", "progress"])
def test_pings_stop_within_one_period_when_the_line_stalls_and_resume(listener, stall: str) -> None:
    lst, env = listener
    with ServiceNotifier(env=env) as svc:
        feeder = Feeder(svc)
        svc.ready()
        lst.wait_for("READY=1", 2)
        lst.wait_for("WATCHDOG=1", 2)
        stalled_at = time.monotonic()
        (feeder.frames if stall == "frames" else feeder.progress).clear()
        msgs = lst.collect(3 * PERIOD)
        pings = _pings(msgs)
        assert all(t < stalled_at + PERIOD + SLACK for t in pings), (stalled_at, pings)
        want = "no frame for" if stall == "frames" else "inspection made no progress"
        assert any(m.startswith("STATUS=stalled: " + want) for _, m in msgs), msgs
        assert svc.withheld >= 2
        (feeder.frames if stall == "frames" else feeder.progress).set()
        lst.wait_for("WATCHDOG=1", 2 * PERIOD)  # recovers once fed again
        feeder.close()


def test_abstract_namespace_socket() -> None:
    name = f"@inspector-test-{os.getpid()}"
    lst = Listener("\0" + name[1:])
    try:
        n = Notifier(env={"NOTIFY_SOCKET": name})
        assert n.send("READY=1", "STATUS=hello")
        assert lst.next(2) == "READY=1\nSTATUS=hello"
        n.close()
    finally:
        lst.close()


def test_a_vanished_socket_never_raises(tmp_path: Path, caplog) -> None:
    n = Notifier(str(tmp_path / "gone.sock"))
    assert n.enabled
    assert n.send("WATCHDOG=1") is False
    assert n.send("WATCHDOG=1") is False
    assert sum("cannot notify" in r.message for r in caplog.records) == 1  # warned once, not at the ping rate


def test_status_source_is_polled(listener) -> None:
    lst, env = listener
    count = iter(range(1000))
    with ServiceNotifier(env=env, status_source=lambda: f"parts {next(count)}", status_interval_s=0.1) as svc:
        feeder = Feeder(svc)
        svc.ready()
        lst.wait_for("STATUS=parts 0", 2)
        lst.wait_for("STATUS=parts 1", 2)
        feeder.close()


def test_a_receiver_that_stops_reading_cannot_block_the_sender(tmp_path: Path) -> None:
    """The receiver's queue full (it stopped reading): a send gives up after SEND_TIMEOUT_S instead of blocking
    for ever (which would hold up the STOPPING=1 of a shutdown); it says False, and sending works again once the
    receiver reads."""
    from inspector.service.notify import SEND_TIMEOUT_S

    path = str(tmp_path / "full.sock")
    lst = Listener(path)  # bound, never read until the end
    n = Notifier(path)
    try:
        sent = 0
        t0 = time.monotonic()
        while n.send("WATCHDOG=1"):
            sent += 1
            assert sent < 10_000, "the queue never filled"
        took = time.monotonic() - t0
        assert sent >= 1 and took >= SEND_TIMEOUT_S * 0.9, (sent, took)
        assert took < SEND_TIMEOUT_S + 2.0, took  # gave up, did not block
        assert lst.next(1.0) == "WATCHDOG=1"  # the receiver reads again ...
        assert n.send("STOPPING=1")  # ... and there is room
    finally:
        n.close()
        lst.close()

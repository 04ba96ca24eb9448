"""Link faults over a real pty: lost ACKs, NAKs, garbage, bad checksums, a cable pulled and plugged back."""

from __future__ import annotations

import os
import select
import time

import pytest
from gate_kit import FAST, make_part

from engines.errors import UserError
from inspector.config import GateConfig, LogConfig
from inspector.gate import open_actuator
from inspector.gate import protocol as P


def test_lost_acks_are_retried_and_the_part_fires_once(line) -> None:
    ln = line()
    ln.wait_running()
    ln.sim.drop_acks = 2  # the controller schedules the command but its ACK never arrives, twice
    ln.actuator.on_part(make_part(1, True))
    assert ln.results.wait(1, timeout=3.0)
    r = ln.results.by_part[1]
    assert r.status == "fired" and r.retries >= 1 and r.reason == "ACK timeout"
    assert ln.actuator.stats["ack_timeouts"] >= 1
    assert [e["part"] for e in ln.sim.events if e["event"] == "fire"] == [1]  # retries are idempotent


def test_nak_is_retried_within_the_deadline(line) -> None:
    ln = line()
    ln.wait_running()
    ln.sim.nak_next, ln.sim.nak_reason = 1, "FULL"
    ln.actuator.on_part(make_part(2, True))
    assert ln.results.wait(1, timeout=3.0)
    r = ln.results.by_part[2]
    assert (r.status, r.nacks, r.reason) == ("fired", 1, "NAK FULL") and r.retries >= 1


def test_a_controller_that_never_acknowledges_is_reported(line) -> None:
    ln = line()
    ln.wait_running()
    ln.sim.nak_next, ln.sim.nak_reason = 10**6, "RANGE"  # refuses everything
    ln.actuator.on_part(make_part(3, True))
    assert ln.results.wait(1, timeout=3.0)
    r = ln.results.by_part[3]
    assert r.acked_ns is None and r.nacks >= 2  # retried until the deadline
    # then the host held the controller in fail-safe (HOLD REJECT_UNACKED): diverted all the same, on record
    assert r.status == "failsafe" and r.reason == "NAK RANGE; gate held: REJECT_UNACKED", r
    assert ln.actuator.stats["missed"] == 0 and 3 not in ln.sim.fired and ln.sim.diverted_at(r.gate_ns, 0)


def test_checksum_errors_from_the_controller_are_counted(line) -> None:
    ln = line()
    ln.wait_running()
    ln.sim.garble_next = 5  # heartbeats and the ACK arrive with a wrong checksum
    ln.actuator.on_part(make_part(4, True))
    assert ln.results.wait(1, timeout=3.0)
    assert ln.results.by_part[4].status == "fired"  # the retry's ACK or the FIRED echo gets through
    assert ln.actuator.stats["rx_errors"] >= 5


def test_garbage_from_the_controller_does_not_break_the_link(line) -> None:
    ln = line()
    ln.wait_running()
    os.write(ln.link.master, b"\x00\xff\xfe garbage $$$ *ZZ\n\r\n$12,ACK*")  # noise, half lines
    ln.actuator.on_part(make_part(5, True))
    assert ln.results.wait(1, timeout=3.0)
    assert ln.results.by_part[5].status == "fired"


def test_controller_naks_bad_lines_from_the_host(line, tmp_path) -> None:
    """Act as the host by hand on the pty: a bad checksum gets NAK ?,CRC; noise then a good line gets ACK."""
    ln = line()
    ln.actuator.close(drain_s=0.0)  # we are the host now
    fd = os.open(ln.link.port, os.O_RDWR | os.O_NOCTTY)
    try:
        framer = P.LineFramer()

        def expect(type_: str, timeout: float = 2.0) -> P.Message:
            end = time.monotonic() + timeout
            while time.monotonic() < end:
                if select.select([fd], [], [], 0.05)[0]:
                    for raw in framer.feed(os.read(fd, 4096)):
                        msg = P.decode(raw, P.CTRL_TYPES)
                        if msg.type == type_:
                            return msg
            raise AssertionError(f"no {type_} within {timeout} s")

        bad = P.encode(9, P.REJ, 77, 100)
        os.write(fd, bad[:-3] + (b"00" if bad[-3:-1] != b"00" else b"11") + b"\n")
        assert expect(P.NAK).fields == ("?", "CRC")
        os.write(fd, b"\xff\x00noise" + P.encode(10, P.STQ))
        assert expect(P.ACK).fields == ("10",)
        os.write(fd, P.encode(11, "ZAP"))
        assert expect(P.NAK).fields == ("11", "UNKNOWN")
        assert ln.sim.counters["crc_errors"] == 1 and ln.sim.counters["rx_errors"] == 2
    finally:
        os.close(fd)


def test_unplug_and_replug_parts_in_between_failsafe_and_logged(line, tmp_path) -> None:
    from inspector.defectlog import open_log
    from inspector.defectlog.query import open_db

    ln = line()
    log = open_log(LogConfig(db=str(tmp_path / "log.db")), "model", "cfg")
    ln.extra_sinks.append(log.gate_result)

    def send(i: int) -> None:
        p = make_part(i, i % 2 == 0)
        ln.actuator.on_part(p)
        log.on_part(p)

    ln.wait_running()
    for i in range(4):
        send(i)  # before: normal
    assert ln.results.wait(4, timeout=3.0)
    ln.link.unplug()  # USB adapter pulled
    assert ln.sim.wait_for(lambda s: s.mode == P.MODE_DIVERT, timeout=3.0)  # the controller noticed
    for i in range(4, 10):
        send(i)  # during the outage: the controller's fail-safe diverts every part
    assert ln.results.wait(10, timeout=3.0)
    ln.link.plug()  # same path, a new pty: the actuator reopens it with backoff
    assert ln.sim.wait_for(lambda s: s.mode == P.MODE_RUN, timeout=5.0)
    for i in range(10, 14):
        send(i)
    assert ln.results.wait(14, timeout=3.0)
    log.close()

    status = {i: ln.results.by_part[i].status for i in range(14)}
    assert all(status[i] == ("fired" if i % 2 == 0 else "passed") for i in (0, 1, 2, 3, 10, 11, 12, 13)), status
    assert all(status[i] == "failsafe" for i in range(4, 10)), status
    travel = ln.actuator.travel_ns
    for i in range(4, 10):  # and the simulator really was holding the diverter when each reached the gate
        gate_ns = ln.results.by_part[i].gate_ns
        assert ln.sim.diverted_at(gate_ns, 0), f"part {i} at {gate_ns}, holds {ln.sim.holds()}"
    assert travel > 0 and ln.actuator.stats["reconnects"] == 1 and ln.actuator.stats["link_lost"] >= 1
    con = open_db(tmp_path / "log.db")
    rows = {r["part_id"]: dict(r) for r in con.execute("SELECT * FROM parts")}
    assert len(rows) == 14
    assert [rows[i]["gate_status"] for i in range(4, 10)] == ["failsafe"] * 6
    assert all(rows[i]["reject_fired"] == 1 for i in range(4, 10))  # diverted by the fail-safe
    assert rows[0]["reject_sent"] == rows[0]["reject_acked"] == rows[0]["reject_fired"] == 1


def test_stop_mode_stops_the_line_when_heartbeats_stop(line) -> None:
    ln = line(fail_safe="stop")
    ln.wait_running()
    ln.actuator.close(drain_s=0.0)  # the host goes away: no more heartbeats
    assert ln.sim.wait_for(lambda s: s.mode == P.MODE_STOP, timeout=3.0)
    assert [e["reason"] for e in ln.sim.events if e["event"] == "mode"][-1] == "HB_TIMEOUT"


def test_the_host_notices_a_silent_controller(line) -> None:
    ln = line()
    ln.wait_running()
    ln.sim.silent, ln.sim.drop_acks = True, 10**6  # wire intact, controller mute
    assert ln.actuator.link_down.wait(3.0)
    assert not ln.actuator.connected.is_set() and ln.actuator.stats["link_lost"] >= 1
    ln.actuator.on_part(make_part(6, False, latency_ms=0))
    assert ln.results.wait(1, timeout=3.0)
    assert ln.results.by_part[6].status == "failsafe"


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (dict(camera_to_gate_mm=20.0), "ms of belt travel"),  # 100 ms of travel < 50 + 300
        (dict(belt_speed_mm_s=2000.0), "ms of belt travel"),
        (dict(timebase="encoder"), "counts_per_mm"),
    ],
)
def test_a_gate_too_close_is_refused(overrides: dict, match: str) -> None:
    cfg = GateConfig(**FAST)
    with pytest.raises(ValueError, match=match):
        GateConfig(**{**cfg.model_dump(), **overrides})


def test_too_close_in_a_config_file_names_the_line(tmp_path) -> None:
    from inspector.config import load_config

    f = tmp_path / "line.yaml"
    f.write_text("gate:\n  port: sim\n  camera_to_gate_mm: 50\n  belt_speed_mm_s: 500\n")
    with pytest.raises(UserError, match=r"line.yaml:1: field 'gate'.*move the gate further downstream"):
        load_config(f)


def test_open_actuator_none_without_a_port_and_sim_works() -> None:
    assert open_actuator(GateConfig()) is None
    got = []
    gate = open_actuator(GateConfig(**FAST, port="sim"), got.append)
    try:
        assert gate.actuator.running.wait(3.0)
        gate.on_part(make_part(1, True))
    finally:
        gate.close()  # drains: waits for the part to pass the gate
    assert [r.status for r in got] == ["fired"], (got, gate.stats, gate.sim.events[-6:])


def test_loop_url_opens_and_reports_parts_failsafe() -> None:
    """loop:// has no controller behind it: nothing acknowledges, so every part counts as fail-safe."""
    got = []
    gate = open_actuator(GateConfig(**FAST, port="loop://"), got.append)
    gate.on_part(make_part(1, True))
    gate.close()
    assert [r.status for r in got] == ["failsafe"] and gate.stats["rx_errors"] > 0  # our own lines echoed


def test_a_missing_device_is_a_user_error(tmp_path) -> None:
    with pytest.raises(UserError, match=r"gate.port .*ttyNOPE: no such serial port"):
        open_actuator(GateConfig(**FAST, port=str(tmp_path / "ttyNOPE")))


def test_spy_url_logs_the_traffic(tmp_path) -> None:
    """pyserial's spy:// wrapper around the pty: the gate works and every byte is in the spy's hex dump."""
    from gate_kit import Results

    from inspector.gate.actuator import GateActuator
    from inspector.gate.sim import GateSimulator, PtyLink

    link = PtyLink(tmp_path / "ttySPY")
    sim = GateSimulator(link).start()
    dump = tmp_path / "spy.txt"
    results = Results()
    act = GateActuator(GateConfig(**FAST), f"spy://{link.port}?file={dump}", results)
    try:
        assert act.running.wait(3.0)
        act.on_part(make_part(1, True))
        assert results.wait(1, timeout=3.0)
    finally:
        act.close(drain_s=0.0)
        sim.close()
        link.close()
    assert results.by_part[1].status == "fired"
    text = dump.read_text()
    assert "REJT" in text and "FIRED" in text  # both directions, readable


def test_gate_sim_serves_on_an_existing_device() -> None:
    """`gate-sim --port /dev/pts/N`: the simulator on a tty it did not create (here: a pty we hold the master of)."""
    from inspector.gate.sim import DeviceLink, GateSimulator

    master, slave = os.openpty()
    link = DeviceLink(os.ttyname(slave))
    sim = GateSimulator(link).start()
    try:
        os.write(master, P.encode(1, P.STQ))
        framer, got, end = P.LineFramer(), [], time.monotonic() + 3.0
        while time.monotonic() < end and not any(m.type == P.ST for m in got):
            if select.select([master], [], [], 0.05)[0]:
                got += [P.decode(raw) for raw in framer.feed(os.read(master, 4096))]
        assert [m.fields for m in got if m.type == P.ACK] == [("1",)]
        assert next(m for m in got if m.type == P.ST).fields[0] == P.MODE_DIVERT  # booted in fail-safe
    finally:
        sim.close()
        link.close()
        os.close(master)
        os.close(slave)


def test_gate_sim_cli_refuses_a_file_that_is_not_a_tty(tmp_path, capsys) -> None:
    from inspector.cli import main

    f = tmp_path / "plain.txt"
    f.write_text("x")
    assert main(["gate-sim", "--port", str(f), "--duration", "0.1"]) == 1
    assert "not a serial device or pty" in capsys.readouterr().err

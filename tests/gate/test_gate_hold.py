"""The host-commanded hold (HOLD ... RUN): codec, simulator, actuator, and the reference firmware on a pty."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from gate_kit import FAST, Results, make_part
from test_gate_firmware import host_firmware  # noqa: F401 - the module fixture that builds the sketch on the PC

from inspector.config import GateConfig
from inspector.gate import protocol as P
from inspector.gate.actuator import GateActuator
from inspector.gate.sim import PtyLink
from tests.waiting import wait_for


def _modes(sim) -> list[tuple[str, str]]:
    return [(e["mode"], e["reason"]) for e in sim.events if e["event"] == "mode"]


def test_hold_round_trip_and_checksum() -> None:
    line = P.encode(7, P.HOLD, P.HOLD_SOURCE_STALL)
    assert line == b"$7,HOLD,SOURCE_STALL*" + f"{P.crc8(b'7,HOLD,SOURCE_STALL'):02X}".encode() + b"\n"
    msg = P.decode(line, P.HOST_TYPES)
    assert (msg.seq, msg.type, msg.fields) == (7, "HOLD", ("SOURCE_STALL",))
    assert P.decode(P.encode(8, P.RUN), P.HOST_TYPES).type == "RUN"
    bad = line.replace(b"STALL", b"STALK")  # one byte changed: the checksum no longer matches
    for wrong, reason in ((bad, "CRC"), (P.encode(9, P.HOLD).rstrip(), "SYNTAX")):  # no reason field
        try:
            P.decode(wrong, P.HOST_TYPES)
        except P.ProtocolError as exc:
            assert exc.reason == reason
        else:
            raise AssertionError(f"{wrong!r} decoded")


def test_simulator_diverts_every_part_while_held_and_resumes_after_run(line) -> None:
    ln = line()
    ln.wait_running()
    ln.actuator.hold(P.HOLD_SOURCE_STALL)
    ln.actuator.hold(P.HOLD_SOURCE_STALL)  # idempotent: one hold, one HOLD line
    assert ln.sim.wait_for(lambda s: s.mode == P.MODE_DIVERT, 2.0), ln.sim.events[-5:]
    assert _modes(ln.sim)[-1] == (P.MODE_DIVERT, P.HOST_HOLD)
    assert [e["reason"] for e in ln.sim.events if e["event"] == "hold"] == [P.HOLD_SOURCE_STALL]
    ok = make_part(1, False)  # an OK part reaching the gate during the hold goes to the reject bin all the same
    ln.actuator.on_part(ok)
    assert ln.results.wait(1, timeout=3.0)
    r = ln.results.by_part[1]
    assert (r.status, r.reason) == ("failsafe", "gate held: SOURCE_STALL"), r
    assert ln.sim.diverted_at(r.gate_ns, 0), ln.sim.holds()
    assert not ln.actuator.running.is_set() and ln.actuator.held.is_set()
    ln.actuator.release()
    assert ln.actuator.running.wait(2.0), ln.sim.events[-5:]
    assert not ln.actuator.held.is_set() and _modes(ln.sim)[-1] == (P.MODE_RUN, "HOST")
    ok2, bad = make_part(2, False), make_part(3, True)  # back to normal: OK passes, a defect fires
    ln.actuator.on_part(ok2)
    ln.actuator.on_part(bad)
    assert ln.results.wait(3, timeout=3.0)
    assert (ln.results.by_part[2].status, ln.results.by_part[3].status) == ("passed", "fired")
    assert not ln.sim.diverted_at(ln.results.by_part[2].gate_ns, 0)
    assert ln.actuator.stats["holds"] == 1 and ln.actuator.stats["releases"] == 1, ln.actuator.stats


def test_stop_kind_fail_safe_stops_the_line_on_hold(line) -> None:
    ln = line(fail_safe="stop")  # the host's CFG says S: fail-safe stops the line
    ln.wait_running()
    assert ln.sim.fail_safe == P.MODE_STOP
    # SOURCE_STALL holds until told: REJECT_UNACKED with no part short of the gate releases itself on the next
    # service, so the STOP could come and go before the check looked (failed once in CI that way)
    ln.actuator.hold(P.HOLD_SOURCE_STALL)
    assert ln.sim.wait_for(lambda s: s.mode == P.MODE_STOP, 2.0), ln.sim.events[-5:]
    assert _modes(ln.sim)[-1] == (P.MODE_STOP, P.HOST_HOLD)
    ln.actuator.release(P.HOLD_SOURCE_STALL)
    assert ln.sim.wait_for(lambda s: s.mode == P.MODE_RUN, 2.0), ln.sim.events[-5:]


def test_release_after_frames_flow_waits_one_belt_travel(line) -> None:
    """on_line_state(True): parts that passed the camera unseen are still on the belt; the hold stays."""
    ln = line()
    ln.wait_running()
    ln.actuator.on_line_state(False, P.HOLD_SOURCE_STALL)
    assert ln.sim.wait_for(lambda s: s.mode == P.MODE_DIVERT, 2.0)
    t_back = time.monotonic_ns()
    ln.actuator.on_line_state(True, P.HOLD_SOURCE_STALL)
    assert ln.sim.wait_for(lambda s: s.mode == P.MODE_RUN, 3.0)
    hold = ln.sim.holds()[-1]
    assert hold[1] >= t_back + ln.actuator.travel_ns, (hold[1] - t_back) / 1e6  # a part unseen at t_back is out


def test_unacknowledgeable_reject_holds_the_gate_until_it_has_passed(line) -> None:
    """A NAK storm longer than the belt: the reject never gets through, so the actuator holds the controller
    in fail-safe before the part's gate time (the part is diverted, logged failsafe, not missed); once it
    has passed the gate and the controller answers again, the hold is released and rejects fire again."""
    ln = line()
    ln.wait_running()
    ln.sim.nak_next, ln.sim.nak_reason = 10**6, "FULL"
    p = make_part(1, True)
    ln.actuator.on_part(p)
    assert ln.actuator.held.wait(2.0), ln.actuator.stats
    assert ln.sim.wait_for(lambda s: s.mode == P.MODE_DIVERT, 2.0)
    assert ln.results.wait(1, timeout=3.0)
    r = ln.results.by_part[1]
    assert r.status == "failsafe" and r.acked_ns is None and r.nacks >= 1, r
    assert r.reason == "NAK FULL; gate held: REJECT_UNACKED", r
    assert ln.sim.diverted_at(r.gate_ns, 0) and 1 not in ln.sim.fired, ln.sim.holds()
    hold = [h for h in ln.sim.holds() if h[0] <= r.gate_ns][-1]  # the last one begun before its gate time
    assert hold[0] < r.gate_ns and (hold[1] is None or hold[1] > r.gate_ns), (hold, r.gate_ns)
    assert ln.actuator.stats["missed"] == 0 and ln.actuator.stats["holds"] == 1
    ln.sim.nak_next = 0  # the controller recovers: released, RUN, and the next defect fires by command
    assert ln.actuator.running.wait(3.0), ln.sim.events[-5:]
    assert not ln.actuator.held.is_set() and ln.actuator.stats["releases"] == 1
    ln.actuator.on_part(make_part(2, True))
    assert ln.results.wait(2, timeout=3.0)
    assert ln.results.by_part[2].status == "fired", ln.results.by_part[2]


def test_firmware_holds_and_runs_again(host_firmware: Path, tmp_path: Path) -> None:  # noqa: F811
    """The reference sketch (host build) obeys HOLD: it leaves RUN and holds the diverter out (pin 7 high)
    until RUN; then it drops the diverter again."""
    link = PtyLink(tmp_path / "ttyFWH")
    proc = subprocess.Popen(
        [str(host_firmware)],
        env={**os.environ, "GATE_FD": str(link.master)},
        pass_fds=(link.master,),
        stderr=subprocess.PIPE,
        text=True,
    )
    act = GateActuator(GateConfig(**FAST), link.port, Results(), reconnect_max_s=0.1)
    try:
        assert act.running.wait(5.0), "firmware never reached RUN"
        t_hold = time.monotonic_ns()
        act.hold(P.HOLD_SOURCE_STALL)
        assert wait_for(lambda: not act.running.is_set(), 3.0), "firmware never left RUN on HOLD"
        t_release = time.monotonic_ns()
        act.release()
        assert act.running.wait(3.0), "firmware never went back to RUN"
        t_run = time.monotonic_ns()
    finally:
        act.close(drain_s=0.0)
        proc.terminate()
        _, err = proc.communicate(timeout=5)
        link.close()
    pin7 = [(int(w[3]), int(w[2])) for w in (ln.split() for ln in err.splitlines()) if w[:2] == ["PIN", "7"]]
    rise = [t for t, v in pin7 if v == 1 and t_hold < t < t_release]
    assert rise, pin7[-5:]
    assert not [t for t, v in pin7 if v == 0 and rise[0] < t < t_release], "diverter dropped during the hold"
    assert [t for t, v in pin7 if v == 0 and t_release < t < t_run + 1_000_000_000], "diverter not dropped on RUN"


def test_serial_sim_gate_forwards_line_state() -> None:
    """`--serial sim` wraps the actuator: the pipeline's on_line_state reaches it (and so the controller)."""
    from inspector.gate import SimulatedGate

    gate = SimulatedGate(GateConfig(**{**FAST, "port": "sim"}))
    try:
        assert gate.actuator.running.wait(3.0)
        gate.on_line_state(False, P.HOLD_SOURCE_STALL)
        assert gate.sim.wait_for(lambda s: s.mode == P.MODE_DIVERT, 2.0), gate.sim.events[-5:]
        assert _modes(gate.sim)[-1] == (P.MODE_DIVERT, P.HOST_HOLD)
    finally:
        gate.actuator.close(drain_s=0.0)
        gate.sim.close()
        gate.link.close()

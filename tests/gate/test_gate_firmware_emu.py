"""The reference firmware against the inspector's actuator over a real pty, on both backends: the PC build of
the sketch, and the binary compiled for the ATmega328P run in simavr (its timers, interrupts, USART and
watchdog emulated, paced to real time). On the emulated binary the diverter pin is also read on the
emulated clock, so a test can say when the gate fired relative to the time it was commanded to fire."""

from __future__ import annotations

import threading
import time

import pytest
import serial
from firmware_kit import DIVERTER, AvrController, controller, firmware_builds, gate_emu, wait_until  # noqa: F401
from gate_kit import FAST, FRAME_NS, Results, make_part

from inspector.config import GateConfig
from inspector.gate import protocol as P
from inspector.gate.actuator import GateActuator

CYCLES_PER_MS = gate_emu.F_CPU // 1000
# A fire waits for the loop() pass in progress when its millisecond begins: an idle pass is ~900 cycles (56 us),
# one that handles a REJT ~9,000, one that fires and queues FIRED up to ~19,000 (bench/firmware_emu.py: over
# 1,000 parts at 30/s, fire - commanded p99 0.59 ms, max 0.79 ms). Later than 1.5 ms means loop() blocked
# (a blocking write of one reply line alone takes 2 ms at 115200 baud).
FIRE_BOUND_CYCLES = CYCLES_PER_MS * 3 // 2


def feed(actuator: GateActuator, n: int, rate_hz: float, is_defect) -> list:
    """Parts at a steady rate from a separate 'inspection' thread, as the pipeline would."""
    parts: list = []

    def run() -> None:
        t0 = time.monotonic()
        for i in range(n):
            p = make_part(i, is_defect(i))
            parts.append(p)
            actuator.on_part(p)
            delay = t0 + (i + 1) / rate_hz - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # pacing the producer, not waiting for a result

    th = threading.Thread(target=run)
    th.start()
    th.join(timeout=n / rate_hz + 5)
    return parts


def rises(edges: list[tuple[int, int]], after_ns: int = 0) -> list[int]:
    return [t for t, v in edges if v == 1 and t > after_ns]


@pytest.fixture
def avr(firmware_builds: dict, tmp_path):  # noqa: F811
    """The emulated binary only (tests of what only the real MCU has: the watchdog, INT0)."""
    built = firmware_builds["avr"]
    if isinstance(built, str):
        pytest.skip(built)
    c = AvrController(tmp_path, *built)
    yield c
    c.close()


def test_line_every_defect_diverted_in_its_window_no_ok_part(controller) -> None:  # noqa: F811
    """3 s of line at 30 parts/s, every third a defect, REJT on the controller's clock (the default)."""
    results = Results()
    act = GateActuator(GateConfig(**FAST), controller.port, results, reconnect_max_s=0.1)
    try:
        assert act.running.wait(5.0), "firmware never reached RUN"
        t_run = time.monotonic_ns()
        parts = feed(act, 90, 30.0, lambda i: i % 3 == 0)
        assert results.wait(len(parts), timeout=5.0), f"{len(results.by_part)} of {len(parts)} results"
    finally:
        act.close(drain_s=0.0)
    defects = [p for p in parts if p.rejected]
    fired = rises(controller.edges(DIVERTER), t_run)
    # one pulse per defect during the run (the last may be followed by the fail-safe hold once the host left)
    last_gate = parts[-1].t_capture_ns + act.travel_ns
    assert len([t for t in fired if t <= last_gate + FRAME_NS]) == len(defects), (len(fired), len(defects))
    for p in parts:
        r, gate_ns = results.by_part[p.part_id], p.t_capture_ns + act.travel_ns
        if p.rejected:
            assert r.status == "fired", (p.part_id, r)
            edge = min(fired, key=lambda t: abs(t - gate_ns))
            assert abs(edge - gate_ns) <= FRAME_NS, f"part {p.part_id} fired {(edge - gate_ns) / 1e6:+.1f} ms off"
        else:
            assert r.status == "passed", (p.part_id, r)
            assert not controller.diverting_at(gate_ns), f"OK part {p.part_id} diverted"
    assert act.stats["missed"] == 0 and act.stats["rx_errors"] == 0, act.stats
    if isinstance(controller, AvrController):  # the same fires on the emulated clock, against the command
        tr = controller.trace()
        commanded = {int(ln.fields[2]): int(ln.fields[3]) for ln in tr.rx if ln.type == P.REJT}
        assert set(commanded) == {p.part_id for p in defects}  # sent on the controller's clock, once each
        ups = [e for e in tr.pin(DIVERTER) if e.value == 1 and e.wall_ns > t_run]
        for p, e in zip(defects, ups, strict=False):
            reached = e.reached_cycle(commanded[p.part_id])  # millis() turned to the commanded value
            assert reached is not None, (p.part_id, e, commanded[p.part_id])  # fired in that very millisecond
            late = e.cycle - reached
            assert 0 <= late <= FIRE_BOUND_CYCLES, f"part {p.part_id} fired {late / CYCLES_PER_MS:.3f} ms late"
            # FIRED,part,late_ms: 0, or 1 where millis() skipped the commanded value (docs/firmware.md)
            assert results.by_part[p.part_id].fire_late_ms == (0 if e.millis == commanded[p.part_id] else 1)


BAD_LINES = [  # (line, NAK fields or None for silently dropped, counted as an rx error)
    (b"$1,REJ,42,100*00", ("?", "CRC"), True),  # wrong checksum
    (b"$1,REJ,42,100", ("?", "SYNTAX"), True),  # no checksum
    (b"$1,REJ,42,100*G1", ("?", "SYNTAX"), True),  # checksum not hex
    (b"$" + b"x,REJ*" + f"{P.crc8(b'x,REJ'):02X}".encode(), ("?", "SYNTAX"), True),  # sequence not a number
    (P.encode(2, "FOO", 1).rstrip(), ("2", "UNKNOWN"), False),
    (P.encode(3, P.REJ, 42).rstrip(), ("3", "SYNTAX"), False),  # one field short
    (P.encode(4, P.REJ, 42, 1, 2).rstrip(), ("4", "SYNTAX"), False),  # one field too many
    (P.encode(5, P.CFG, "X", 600, 50, 200).rstrip(), ("5", "RANGE"), False),  # fail-safe kind neither D nor S
    (P.encode(6, P.HOLD).rstrip(), ("6", "SYNTAX"), False),  # HOLD needs a reason
    (b"$" + b"9" * 90, None, True),  # overlong: dropped up to the next '$'
]


def _replies(ser: serial.Serial, want: int, timeout: float) -> list[P.Message]:
    framer, out, end = P.LineFramer(), [], time.monotonic() + timeout
    while time.monotonic() < end and len(out) < want:
        for raw in framer.feed(ser.read(max(1, ser.in_waiting))):
            msg = P.decode(raw, P.CTRL_TYPES)
            if msg.type != P.HB:
                out.append(msg)
    return out


def test_bad_lines_are_refused_with_the_right_nak(controller) -> None:  # noqa: F811
    with serial.Serial(controller.port, 115200, timeout=0.05) as ser:
        assert _replies(ser, 1, 10.0)[0].fields == ("DIVERT", "BOOT")  # it booted (in fail-safe)
        for line, nak, _ in BAD_LINES:
            ser.write(line + b"\n")
            if nak is None:
                continue
            got = _replies(ser, 1, 2.0)
            assert got and (got[0].type, got[0].fields) == (P.NAK, nak), (line, got)
        ser.write(P.encode(7, P.STQ))  # still listening: acknowledged, and its counters say what it saw
        ack, st = _replies(ser, 2, 2.0)
        errors = sum(counted for _, _, counted in BAD_LINES)
        assert (ack.type, ack.fields) == (P.ACK, ("7",)), ack
        assert st.type == P.ST and st.fields[0] == P.MODE_DIVERT and int(st.fields[4]) == errors, st


def test_heartbeat_loss_enters_fail_safe_within_link_timeout(controller) -> None:  # noqa: F811
    act = GateActuator(GateConfig(**FAST), controller.port, Results(), reconnect_max_s=0.1)
    try:
        assert act.running.wait(5.0), "firmware never reached RUN"
        t_run = time.monotonic_ns()
        assert wait_until(lambda: not controller.diverting_at(time.monotonic_ns()), 1.0), "diverter out in RUN"
    finally:
        act.close(drain_s=0.0)  # the host goes silent
    t_silent = time.monotonic_ns()
    timeout_ns = int(FAST["link_timeout_ms"] * 1e6)
    assert wait_until(lambda: rises(controller.edges(DIVERTER), t_run), 3.0), "no fail-safe"
    t_hold = rises(controller.edges(DIVERTER), t_run)[0]
    assert t_hold - t_silent <= timeout_ns + 100_000_000, (t_hold - t_silent) / 1e6  # host clock: loose
    if isinstance(controller, AvrController):  # emulated clock: from the last line it read, exactly
        tr = controller.trace()
        up = next(e for e in tr.pin(DIVERTER) if e.value == 1 and e.wall_ns == t_hold)
        last_rx = max(ln.cycle for ln in tr.rx if ln.cycle < up.cycle)
        waited_ms = (up.cycle - last_rx) / CYCLES_PER_MS
        assert FAST["link_timeout_ms"] < waited_ms <= FAST["link_timeout_ms"] + 2.0, waited_ms
        assert controller.emu.wait_for(lambda t: any(ln.fields[1:] == ["MODE", "DIVERT", "HB_TIMEOUT"]
                                                     for ln in t.tx if ln.cycle >= up.cycle), 3.0), tr.tx[-3:]


def test_hold_diverts_until_run(controller) -> None:  # noqa: F811
    act = GateActuator(GateConfig(**FAST), controller.port, Results(), reconnect_max_s=0.1)
    try:
        assert act.running.wait(5.0), "firmware never reached RUN"
        t_hold = time.monotonic_ns()
        act.hold(P.HOLD_SOURCE_STALL)
        assert wait_until(lambda: not act.running.is_set(), 3.0), "firmware never left RUN on HOLD"
        assert wait_until(lambda: controller.diverting_at(time.monotonic_ns()), 1.0)
        t_release = time.monotonic_ns()
        act.release()
        assert act.running.wait(3.0), "firmware never went back to RUN"
        assert wait_until(lambda: not controller.diverting_at(time.monotonic_ns()), 1.0), "diverter still out"
    finally:
        act.close(drain_s=0.0)
    pin7 = controller.edges(DIVERTER)
    up = rises(pin7, t_hold)
    assert up and up[0] < t_release
    assert not [t for t, v in pin7 if v == 0 and up[0] < t < t_release], "diverter dropped during the hold"
    if isinstance(controller, AvrController):
        modes = [ln.fields[2:4] for ln in controller.trace().tx if ln.type == P.MODE]
        assert ["DIVERT", P.HOST_HOLD] in modes and modes[-1] == ["RUN", "HOST"], modes


def test_watchdog_resets_a_hung_loop_into_fail_safe(avr: AvrController) -> None:
    """The loop stops calling wdt_reset() (its wdr replaced by a jump to itself; interrupts still run): the
    AVR watchdog (250 ms) resets the MCU, which boots in fail-safe, says why, and the host brings it back."""
    results = Results()
    act = GateActuator(GateConfig(**FAST), avr.port, results, reconnect_max_s=0.1)
    try:
        assert act.running.wait(5.0), "firmware never reached RUN"
        avr.emu.hang()
        assert avr.emu.wait_for(lambda t: t.resets, 3.0), "no watchdog reset"
        tr = avr.trace()
        (hang_cycle, _), (reset_cycle, _, cause, mcusr) = tr.hangs[0], tr.resets[0]
        hung_ms = (reset_cycle - hang_cycle) / CYCLES_PER_MS
        assert cause == "WATCHDOG" and mcusr & (1 << 3), (cause, mcusr)  # WDRF
        assert 250.0 <= hung_ms <= 260.0, hung_ms  # WDTO_250MS: 32768 cycles of the 128 kHz oscillator
        # it booted again, in fail-safe, and said so
        assert avr.emu.wait_for(lambda t: any(e.value == 1 and e.cycle > reset_cycle for e in t.pin(DIVERTER)), 2.0)
        assert avr.emu.wait_for(lambda t: [ln.fields[1:] for ln in t.tx if ln.cycle > reset_cycle][:2]
                                == [["MODE", "DIVERT", "BOOT"], ["ERR", "RESET", "WATCHDOG"]], 2.0), avr.trace().tx[-3:]
        boot_up = next(e for e in avr.trace().pin(DIVERTER) if e.value == 1 and e.cycle > reset_cycle)
        assert (boot_up.cycle - reset_cycle) / CYCLES_PER_MS < 5.0  # held out within ms of the reset
        # the host re-configures it and releases it; rejects fire again
        assert wait_until(lambda: act.running.is_set() and avr.trace().rx[-1].cycle > reset_cycle, 3.0)
        act.on_part(make_part(1, True))
        assert results.wait(1, timeout=3.0)
        assert results.by_part[1].status == "fired", results.by_part[1]
    finally:
        act.close(drain_s=0.0)
    assert len(avr.trace().resets) == 1  # the reset cleared the hang: no reset loop


def test_encoder_timebase_with_pulses_on_int0(avr: AvrController) -> None:
    """REJE: encoder pulses driven on the emulated INT0 pin (2 kHz = 10 counts/mm at 200 mm/s); each defect
    fires when the firmware's count reaches the commanded one."""
    assert avr.emu.wait_for(lambda t: t.tx, 3.0), "the firmware never spoke"  # booted: INT0 attached
    avr.emu.encoder(2000)
    results = Results()
    act = GateActuator(GateConfig(**{**FAST, "timebase": "encoder", "counts_per_mm": 10.0}), avr.port, results,
                       reconnect_max_s=0.1)
    try:
        assert act.running.wait(5.0), "firmware never reached RUN"
        assert act.encoder_ready.wait(3.0), "no encoder counts in the heartbeats"
        parts = []
        for i in range(3):
            parts.append(make_part(i, True))
            act.on_part(parts[-1])
            time.sleep(0.05)  # parts 50 ms apart: pacing, not a wait for a result
        assert results.wait(3, timeout=3.0)
    finally:
        act.close(drain_s=0.0)
    tr = avr.trace()
    edge_at = dict(tr.enc)  # count since reset -> cycle of that rising edge
    for hb in (ln for ln in tr.tx if ln.type == P.HB):  # the firmware counted every edge the pin saw
        # sampled before the line went out at 11 bits per byte (1,496 cycles), less a loop pass
        sampled = hb.cycle - len(hb.text) * 1496 - CYCLES_PER_MS
        lo, hi = sum(1 for _, c in tr.enc if c < sampled), sum(1 for _, c in tr.enc if c < hb.cycle)
        assert lo <= int(hb.fields[4]) <= hi, (hb, lo, hi)
    targets = {int(ln.fields[2]): int(ln.fields[3]) for ln in tr.rx if ln.type == P.REJE}
    ups = [e for e in tr.pin(DIVERTER) if e.value == 1 and e.cycle > min(edge_at[t] for t in targets.values())]
    for p, up in zip(parts, ups, strict=False):
        assert results.by_part[p.part_id].status == "fired", results.by_part[p.part_id]
        late = up.cycle - edge_at[targets[p.part_id]]
        assert 0 <= late <= FIRE_BOUND_CYCLES, f"part {p.part_id}: {late / CYCLES_PER_MS:.3f} ms after its count"
        off = up.wall_ns - (p.t_capture_ns + act.travel_ns)
        assert abs(off) <= FRAME_NS, f"part {p.part_id} fired {off / 1e6:+.1f} ms off on the host's clock"


def test_a_saturated_link_does_not_starve_the_loop(avr: AvrController) -> None:
    """Lines back to back at the full baud rate, each answered (NAK UNKNOWN, longer than the line, so the
    firmware's transmit buffer fills too): loop() must still fire on time, heartbeat and reset the watchdog
    between lines. (A NAK storm from the host's retries does this; found by bench/firmware_emu.py.)"""
    with serial.Serial(avr.port, 115200, timeout=0.05) as ser:
        assert avr.emu.wait_for(lambda t: any(ln.type == P.HB for ln in t.tx), 3.0), "no heartbeat"
        ser.write(P.encode(1, P.CFG, "D", 5000, 20, 200) + P.encode(2, P.RUN))
        assert avr.emu.wait_for(lambda t: any(ln.fields[1:3] == [P.MODE, "RUN"] for ln in t.tx), 2.0)
        hb = [ln for ln in avr.trace().tx if ln.type == P.HB][-1]
        fire_at = int(hb.fields[5]) + 600  # on its clock: well inside the storm below
        storm = b"".join(P.encode(seq, "FOO") for seq in range(3, 1200))  # ~1.1 s of line at 115200 baud
        ser.write(P.encode(3, P.REJT, 77, fire_at) + storm)
        stop = threading.Event()

        def drain() -> None:  # the host reads what it is sent (the replies), as the actuator would
            while not stop.is_set():
                ser.read(4096)

        reader = threading.Thread(target=drain)
        reader.start()
        try:
            done = avr.emu.wait_for(lambda t: t.resets or (t.rx and t.rx[-1].fields[0] == "1199"), 10.0)
        finally:
            stop.set()
            reader.join(timeout=2)
    tr = avr.trace()
    assert done and not tr.resets, "the watchdog reset the controller: loop() starved by the serial input"
    up = next((e for e in tr.pin(DIVERTER) if e.value == 1 and e.millis >= fire_at), None)
    assert up is not None and up.reached_cycle(fire_at) is not None, (up, fire_at)
    late = up.cycle - up.reached_cycle(fire_at)
    assert 0 <= late <= FIRE_BOUND_CYCLES, f"fired {late / CYCLES_PER_MS:.3f} ms late in the storm"


def test_the_emulator_command_serves_a_pty(firmware_builds: dict, tmp_path) -> None:  # noqa: F811
    """`python firmware/emu/gate_emu.py --pty PATH`: what an integrator runs before `inspector run --serial PATH`."""
    if isinstance(firmware_builds["avr"], str):
        pytest.skip(firmware_builds["avr"])
    import subprocess
    import sys

    port, trace = tmp_path / "ttyEMU", tmp_path / "emu.trace"
    proc = subprocess.Popen([sys.executable, str(gate_emu.HERE / "gate_emu.py"), "--pty", str(port), "--trace",
                             str(trace), "--build-dir", str(tmp_path / "build")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert "running on" in proc.stdout.readline()  # built and started (blocks until then, or exits)
        with serial.Serial(str(port), 115200, timeout=0.05) as ser:
            # its boot line (queued in the pty if it booted before the port was opened): its USART is on now;
            # bytes sent before that are lost, as on a board
            assert [(m.type, m.fields) for m in _replies(ser, 1, 10.0)] == [(P.MODE, ("DIVERT", "BOOT"))]
            ser.write(P.encode(1, P.STQ))
            got = _replies(ser, 2, 10.0)
        assert [m.type for m in got] == [P.ACK, P.ST], got
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert proc.returncode == 0, proc.stderr.read()
    assert not port.exists() and gate_emu.parse_trace(trace.read_text()).end is not None  # stopped cleanly

"""The reference firmware against the inspector's actuator over a real pty, on both backends: the PC build of
the sketch, and the binary compiled for the ATmega328P run in simavr (its timers, interrupts, USART and
watchdog emulated, paced to real time). On the emulated binary the diverter pin is also read on the
emulated clock, so a test can say when the gate fired relative to the time it was commanded to fire."""

from __future__ import annotations

import threading
import time

import pytest
import serial
from firmware_kit import (  # noqa: F401
    DIVERTER,
    AvrController,
    controller,
    firmware_builds,
    gate_emu,
    require_realtime,
    wait_until,
)
from gate_kit import FAST, FRAME_NS, Results, make_part

from inspector.config import GateConfig
from inspector.gate import protocol as P
from inspector.gate.actuator import GateActuator

CYCLES_PER_MS = gate_emu.F_CPU // 1000
# A fire waits for the loop() pass in progress when its millisecond begins: an idle pass is ~900 cycles (56 us),
# one that handles a REJT ~9,000, one that fires and queues FIRED up to ~19,000 (bench/firmware_emu.py: over
# 1,000 parts at 30/s, fire - commanded p99 0.64 ms, max 0.76 ms). Later than 1.5 ms means loop() blocked
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
    if isinstance(controller, AvrController):  # on the emulated clock, against the command: whatever the load
        check_fires_on_the_emulated_clock(controller.trace(), defects, t_run)
    require_realtime(controller, "firing on the emulated clock")
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
            # out at its gate time only by its own fault: not while a defect's pulse that fired within its
            # accuracy window (FRAME_NS late at most) can still be out (pulse_ms after that fire)
            covered = any(gate_ns - FAST["pulse_ms"] * 1e6 <= t <= gate_ns for t in fired)
            assert covered or not controller.diverting_at(gate_ns), f"OK part {p.part_id} diverted"
    assert act.stats["missed"] == 0 and act.stats["rx_errors"] == 0, act.stats


def check_fires_on_the_emulated_clock(tr: gate_emu.Trace, defects: list, t_run: int) -> None:
    """Each defect's REJT was received, fired once (FIRED) and nothing else was; each fire's diverter edge came
    within FIRE_BOUND_CYCLES of the instant millis() turned to the commanded value."""
    commanded: dict[int, int] = {}
    for ln in tr.rx:
        if ln.valid and ln.type == P.REJT:
            commanded.setdefault(int(ln.fields[2]), int(ln.fields[3]))  # the one scheduled (a retry is not)
    assert set(commanded) == {p.part_id for p in defects}  # sent on the controller's clock
    fired = {int(ln.fields[2]): int(ln.fields[3]) for ln in tr.tx if ln.type == P.FIRED}
    assert sorted(fired) == sorted(commanded), (sorted(fired), sorted(commanded))  # no OK part, no defect left
    pin7 = [e for e in tr.pin(DIVERTER) if e.wall_ns > t_run]
    for part, t in commanded.items():
        edge = next((e for e in pin7 if e.value == 1 and e.millis >= t), None)
        reached = edge.reached_cycle(t) if edge is not None else None
        if reached is None:  # no edge of its own: only if the diverter was already out (a pulse extended)
            before = [e for e in pin7 if e.millis <= t]
            assert before and before[-1].value == 1, f"part {part}: no diverter edge in its millisecond ({t})"
            continue
        late = edge.cycle - reached
        assert 0 <= late <= FIRE_BOUND_CYCLES, f"part {part} fired {late / CYCLES_PER_MS:.3f} ms late"
        # FIRED,part,late_ms: 0, or 1 where millis() skipped the commanded value (docs/firmware.md)
        assert fired[part] == (0 if edge.millis == t else 1), (part, fired[part], edge, t)


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


def _heartbeat(ser: serial.Serial, timeout: float) -> P.Message | None:
    """The controller's next heartbeat (its boot line may have come before the port was opened: pyserial
    drops what was waiting)."""
    framer, end = P.LineFramer(), time.monotonic() + timeout
    while time.monotonic() < end:
        for raw in framer.feed(ser.read(max(1, ser.in_waiting))):
            msg = P.decode(raw, P.CTRL_TYPES)
            if msg.type == P.HB:
                return msg
    return None


def test_bad_lines_are_refused_with_the_right_nak(controller) -> None:  # noqa: F811
    with serial.Serial(controller.port, 115200, timeout=0.05) as ser:
        hb = _heartbeat(ser, 10.0)
        assert hb is not None and hb.fields[0] == P.MODE_DIVERT, hb  # up, in fail-safe (it boots so)
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
    if isinstance(controller, AvrController):  # emulated clock: from the last line it read, exactly
        tr = controller.trace()
        up = next(e for e in tr.pin(DIVERTER) if e.value == 1 and e.wall_ns == t_hold)
        last_rx = max(ln.cycle for ln in tr.rx if ln.cycle < up.cycle)
        waited_ms = (up.cycle - last_rx) / CYCLES_PER_MS
        assert FAST["link_timeout_ms"] < waited_ms <= FAST["link_timeout_ms"] + 2.0, waited_ms
        assert controller.emu.wait_for(
            lambda t: any(ln.fields[1:] == ["MODE", "DIVERT", "HB_TIMEOUT"] for ln in t.tx if ln.cycle >= up.cycle), 3.0
        ), tr.tx[-3:]
    require_realtime(controller, "fail-safe on the emulated clock")
    assert t_hold - t_silent <= timeout_ns + 100_000_000, (t_hold - t_silent) / 1e6  # host clock: loose


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
        assert avr.emu.wait_for(
            lambda t: (
                [ln.fields[1:] for ln in t.tx if ln.cycle > reset_cycle][:2]
                == [["MODE", "DIVERT", "BOOT"], ["ERR", "RESET", "WATCHDOG"]]
            ),
            2.0,
        ), avr.trace().tx[-3:]
        boot_up = next(e for e in avr.trace().pin(DIVERTER) if e.value == 1 and e.cycle > reset_cycle)
        assert (boot_up.cycle - reset_cycle) / CYCLES_PER_MS < 5.0  # held out within ms of the reset
        # the host re-configures it and releases it; rejects fire again
        assert wait_until(lambda: act.running.is_set() and avr.trace().rx[-1].cycle > reset_cycle, 3.0)
        act.on_part(make_part(1, True))
        assert results.wait(1, timeout=3.0)
        assert avr.emu.wait_for(lambda t: any(ln.type == P.FIRED and ln.fields[2] == "1" for ln in t.tx), 3.0)
    finally:
        act.close(drain_s=0.0)
    assert len(avr.trace().resets) == 1  # the reset cleared the hang: no reset loop
    require_realtime(avr, "the watchdog reset and the recovery")
    assert results.by_part[1].status == "fired", results.by_part[1]


def test_encoder_timebase_with_pulses_on_int0(avr: AvrController) -> None:
    """REJE: encoder pulses driven on the emulated INT0 pin (2 kHz = 10 counts/mm at 200 mm/s); each defect
    fires when the firmware's count reaches the commanded one."""
    assert avr.emu.wait_for(lambda t: t.tx, 3.0), "the firmware never spoke"  # booted: INT0 attached
    avr.emu.encoder(2000)
    results = Results()
    act = GateActuator(
        GateConfig(**{**FAST, "timebase": "encoder", "counts_per_mm": 10.0}), avr.port, results, reconnect_max_s=0.1
    )
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
    for i, hb in enumerate(tr.tx):  # the firmware counted every edge the pin saw
        if hb.type != P.HB:
            continue
        # sampled before the line went out at 11 bits per byte (1,496 cycles), less a loop pass; a line sent
        # back to back before it (an ACK or FIRED) may have held it in the queue, so go back over those too
        start, j = hb.cycle - len(hb.text) * 1496, i - 1
        while j >= 0 and tr.tx[j].cycle > start - 2 * 1496:
            start, j = min(start, tr.tx[j].cycle - len(tr.tx[j].text) * 1496), j - 1
        sampled = start - CYCLES_PER_MS
        lo, hi = sum(1 for _, c in tr.enc if c < sampled), sum(1 for _, c in tr.enc if c < hb.cycle)
        assert lo <= int(hb.fields[4]) <= hi, (hb, lo, hi)
    targets: dict[int, int] = {}
    for ln in tr.rx:
        if ln.valid and ln.type == P.REJE:
            targets.setdefault(int(ln.fields[2]), int(ln.fields[3]))
    assert set(targets) == {p.part_id for p in parts}
    pin7 = tr.pin(DIVERTER)
    for part, count in targets.items():
        at = edge_at.get(count)  # the encoder edge that brought the firmware's count to the target
        assert at is not None, f"part {part}: count {count} never reached ({len(edge_at)} edges driven)"
        up = next((e for e in pin7 if e.value == 1 and e.cycle >= at), None)
        assert up is not None, f"part {part}: no fire after count {count}"
        late = up.cycle - at
        already_out = [e for e in pin7 if e.cycle < at][-1].value == 1  # inside the previous part's pulse
        assert already_out or late <= FIRE_BOUND_CYCLES, f"part {part}: {late / CYCLES_PER_MS:.3f} ms after its count"
    assert sorted(int(ln.fields[2]) for ln in tr.tx if ln.type == P.FIRED) == sorted(targets)
    require_realtime(avr, "firing at the encoder counts")
    for p in parts:
        assert results.by_part[p.part_id].status == "fired", results.by_part[p.part_id]
        up = next(e for e in pin7 if e.value == 1 and e.cycle >= edge_at[targets[p.part_id]])
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
    proc = subprocess.Popen(
        [
            sys.executable,
            str(gate_emu.HERE / "gate_emu.py"),
            "--pty",
            str(port),
            "--trace",
            str(trace),
            "--build-dir",
            str(tmp_path / "build"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert "running on" in proc.stdout.readline()  # built and started (blocks until then, or exits)
        with serial.Serial(str(port), 115200, timeout=0.05) as ser:
            # a heartbeat: it has booted and its USART is on (bytes sent before that are lost, as on a board)
            assert _heartbeat(ser, 10.0) is not None
            ser.write(P.encode(1, P.STQ))
            got = _replies(ser, 2, 10.0)
        assert [m.type for m in got] == [P.ACK, P.ST], got
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert proc.returncode == 0, proc.stderr.read()
    assert not port.exists() and gate_emu.parse_trace(trace.read_text()).end is not None  # stopped cleanly


@pytest.mark.slow
def test_inspector_run_replays_the_demo_line_through_the_firmware(controller, tmp_path) -> None:  # noqa: F811
    """The whole runtime (`inspector run` on the demo line, the shipped model, the defect log) with the
    reference firmware as its gate: every defect (and part without a verdict) fired, every OK part passed,
    and the firmware fired exactly the parts the log says."""
    import json
    import os
    import subprocess
    import sys

    from inspector.defectlog.query import open_db

    root = gate_emu.HERE.parents[1]
    if not (root / "models" / "casting_seedcnn.onnx").is_file():
        pytest.skip("the shipped model models/casting_seedcnn.onnx is not in this checkout")
    db, events = tmp_path / "log.db", tmp_path / "events.jsonl"
    env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "inspector",
            "run",
            "--no-display",
            "--serial",
            controller.port,
            "--log-db",
            str(db),
            "--events",
            str(events),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    parts = [json.loads(x) for x in events.read_text().splitlines()]
    rows = {row["part_id"]: dict(row) for row in open_db(db).execute("SELECT * FROM parts")}
    assert parts and len(rows) == len(parts)
    rejected = {ev["part_id"] for ev in parts if ev["verdict"] != "ok"}
    assert rejected and len(rejected) < len(parts)  # the demo line has both
    if isinstance(controller, AvrController):  # the firmware fired every rejected part, once, and nothing else
        fired = [int(ln.fields[2]) for ln in controller.trace().tx if ln.type == P.FIRED]
        assert sorted(fired) == sorted(rejected), (sorted(fired), sorted(rejected))
    require_realtime(controller, "firing every rejected part and no other")
    for ev in parts:
        row = rows[ev["part_id"]]
        if ev["verdict"] == "ok":
            assert row["gate_status"] == "passed" and not row["reject_sent"], row
        else:
            assert row["gate_status"] == "fired" and row["reject_sent"] == row["reject_acked"] == 1, row

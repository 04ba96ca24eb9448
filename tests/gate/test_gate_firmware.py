"""The reference firmware: compiled for the AVR when the toolchain is here, and run on the PC (its logic,
unchanged, with firmware/host's Arduino stand-in) against the inspector's actuator over a real pty."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from firmware_kit import build_pc
from gate_kit import FAST, FRAME_NS, Results, make_part

from inspector.config import GateConfig
from inspector.gate import protocol as P
from inspector.gate.actuator import GateActuator
from inspector.gate.sim import PtyLink

ROOT = Path(__file__).resolve().parents[2]
FW = ROOT / "firmware"


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("avr-g++") is None, reason="avr-g++ not installed (apt-get install arduino-core-avr)")
def test_firmware_compiles_for_an_uno(tmp_path: Path) -> None:
    out = subprocess.run([str(FW / "build.sh"), str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert (tmp_path / "gate_controller.hex").stat().st_size > 1000
    assert (tmp_path / "warnings.txt").read_text() == ""  # -Wall -Wextra clean


@pytest.fixture(scope="module")
def host_firmware(tmp_path_factory) -> Path:
    return build_pc(tmp_path_factory.mktemp("fw"))


def _read_until(fd: int, type_: str, fields: tuple, timeout: float) -> bool:
    framer, end = P.LineFramer(), time.monotonic() + timeout
    import select

    while time.monotonic() < end:
        if select.select([fd], [], [], 0.05)[0]:
            for raw in framer.feed(os.read(fd, 4096)):
                msg = P.decode(raw)
                if msg.type == type_ and msg.fields[: len(fields)] == fields:
                    return True
    return False


def test_firmware_logic_on_a_line(host_firmware: Path, tmp_path: Path) -> None:
    link = PtyLink(tmp_path / "ttyFW")
    proc = subprocess.Popen(
        [str(host_firmware)],
        env={**os.environ, "GATE_FD": str(link.master)},
        pass_fds=(link.master,),
        stderr=subprocess.PIPE,
        text=True,
    )
    results = Results()
    act = GateActuator(GateConfig(**FAST), link.port, results, reconnect_max_s=0.1)
    try:
        assert act.running.wait(5.0), "firmware never reached RUN"
        t_run = time.monotonic_ns()
        parts = []
        for i in range(30):
            p = make_part(i, i % 3 == 0)
            parts.append(p)
            act.on_part(p)
            time.sleep(1 / 30)  # line rate pacing, not a wait for a result
        assert results.wait(30, timeout=5.0)
        act.close(drain_s=0.0)
        # no more heartbeats: the firmware must go fail-safe (diverter held out) on its own
        fd = os.open(link.port, os.O_RDWR | os.O_NOCTTY)
        try:
            assert _read_until(fd, P.MODE, ("DIVERT", "HB_TIMEOUT"), timeout=3.0)
        finally:
            os.close(fd)
    finally:
        act.close(drain_s=0.0)
        proc.terminate()
        _, err = proc.communicate(timeout=5)
        link.close()
    edges = [int(w[3]) for w in (ln.split() for ln in err.splitlines()) if w[:3] == ["PIN", "7", "1"]]
    run_edges = [t for t in edges if t > t_run]
    defects = [p for p in parts if p.rejected]
    assert len(run_edges) == len(defects) + 1  # one pulse per defect, then the fail-safe hold
    for p, edge in zip(defects, run_edges, strict=False):
        r = results.by_part[p.part_id]
        assert r.status == "fired", r
        scheduled = edge - (r.fire_late_ms or 0) * 1_000_000  # its own loop lateness, as it reported it
        gate_ns = p.t_capture_ns + act.travel_ns
        assert abs(scheduled - gate_ns) <= FRAME_NS, f"part {p.part_id}: {(scheduled - gate_ns) / 1e6:+.1f} ms"
    assert all(results.by_part[p.part_id].status == "passed" for p in parts if not p.rejected)

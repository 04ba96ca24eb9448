"""The reference firmware as a gate controller for the tests, on either backend, behind one interface:

- ``pc``:  the sketch built as a PC program (firmware/host's Arduino stand-in) on a pty; pin edges on the
  host's monotonic clock only;
- ``avr``: the sketch compiled for the ATmega328P, run in simavr (firmware/emu) on a pty, paced to real time;
  pin edges, USART lines, resets and encoder edges also on the emulated clock.

The ``controller`` fixture (imported by the test modules that use it) is parametrized over both.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from firmware.emu import gate_emu  # firmware/emu/gate_emu.py (the checkout's root is on pytest's pythonpath)
from inspector.gate.sim import PtyLink

ROOT = Path(__file__).resolve().parents[2]
FW = ROOT / "firmware"

DIVERTER, LINE_RUN = 7, 8


class Controller:
    """A running firmware behind a pty: ``port`` is what the actuator opens."""

    kind = ""

    def __init__(self, tmp_path: Path) -> None:
        self.link = PtyLink(tmp_path / f"tty{self.kind.upper()}")
        self.port = self.link.port

    def edges(self, pin: int = DIVERTER) -> list[tuple[int, int]]:
        """(host monotonic ns, value) of every change of ``pin`` so far."""
        raise NotImplementedError

    def close(self) -> None:
        self.link.close()

    def diverting_at(self, t_ns: int) -> bool:
        """Was the diverter out at host time ``t_ns``?"""
        value = 0
        for t, v in self.edges(DIVERTER):
            if t > t_ns:
                break
            value = v
        return value == 1


class PcController(Controller):
    kind = "pc"

    def __init__(self, tmp_path: Path, exe: Path) -> None:
        super().__init__(tmp_path)
        self.log = tmp_path / "pc-pins.log"
        self._err = self.log.open("w")
        self.proc = subprocess.Popen(
            [str(exe)],
            env={**os.environ, "GATE_FD": str(self.link.master)},
            pass_fds=(self.link.master,),
            stderr=self._err,
        )

    def edges(self, pin: int = DIVERTER) -> list[tuple[int, int]]:
        out = []
        for w in (ln.split() for ln in self.log.read_text().splitlines()):
            if len(w) == 4 and w[:2] == ["PIN", str(pin)]:
                out.append((int(w[3]), int(w[2])))
        return out

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self._err.close()
        super().close()


class AvrController(Controller):
    kind = "avr"

    def __init__(self, tmp_path: Path, elf: Path, exe: Path) -> None:
        super().__init__(tmp_path)
        self.emu = gate_emu.Emulator(elf, exe, tmp_path / "avr.trace", fd=self.link.master)

    def trace(self) -> gate_emu.Trace:
        return self.emu.trace()

    def edges(self, pin: int = DIVERTER) -> list[tuple[int, int]]:
        return [(e.wall_ns, e.value) for e in self.trace().pin(pin)]

    def close(self) -> None:
        err = self.emu.close()
        super().close()
        assert "stopped" not in err, err  # the MCU never crashed


# Host-clock checks against the emulated binary (fire vs gate time, the host's verdict on each part) hold only
# while the emulator keeps real time; it needs about 40 % of one core (docs/BENCHMARKS.md).
MAX_LAG_MS = 20.0


def require_realtime(c: Controller, what: str) -> None:
    """Skip the rest of a test (its host-clock checks) when the emulator fell behind real time: a machine too
    loaded to emulate a 16 MHz AVR in real time says nothing about the firmware. Checks on the emulated clock
    come before this and always run."""
    if isinstance(c, AvrController):
        lag = c.trace().max_lag_ms()
        if lag > MAX_LAG_MS:
            pytest.skip(
                f"{what} passed; host-clock checks not meaningful: the emulator fell {lag:.0f} ms behind "
                f"real time (machine overloaded; limit {MAX_LAG_MS:.0f} ms)"
            )


def build_pc(out: Path) -> Path:
    if shutil.which("g++") is None:
        pytest.skip("g++ not installed")
    exe = out / "gate_controller"
    subprocess.run(
        [
            "g++",
            "-std=gnu++11",
            "-O2",
            "-Wall",
            "-Wextra",
            "-Werror",
            f"-I{FW / 'host' / 'include'}",
            "-x",
            "c++",
            str(FW / "gate_controller" / "gate_controller.ino"),
            "-x",
            "c++",
            str(FW / "host" / "main.cpp"),
            "-o",
            str(exe),
        ],
        check=True,
        timeout=120,
    )
    return exe


@pytest.fixture(scope="session")
def firmware_builds(tmp_path_factory) -> dict:
    """Each backend built once per session: {"pc": exe or skip reason, "avr": (elf, emu) or skip reason}."""
    out: dict = {}
    try:
        out["pc"] = build_pc(tmp_path_factory.mktemp("fw-pc"))
    except pytest.skip.Exception as exc:
        out["pc"] = str(exc)
    why = gate_emu.missing_tools()
    out["avr"] = why or gate_emu.build(tmp_path_factory.mktemp("fw-avr"))
    return out


@pytest.fixture(params=["pc", "avr"])
def controller(request, firmware_builds: dict, tmp_path: Path):
    """The reference firmware on a pty: the PC build, then the compiled binary in simavr."""
    built = firmware_builds[request.param]
    if isinstance(built, str):
        pytest.skip(built)
    c = PcController(tmp_path, built) if request.param == "pc" else AvrController(tmp_path, *built)
    yield c
    c.close()


def wait_until(cond, timeout: float, step: float = 0.01) -> bool:
    """Poll ``cond`` until it holds (True) or ``timeout`` s pass (False)."""
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            return False
        time.sleep(step)
    return True

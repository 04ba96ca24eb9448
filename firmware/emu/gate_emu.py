"""Run the gate controller's compiled AVR firmware in simavr against the host, and read what it did.

``build()`` compiles gate_controller.elf (ATmega328P, 16 MHz, firmware/build.sh) and the harness gate_emu.c;
``Emulator`` runs it paced to wall-clock time with its USART on a pty, and parses the harness's trace: output
pin edges, the lines the firmware read and wrote, resets, encoder edges, each on the emulated clock (CPU
cycles, 16 per microsecond) and the host's monotonic clock. Used by tests/gate and bench/firmware_emu.py, and
from a shell to commission the inspector against the real firmware without a board::

    python firmware/emu/gate_emu.py --pty /tmp/ttyGATE          # then: inspector run --serial /tmp/ttyGATE

See docs/firmware.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
F_CPU = 16_000_000
NS_PER_CYCLE = 1e9 / F_CPU  # 62.5


def missing_tools() -> str | None:
    """Why the emulated firmware cannot be built here (None: it can)."""
    if shutil.which("avr-g++") is None or not Path("/usr/share/arduino/hardware/arduino/avr/cores/arduino").is_dir():
        return "avr-g++ / the Arduino AVR core not installed (apt-get install arduino-core-avr)"
    if not Path("/usr/include/simavr/sim_avr.h").is_file():
        return "simavr not installed (apt-get install simavr libsimavr-dev libsimavrparts1)"
    if shutil.which("gcc") is None:
        return "gcc not installed"
    return None


def build(out: Path) -> tuple[Path, Path]:
    """Compile the firmware and the harness into ``out``; -> (gate_controller.elf, gate_emu)."""
    r = subprocess.run([str(HERE / "build.sh"), str(out)], capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"firmware/emu/build.sh failed: {r.stderr[-2000:]}")
    return out / "gate_controller.elf", out / "gate_emu"


def cycles_to_ns(cycles: int) -> float:
    return cycles * NS_PER_CYCLE


@dataclass(frozen=True, slots=True)
class Edge:
    """An output pin change: on the emulated clock (cycle), the host's clock (wall_ns) and the firmware's
    millis() then (the cycle millis() took that value, and the value before it: Arduino's millis() counts
    1.024 ms ticks and skips a value every 42-43 ms)."""

    pin: int
    value: int
    cycle: int
    wall_ns: int
    millis: int
    millis_cycle: int
    millis_before: int

    def reached_cycle(self, ms: int) -> int | None:
        """The cycle millis() first read >= ``ms``, if that was its latest step (None: earlier)."""
        return self.millis_cycle if self.millis_before < ms <= self.millis else None


@dataclass(frozen=True, slots=True)
class Line:
    """A line the firmware read (RX: its interrupt read the '\\n') or wrote (TX: the '\\n' went to its USART)."""

    cycle: int
    wall_ns: int
    text: str

    @property
    def fields(self) -> list[str]:
        """'$12,REJT,4711,90210*32' -> ['12', 'REJT', '4711', '90210'] (from the last '$': the firmware
        starts a line there, whatever came before)."""
        text = self.text[self.text.rfind("$"):]
        body = text[1:].rsplit("*", 1)[0] if text.startswith("$") else text
        return body.split(",")

    @property
    def type(self) -> str:
        """The message type ('' for a line too garbled to have one)."""
        f = self.fields
        return f[1] if len(f) > 1 else ""

    @property
    def valid(self) -> bool:
        """Its checksum is right (a line cut short by a lost byte is not)."""
        text = self.text[self.text.rfind("$"):]
        if not text.startswith("$") or len(text) < 4 or text[-3] != "*":
            return False
        crc = 0
        for byte in text[1:-3].encode():
            crc ^= byte
            for _ in range(8):
                crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
        return f"{crc:02X}" == text[-2:]


@dataclass(frozen=True, slots=True)
class Trace:
    """Everything the harness logged so far."""

    edges: list[Edge]
    rx: list[Line]
    tx: list[Line]
    resets: list[tuple[int, int, str, int]]  # cycle, wall_ns, cause, MCUSR after it
    hangs: list[tuple[int, int]]  # cycle, wall_ns
    enc: list[tuple[int, int]]  # count since reset, cycle
    loops: list[tuple[int, int]]  # start cycle, cycles (with --loop-log)
    start_wall_ns: int | None
    end: dict[str, float] | None

    def pin(self, pin: int) -> list[Edge]:
        return [e for e in self.edges if e.pin == pin]

    def max_lag_ms(self) -> float:
        """How far emulated time was behind wall time at worst, over every logged event after the first 0.2 s
        (the emulator is paced to start + cycle / 16 MHz; it lags when it does not get the CPU it needs)."""
        if self.start_wall_ns is None:
            return 0.0
        lags = [w - self.start_wall_ns - cycles_to_ns(c) for c, w in
                [(e.cycle, e.wall_ns) for e in self.edges] + [(ln.cycle, ln.wall_ns) for ln in self.rx + self.tx]
                if c > F_CPU // 5]
        return max(lags, default=0.0) / 1e6


END_FIELDS = ("cycles", "wall_ns", "emu_s", "wall_s", "cpu_s", "max_lag_us", "loop_min", "loop_median", "slices",
              "behind_1ms")


def parse_trace(text: str) -> Trace:
    edges, rx, tx, resets, hangs, enc, loops = [], [], [], [], [], [], []
    start, end = None, None
    for raw in text.splitlines():
        w = raw.split(" ")
        kind = w[0]
        try:
            if kind == "PIN" and len(w) == 8:
                edges.append(Edge(*(int(x) for x in w[1:])))
            elif kind in ("RX", "TX") and len(w) >= 3:
                (rx if kind == "RX" else tx).append(Line(int(w[1]), int(w[2]), " ".join(w[3:])))
            elif kind == "ENC":
                enc.append((int(w[1]), int(w[2])))
            elif kind == "LOOP":
                loops.append((int(w[1]), int(w[2])))
            elif kind == "RESET":
                resets.append((int(w[1]), int(w[2]), w[3], int(w[4])))
            elif kind == "HANG":
                hangs.append((int(w[1]), int(w[2])))
            elif kind == "START":
                start = int(w[2])
            elif kind == "END":
                end = dict(zip(END_FIELDS, (float(x) for x in w[1:]), strict=False))
        except (ValueError, IndexError):
            continue  # a line being written as we read: the next read has it whole
    return Trace(edges, rx, tx, resets, hangs, enc, loops, start, end)


class Emulator:
    """gate_emu running ``elf``, its USART on pty master ``fd`` (or a new pty linked at ``pty``)."""

    def __init__(self, elf: Path, exe: Path, trace: Path, *, fd: int | None = None, pty: str | None = None,
                 loop_log: bool = False, free_run: bool = False, seconds: float = 0.0) -> None:
        cmd = [str(exe), "--elf", str(elf), "--trace", str(trace)]
        if fd is not None:
            cmd += ["--fd", str(fd)]
        if pty is not None:
            cmd += ["--pty", pty]
        cmd += ["--loop-log"] * loop_log + ["--free-run"] * free_run + ["--seconds", str(seconds)]
        self.trace_path = trace
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, pass_fds=(fd,) if fd is not None else ())
        if pty is not None:
            first = self.proc.stdout.readline()
            if "pty" not in first:
                self.proc.wait(timeout=5)
                why = " ".join((first + self.proc.stderr.read()).split()) or f"exit status {self.proc.returncode}"
                raise RuntimeError(why)
        self._stderr = ""

    def trace(self) -> Trace:
        try:
            return parse_trace(self.trace_path.read_text())
        except FileNotFoundError:
            return parse_trace("")

    def wait_for(self, predicate: Callable[[Trace], bool], timeout: float) -> bool:
        """Poll the trace until ``predicate`` holds (True) or ``timeout`` s pass (False)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate(self.trace()):
                return True
            if self.proc.poll() is not None:
                return predicate(self.trace())
            time.sleep(0.02)
        return False

    def control(self, command: str) -> None:
        """'hang' | 'encoder HZ' | 'quit' (see gate_emu.c)."""
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def hang(self) -> None:
        self.control("hang")

    def encoder(self, hz: float) -> None:
        self.control(f"encoder {hz}")

    def wait(self, timeout: float) -> int:
        """Wait for a --seconds run to end; -> its exit status."""
        rc = self.proc.wait(timeout=timeout)
        self._stderr = self.proc.stderr.read()
        return rc

    def close(self) -> str:
        """Stop it; -> what it wrote on stderr (empty when all went well)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if not self._stderr and self.proc.stderr is not None:
            self._stderr = self.proc.stderr.read()
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if f is not None:
                f.close()
        return self._stderr


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Run the gate controller firmware in simavr on a pty (docs/firmware.md)")
    ap.add_argument("--pty", default="/tmp/ttyGATE", help="symlink to the pty the host opens (default %(default)s)")
    ap.add_argument("--trace", default="gate_emu.trace", help="the harness's trace file (default %(default)s)")
    ap.add_argument("--build-dir", help="where to build (default: a temporary folder)")
    args = ap.parse_args(argv)
    why = missing_tools()
    if why:
        print(f"gate_emu: cannot build the emulated firmware: {why}", file=sys.stderr)
        return 2
    out = Path(args.build_dir) if args.build_dir else Path(tempfile.mkdtemp(prefix="gate_emu."))
    try:
        elf, exe = build(out)
    except RuntimeError as exc:
        print(f"gate_emu: {exc}", file=sys.stderr)
        return 1
    try:
        emu = Emulator(elf, exe, Path(args.trace), pty=args.pty)
    except RuntimeError as exc:
        print(f"gate_emu: the emulator did not start: {exc}", file=sys.stderr)
        return 1
    print(f"gate_emu: firmware running on {args.pty} (trace {args.trace}); Ctrl-C stops it", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop the emulator too (the finally below)
    try:
        emu.proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        err = emu.close()
        if err:
            print(err, file=sys.stderr, end="")
        Path(args.pty).unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())

"""The headless dashboard: a rich Live view on a terminal with the run's counts and the line's state; q stops it."""

from __future__ import annotations

import dataclasses
import fcntl
import io
import json
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time

import cv2
import pytest
from rich.console import Console
from runtime_kit import FakeEngine, ListSink, ScriptedCapture, as_frames, make_cfg, moving, render

from inspector.dashboard import Dashboard, KeyReader, status_table, status_view, wants_stop
from inspector.events import Summary
from inspector.health import GateHealth, HealthProbe, LogHealth, ModelHealth
from inspector.pipeline import LoopStats, Pipeline, run_loop
from inspector.records import Part, Verdict


def test_dashboard_shows_counts_latency_and_the_final_state():
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100, color_system=None)
    summary = Summary()
    sprites = [moving(0, -60, 90, 9, 90, defect=True), moving(0, -200, 90, 9, 90)]
    pipe = Pipeline(make_cfg(), FakeEngine(), [ListSink(), summary])
    dash = Dashboard(source="line.mp4", refresh_hz=1000.0, console=console)
    stats = run_loop(pipe, ScriptedCapture(as_frames(render(sprites, 90))), view=dash, stats=LoopStats(summary=summary))
    dash.close()
    text = out.getvalue()
    assert "inspector line.mp4" in text
    final = text[text.rfind("inspector line.mp4") :]
    for row in ("frames", "90", "parts", "defect", "no verdict", "yield", "last defect"):
        assert row in final, row
    assert summary.parts == 2 and stats.frames == 90
    plain = Console(file=io.StringIO(), width=100, color_system=None)
    plain.print(status_table(stats, "x"))
    assert "50.0 %" in plain.file.getvalue()  # one ok part of two


def test_stop_keys_q_and_a_lone_esc_but_not_an_arrow_key():
    assert wants_stop(b"q") and wants_stop(b"Q") and wants_stop(b"\x1b") and wants_stop(b"x\x1b")
    assert not wants_stop(b"") and not wants_stop(b"\x1b[A") and not wants_stop(b"\x1bOB") and not wants_stop(b"p")


def test_the_dashboard_reads_the_line_health_and_says_how_to_stop():
    """Given the line's snapshot the dashboard names the gate, log and camera states in words."""
    summary = Summary()
    summary.on_part(Part(3, 0, 0, (0, 0, 1, 1), Verdict.NO_VERDICT, reason="lost before the trigger"))
    stats = LoopStats(summary=summary)
    h = HealthProbe(stats=stats, model=ModelHealth("m.onnx", "onnxruntime")).snapshot()
    gate = GateHealth(False, True, False, False, (), 0, 0, 0, {})
    h = dataclasses.replace(h, gate=gate, log=LogHealth(0, 0, {"rows": 4}))
    console = Console(file=io.StringIO(), width=160, color_system=None)
    console.print(status_view(h, "rtsp://cam/line-1", keys=True))
    text = console.file.getvalue()
    assert "fail-safe" in text and "writing" in text and "4 rows" in text and "replay" in text
    assert "#3 NO VERDICT" in text and "rejected: lost before the trigger" in text
    assert "press q or Esc to stop" in text
    console = Console(file=io.StringIO(), width=160, color_system=None)
    console.print(status_view(h, "x", keys=False))
    assert "Ctrl-C to stop" in console.file.getvalue() and "press q" not in console.file.getvalue()


def test_key_reader_without_a_terminal_reads_nothing(tmp_path):
    with open(tmp_path / "in.txt", "w+") as f:
        f.write("q")
        f.seek(0)
        keys = KeyReader(f)
        assert not keys.active and keys.keys() == b""
        keys.close()


def _read_until(fd: int, buf: bytearray, needle: bytes, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while needle not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        if select.select([fd], [], [], min(left, 0.2))[0]:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                return needle in buf
            if not chunk:
                return needle in buf
            buf += chunk
    return True


@pytest.mark.slow
def test_q_in_a_real_terminal_stops_the_run_with_the_summary(tmp_path):
    """`inspector run` (the demo, paced) on a real pty, 160 columns: the dashboard says how to stop, shows the
    gate, log and source state, the source path whole on one line; q stops the run; the exit summary gives the
    gate's and the log's outcomes without -v; the terminal's mode is restored."""
    cache = tmp_path / ("a_cache_folder_with_a_long_name_so_the_source_path_is_wide" + "_x" * 10)
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))
    before = termios.tcgetattr(slave)
    env = {**os.environ, "XDG_CACHE_HOME": str(cache), "TERM": "xterm-256color", "COLUMNS": "160"}
    env.pop("DISPLAY", None)
    env.pop("WAYLAND_DISPLAY", None)
    events = tmp_path / "ev.jsonl"
    cmd = [sys.executable, "-m", "inspector", "run", "--realtime", "--serial", "sim"]
    cmd += ["--log-db", str(tmp_path / "log.db"), "--events", str(events)]

    def controlling_terminal() -> None:  # as a shell starts it: the pty is its terminal, its group in front
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen(
        cmd, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=tmp_path, preexec_fn=controlling_terminal
    )
    os.close(slave)
    out = bytearray()
    try:
        assert _read_until(master, out, b"press q or Esc to stop", 120), bytes(out[-3000:])
        assert _read_until(master, out, b"linked", 30), bytes(out[-3000:])
        os.write(master, b"q")
        assert _read_until(master, out, b"inspection summary", 30), bytes(out[-3000:])
        proc.wait(timeout=30)
        _read_until(master, out, b"\x00never", 1.0)  # the rest of the output
        after = termios.tcgetattr(master)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text[-3000:]
    assert "Traceback" not in text
    source = str(cache / "inspector" / "demo")
    assert any(source in line for line in text.splitlines()), "the source path wrapped"
    dash = text[: text.find("inspection summary")]
    for word in ("camera", "replay", "gate", "linked", "log", "writing"):
        assert word in dash, word
    tail = text[text.find("inspection summary") :]
    assert "gate: " in tail and "fired" in tail and "passed" in tail and "held" in tail
    assert "log: " in tail and "rows written" in tail and "dropped" in tail
    summary = json.loads((tmp_path / "ev.summary.json").read_text())
    video = next((cache / "inspector" / "demo").glob("*.mp4"))
    cap = cv2.VideoCapture(str(video))
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    assert 0 < summary["frames"] < total, (summary["frames"], total)  # q stopped it before the end
    assert after[3] & termios.ICANON and after[3] & termios.ECHO  # cbreak undone
    assert after[3] == before[3]


BACKGROUND_SCRIPT = r"""
import os, sys
from inspector.dashboard import KeyReader
pid = os.fork()
if pid == 0:
    os.setpgid(0, 0)  # a group of its own: not the terminal's foreground group (as `inspector run ... &`)
    keys = KeyReader(sys.stdin)
    sys.stdout.write(f"active={keys.active}\n")
    sys.stdout.flush()
    keys.close()
    os._exit(0)
_, status = os.waitpid(pid, os.WUNTRACED)
print("stopped" if os.WIFSTOPPED(status) else "exited", flush=True)
if os.WIFSTOPPED(status):
    os.kill(pid, 9)
"""


def test_a_run_in_the_background_leaves_the_terminal_alone(tmp_path):
    """Started with `&`, the dashboard must not touch the terminal's mode: that would stop the process (SIGTTOU)."""
    master, slave = pty.openpty()

    def controlling_terminal() -> None:
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen(
        [sys.executable, "-c", BACKGROUND_SCRIPT],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        preexec_fn=controlling_terminal,
    )
    os.close(slave)
    out = bytearray()
    try:
        assert _read_until(master, out, b"exited", 30) or b"stopped" in out, bytes(out)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    assert b"active=False" in out and b"exited" in out, bytes(out)

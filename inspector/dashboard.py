"""Headless view: a rich Live dashboard in the terminal, a drop-in for the window when there is no display.

Refreshed at most a few times a second so it costs the inspection loop next to nothing. It reads the line's
typed health snapshot (:class:`inspector.health.Health`, the same one the window and the metrics read), uses
the terminal's whole width, and stops on ``q`` or Esc: when stdin is a terminal it is put in cbreak mode (keys
arrive one by one, not echoed) and restored on close; when stdin is not a terminal only Ctrl-C stops it, and
the screen says so. When the output is not a terminal (CI, a pipe, a service) :class:`LogView` logs one status
line every few seconds instead.
"""

from __future__ import annotations

import logging
import os
import select
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from inspector import viewstate
from inspector.health import Health, HealthProbe
from inspector.pipeline import FrameView, LoopStats

if TYPE_CHECKING:
    from rich.console import RenderableType

log = logging.getLogger(__name__)

STYLES = {
    viewstate.OK: "bold green",
    viewstate.INFO: "bold cyan",
    viewstate.WARN: "bold yellow",
    viewstate.BAD: "bold red",
    viewstate.OFF: "dim",
}
VERDICT_STYLES = {None: "dim", "ok": "bold black on green", "defect": "bold white on red"}
VERDICT_STYLES["no_verdict"] = "bold black on dark_orange"


def status_view(h: Health, source: str = "", *, keys: bool = True, complete: bool = True) -> RenderableType:
    """The dashboard: the source on its own line, the last verdict, counts beside the line's state, how to stop.

    ``keys``: q/Esc work (stdin is a terminal); else the footer names Ctrl-C only."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    head = Text(no_wrap=True, overflow="ellipsis")
    head.append("inspector", style="bold")
    head.append(f" {source}" if source else "")
    b = viewstate.banner(h)
    last = Text(no_wrap=True, overflow="ellipsis")
    last.append(" last part ", style="dim")
    last.append(f" {b.title} ", style=VERDICT_STYLES[b.verdict.value if b.verdict else None])
    last.append(f"  {b.detail}")

    p, ins = h.parts, h.inspection
    n = p.ok + p.defect + p.no_verdict
    counts = Table(show_header=False, expand=True, box=None, padding=(0, 1))
    counts.add_column("", style="bold", no_wrap=True, min_width=len("latency p50 / p99"))
    counts.add_column("", no_wrap=True)
    counts.add_row("frames", f"{ins.frames}  ({ins.fps:.1f}/s)")
    counts.add_row("dropped frames", str(h.camera.dropped if complete else ins.dropped))
    lat = "-" if ins.latency_p50_ms is None else f"{ins.latency_p50_ms:.1f} / {ins.latency_p99_ms:.1f} ms"
    counts.add_row("latency p50 / p99", lat)
    counts.add_row("parts", f"{n}   yield {viewstate.yield_text(h)}")
    counts.add_row("[green]ok", str(p.ok))
    counts.add_row("[red]defect", str(p.defect))
    counts.add_row("[dark_orange]no verdict", str(p.no_verdict))
    d = h.recent.defects[0] if h.recent.defects else None
    counts.add_row("last defect", "-" if d is None else f"#{d.part_id}  {viewstate.score_text(d)}")
    if ins.errors:
        counts.add_row("[red]frames not inspected", str(ins.errors))

    states = Table(show_header=False, expand=True, box=None, padding=(0, 1))
    states.add_column("", style="bold", no_wrap=True, min_width=len("source stalls"))
    states.add_column("", no_wrap=True, overflow="ellipsis")
    for st in viewstate.line_states(h, complete=complete):
        states.add_row(st.name, Text.assemble((st.word, STYLES[st.level]), f"  {st.detail}" if st.detail else ""))
    if h.camera.stalls:
        states.add_row("source stalls", str(h.camera.stalls))

    body = Table.grid(expand=True, padding=(0, 3))
    body.add_column(ratio=1)
    body.add_column(ratio=1)
    body.add_row(counts, states)
    stop = "press q or Esc to stop (Ctrl-C also stops)" if keys else "Ctrl-C to stop (keys need a terminal on stdin)"
    foot = Text(stop, style="bold", no_wrap=True, overflow="ellipsis")
    foot.append("   scores are P(defect): 0 good .. 1 defect", style="dim")
    return Group(head, last, Text(""), body, Text(""), foot)


def status_table(stats: LoopStats, source: str = "") -> RenderableType:
    """The dashboard from the loop's counters alone (no line: gate, log and model unknown)."""
    return status_view(HealthProbe(stats=stats).snapshot(), source, keys=False, complete=False)


class KeyReader:
    """Single keys from the terminal on stdin, without blocking: cbreak mode (no line buffering, no echo) while
    open, the terminal's settings restored on :meth:`close`. Without a terminal on stdin it reads nothing."""

    def __init__(self, stream: Any = None) -> None:
        self.fd: int | None = None
        self._saved: Any = None
        stream = stream if stream is not None else sys.stdin
        try:
            fd = stream.fileno()
        except (AttributeError, ValueError, OSError):
            return
        if not os.isatty(fd):
            return
        try:
            import termios
            import tty
        except ImportError:  # not a POSIX terminal (Windows): Ctrl-C only
            return
        if _in_background(fd):  # started with `cmd &`: changing the terminal's mode would stop the process
            return
        try:
            self._saved = termios.tcgetattr(fd)
            tty.setcbreak(fd, termios.TCSANOW)
        except termios.error:
            self._saved = None
            return
        self.fd = fd

    @property
    def active(self) -> bool:
        return self.fd is not None

    def keys(self) -> bytes:
        """The bytes typed since the last call (b"" when none or no terminal)."""
        if self.fd is None:
            return b""
        got = b""
        while select.select([self.fd], [], [], 0)[0]:
            try:
                chunk = os.read(self.fd, 64)
            except OSError:
                break
            if not chunk:  # the terminal went away
                break
            got += chunk
        return got

    def close(self) -> None:
        if self.fd is not None and self._saved is not None:
            import termios

            try:
                termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)
            except termios.error:
                pass
        self.fd = None


def _in_background(fd: int) -> bool:
    """The terminal is our controlling one and another process group is in its foreground."""
    try:
        return os.tcgetpgrp(fd) != os.getpgrp()
    except OSError:  # not our controlling terminal: no job control, nothing stops us
        return False


def wants_stop(typed: bytes) -> bool:
    """q (either case) or a lone Esc; an escape sequence (an arrow key: ESC [ A) is not a stop."""
    if b"q" in typed or b"Q" in typed:
        return True
    i = typed.find(b"\x1b")
    while i != -1:
        nxt = typed[i + 1 : i + 2]
        if nxt not in (b"[", b"O"):
            return True
        i = typed.find(b"\x1b", i + 2)
    return False


class Dashboard:
    """The terminal view. ``health``: the line's snapshot (:meth:`inspector.line.Line.health`)."""

    paused = False

    def __init__(
        self,
        source: str = "",
        refresh_hz: float = 4.0,
        console: Any = None,
        *,
        health: Callable[[], Health] | None = None,
        stdin: Any = None,
    ) -> None:
        from rich.console import Console
        from rich.live import Live

        self.source = source
        self.health = health
        self.min_interval = 1.0 / refresh_hz
        self._t_last = 0.0
        self.console = console or Console(stderr=True)
        self.keys = KeyReader(stdin)
        self._live = Live(console=self.console, auto_refresh=False, transient=False)
        self._stats: LoopStats | None = None
        self._live.start()

    def _render(self, stats: LoopStats) -> RenderableType:
        complete = self.health is not None
        h = self.health() if complete else HealthProbe(stats=stats).snapshot()
        return status_view(h, self.source, keys=self.keys.active, complete=complete)

    def update(self, view: FrameView | None, stats: LoopStats) -> bool:
        """Redraw (a few times a second) and read the keys; False = the operator asked to stop."""
        self._stats = stats
        if wants_stop(self.keys.keys()):
            log.info("stop asked from the dashboard")
            return False
        now = time.monotonic()
        if now - self._t_last >= self.min_interval:
            self._live.update(self._render(stats), refresh=True)
            self._t_last = now
        return True

    def close(self) -> None:
        """Show the final counts (parts rejected at shutdown included), stop, give the terminal back."""
        try:
            if self._stats is not None:
                self._live.update(self._render(self._stats), refresh=True)
            self._live.stop()
        finally:
            self.keys.close()


class LogView:
    """No terminal: a status line in the log every ``every_s`` seconds."""

    paused = False

    def __init__(self, every_s: float = 5.0, *, health: Callable[[], Health] | None = None) -> None:
        self.every_s = every_s
        self.health = health
        self._t_last = time.monotonic()

    def update(self, view: FrameView | None, stats: LoopStats) -> bool:
        now = time.monotonic()
        if now - self._t_last >= self.every_s:
            h = self.health() if self.health is not None else HealthProbe(stats=stats).snapshot()
            p = h.parts
            log.info(
                "%d frames (%.1f/s), %d parts", h.inspection.frames, h.inspection.fps, p.ok + p.defect + p.no_verdict
            )
            self._t_last = now
        return True

    def close(self) -> None:
        pass

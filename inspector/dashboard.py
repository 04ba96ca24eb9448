"""Headless view: a rich Live dashboard in the terminal, a drop-in for the window when there is no display.

Refreshed at most a few times a second so it costs the inspection loop next to nothing. When the output is
not a terminal (CI, a pipe, a service) :class:`LogView` logs one status line every few seconds instead.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from inspector.pipeline import FrameView, LoopStats
from inspector.records import Verdict

if TYPE_CHECKING:
    from rich.table import Table

log = logging.getLogger(__name__)


def status_table(stats: LoopStats, source: str = "") -> Table:
    from rich.table import Table

    s = stats.summary
    counts = s.counts if s is not None else {}
    ok, bad, nv = (counts.get(v, 0) for v in (Verdict.OK, Verdict.DEFECT, Verdict.NO_VERDICT))
    parts = ok + bad + nv
    p50 = s.latency_pct(50) if s is not None else None
    p99 = s.latency_pct(99) if s is not None else None
    t = Table(title=f"inspector {source}".strip(), show_header=False, expand=False)
    t.add_column("", style="bold")
    t.add_column("", justify="right")
    t.add_row("frames", f"{stats.frames}  ({stats.fps:.1f}/s)")
    t.add_row("dropped frames", str(stats.dropped))
    t.add_row("latency p50 / p99", "-" if p50 is None else f"{p50:.1f} / {p99:.1f} ms")
    t.add_row("parts", str(parts))
    t.add_row("[green]ok", str(ok))
    t.add_row("[red]defect", str(bad))
    t.add_row("[dark_orange]no verdict", str(nv))
    t.add_row("yield", f"{100.0 * ok / parts:.1f} %" if parts else "-")
    last = s.last_defect if s is not None else None
    t.add_row(
        "last defect",
        "-"
        if last is None
        else f"#{last.part_id} score {last.score:.2f}"
        if last.score is not None
        else f"#{last.part_id}",
    )
    if stats.stalls:
        t.add_row("[red]source stalls", str(stats.stalls))
    if stats.errors:
        t.add_row("[red]frames not inspected", str(stats.errors))
    return t


class Dashboard:
    paused = False

    def __init__(self, source: str = "", refresh_hz: float = 4.0, console=None) -> None:
        from rich.console import Console
        from rich.live import Live

        self.source = source
        self.min_interval = 1.0 / refresh_hz
        self._t_last = 0.0
        self.console = console or Console(stderr=True)
        self._live = Live(console=self.console, auto_refresh=False, transient=False)
        self._stats: LoopStats | None = None
        self._live.start()

    def update(self, view: FrameView | None, stats: LoopStats) -> bool:
        self._stats = stats
        now = time.monotonic()
        if now - self._t_last >= self.min_interval:
            self._live.update(status_table(stats, self.source), refresh=True)
            self._t_last = now
        return True

    def close(self) -> None:
        """Show the final counts (parts rejected at shutdown included), then stop."""
        if self._stats is not None:
            self._live.update(status_table(self._stats, self.source), refresh=True)
        self._live.stop()


class LogView:
    """No terminal: a status line in the log every ``every_s`` seconds."""

    paused = False

    def __init__(self, every_s: float = 5.0) -> None:
        self.every_s = every_s
        self._t_last = time.monotonic()

    def update(self, view: FrameView | None, stats: LoopStats) -> bool:
        now = time.monotonic()
        if now - self._t_last >= self.every_s:
            s = stats.summary
            log.info("%d frames (%.1f/s), %d parts", stats.frames, stats.fps, s.parts if s is not None else 0)
            self._t_last = now
        return True

    def close(self) -> None:
        pass

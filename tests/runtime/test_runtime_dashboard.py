"""The headless dashboard: a rich Live table on a terminal with the run's counts."""

from __future__ import annotations

import io

from rich.console import Console
from runtime_kit import FakeEngine, ListSink, ScriptedCapture, as_frames, make_cfg, moving, render

from inspector.dashboard import Dashboard, status_table
from inspector.events import Summary
from inspector.pipeline import LoopStats, Pipeline, run_loop


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

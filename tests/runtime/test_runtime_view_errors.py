"""Whatever stops the inspection loop from the view side, the parts already on the belt are rejected and logged
(defect 1 of issue 13: a failing key handler used to end the run with them never logged), and the views read
the line's health through Line."""

from __future__ import annotations

import json

import pytest

from inspector.config import load_config
from inspector.line import Line, LineRequest


class _BreaksAfter:
    """A view that fails on its n-th frame, as the window's s key did with a bad folder."""

    paused = False

    def __init__(self, n: int) -> None:
        self.n = n

    def update(self, view, stats) -> bool:
        self.n -= 1
        if self.n == 0:
            raise OSError("the view failed")
        return True

    def close(self) -> None:
        pass


def test_a_view_failure_still_rejects_and_logs_the_parts_in_flight(line_config, line_video, tmp_path):
    cfg = load_config(line_config)
    cfg.source.uri = str(line_video)
    cfg.display.enabled = "off"
    events = tmp_path / "ev.jsonl"
    line = Line(cfg, LineRequest(events=str(events), view=False))
    with line:
        line.view = _BreaksAfter(60)  # frame 60: parts are on the belt, not yet past the trigger
        with pytest.raises(OSError, match="the view failed"):
            line.run()
    rows = [json.loads(x) for x in events.read_text().splitlines()]
    lost = [r for r in rows if r["verdict"] == "no_verdict"]
    assert lost and all(r["reason"] == "run stopped by an error before the part was classified" for r in lost), rows


def test_line_gives_its_views_the_health_snapshot(line_config, line_video, monkeypatch):
    """The window and the dashboard read Line.health (gate, log, model), not the loop's counters alone."""
    from inspector import line as line_mod

    got = {}

    def fake_make_view(cfg, window, snapshot_dir=".", health=None):
        got["health"] = health
        from inspector.pipeline import NullView

        return NullView()

    monkeypatch.setattr(line_mod, "make_view", fake_make_view)
    cfg = load_config(line_config)
    cfg.source.uri = str(line_video)
    cfg.display.enabled = "off"
    line = Line(cfg, LineRequest())
    with line:
        line.run(max_frames=5)
        h = got["health"]()
    assert h.model is not None and h.model.name == line.model_path.name and h.inspection.frames == 5

"""The composition root: a Line built from a validated config, started in order, stopped in reverse, naming any
thread it started that is still alive. Real parts throughout: the exported ONNX model, a drawn MJPG video, a
real gate simulator and SQLite log."""

from __future__ import annotations

import socket
import threading

import pytest
from runtime_kit import LINE_SPRITES

from ground.errors import UserError
from inspector import line as line_mod
from inspector.config import load_config
from inspector.line import Line, LineRequest


def _cfg(line_config, line_video, **changes):
    cfg = load_config(line_config)
    cfg.source.uri = str(line_video)
    cfg.display.enabled = "off"
    for dotted, value in changes.items():
        section, field = dotted.split("__")
        setattr(getattr(cfg, section), field, value)
    return cfg


class _Count:
    def __init__(self) -> None:
        self.parts = 0

    def on_part(self, part) -> None:
        self.parts += 1

    def close(self) -> None:
        pass


def test_line_runs_a_video_end_to_end_and_stops_in_reverse(line_config, line_video, tmp_path):
    cfg = _cfg(line_config, line_video, gate__port="sim", log__db=str(tmp_path / "log.db"))
    count = _Count()
    before = set(threading.enumerate())
    line = Line(cfg, LineRequest(events=str(tmp_path / "ev.jsonl"), view=False), sinks=[count])
    closed: list[str] = []
    with line:
        names = [name for name, _ in line.stages]
        for name, stage in line.stages:
            stage.close = (lambda f, n: lambda: (closed.append(n), f())[1])(stage.close, name)
        stats = line.run()
        health = line.health()
    assert health.model.name == cfg.model.path.rsplit("/", 1)[-1] and health.gate is not None
    assert health.inspection.frames == stats.frames and health.camera.frames >= stats.frames
    assert health.parts.as_dict() == {k: line.result()[k] for k in ("ok", "defect", "no_verdict")}
    assert health.log is not None
    # one part record, camera to log: each row written once, with the gate's outcome already in it
    import sqlite3

    con = sqlite3.connect(tmp_path / "log.db")
    rows = con.execute("SELECT part_id, verdict, gate_status FROM parts").fetchall()
    con.close()
    assert len(rows) == len(LINE_SPRITES) and all(status is not None for _, _, status in rows), rows
    assert line.dlog.stats["gate_updates"] == 0  # no second upsert of the same row
    assert names == [
        "engine",
        "sink EventsFile",
        "sink DefectLog",
        "sink Summary",
        "sink _Count",
        "gate",
        "capture",
        "view",
    ]
    assert closed == names[::-1]  # the view first, the engine last; the gate before the log it reports to
    assert stats.frames > 0 and count.parts == len(LINE_SPRITES)
    assert line.alive_after_stop == []
    assert {t for t in threading.enumerate() if t.is_alive()} <= before
    assert line.result()["parts"] == len(LINE_SPRITES)
    assert line.cfg is not cfg  # the caller's config is not changed by the line


def test_stop_names_a_thread_still_alive(line_config, line_video, monkeypatch):
    monkeypatch.setattr(line_mod, "THREAD_GRACE_S", 0.2)
    release = threading.Event()

    class _Stuck:
        """A sink whose worker does not end on close (a bug the line must report, not hide)."""

        def __init__(self) -> None:
            self.worker = threading.Thread(target=release.wait, args=(30,), name="stuck-sink-worker")

        def on_part(self, part) -> None:
            if not self.worker.is_alive() and not release.is_set():
                self.worker.start()

        def close(self) -> None:
            pass

    line = Line(_cfg(line_config, line_video), LineRequest(view=False), sinks=[_Stuck()])
    try:
        with line:
            line.run()
        assert line.alive_after_stop == ["stuck-sink-worker"]
    finally:
        release.set()


def test_a_stage_that_fails_to_start_closes_those_already_open(line_config, line_video):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cfg = _cfg(line_config, line_video, metrics__enabled=True, metrics__port=port)
        line = Line(cfg, LineRequest(view=False))
        with pytest.raises(UserError, match=str(port)):
            line.start()
    assert line.engine is not None and line.capture is None  # it stopped at the metrics server
    assert line.stages == []  # everything opened was closed again
    assert line.alive_after_stop == []

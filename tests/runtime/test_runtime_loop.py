"""The inspection loop against a scripted capture: stalls, the end of the source, stop requests, the view."""

from __future__ import annotations

import threading

import pytest
from runtime_kit import FakeEngine, ListSink, ScriptedCapture, as_frames, make_cfg, moving, render

from inspector.pipeline import LoopStats, Pipeline, run_loop
from inspector.records import Verdict


def setup(n=90, sprites=None):
    sprites = sprites or [moving(0, -60, 90, 9, n), moving(0, -260, 90, 9, n, defect=True)]
    sink = ListSink()
    return Pipeline(make_cfg(), FakeEngine(), [sink]), sink, as_frames(render(sprites, n))


def test_a_stall_rejects_the_parts_in_flight_with_the_reason():
    pipe, sink, frames = setup()
    stats = run_loop(pipe, ScriptedCapture(frames, stall_at={20}))
    stalled = [p for p in sink.parts if p.reason and "stalled" in p.reason]
    assert len(stalled) == 1 and stalled[0].verdict is Verdict.NO_VERDICT and stalled[0].rejected
    assert stats.stalls == 1 and stats.dropped == 3 and stats.frames == 90
    # The first part was in flight (not yet at the trigger) when the stall came: rejected, never judged twice.
    assert len({p.part_id for p in sink.parts}) == len(sink.parts)


def test_the_end_of_the_source_rejects_parts_still_on_the_belt():
    pipe, sink, frames = setup(n=50)  # the second part never reaches the trigger
    run_loop(pipe, ScriptedCapture(frames))
    verdicts = sorted((p.verdict.value, p.reason or "") for p in sink.parts)
    assert verdicts == [("no_verdict", "source ended before the part was classified"), ("ok", "")]


def test_stop_and_max_frames_end_the_loop_and_flush():
    pipe, sink, frames = setup()
    stop = threading.Event()
    stats = run_loop(pipe, ScriptedCapture(frames, stop_at=30, stop=stop), stop=stop)
    assert stats.frames == 31
    assert [p.verdict for p in sink.parts] == [Verdict.NO_VERDICT] * 2
    assert all("run stopped" in p.reason for p in sink.parts)

    pipe, sink, frames = setup()
    stats = run_loop(pipe, ScriptedCapture(frames), max_frames=45)
    assert stats.frames == 45
    assert sorted(p.verdict.value for p in sink.parts) == ["no_verdict", "ok"]


class QuitAfter:
    paused = False

    def __init__(self, n):
        self.n, self.seen = n, 0

    def update(self, view, stats: LoopStats) -> bool:
        if view is not None:
            self.seen += 1
            assert view.image is not None and view.roi is not None
        return self.seen < self.n

    def close(self):
        pass


def test_the_view_sees_every_frame_and_can_quit():
    pipe, sink, frames = setup()
    view = QuitAfter(25)
    stats = run_loop(pipe, ScriptedCapture(frames), view=view)
    assert view.seen == 25 and stats.frames == 25
    assert stats.summary is None and stats.fps >= 0


def test_a_failing_sink_does_not_stop_inspection():
    class Broken:
        def on_part(self, part):
            raise OSError("disk full")

        def close(self):
            pass

    sprites = [moving(0, -60, 90, 9, 90)]
    sink = ListSink()
    pipe = Pipeline(make_cfg(), FakeEngine(), [Broken(), sink])
    run_loop(pipe, ScriptedCapture(as_frames(render(sprites, 90))))
    assert [p.verdict for p in sink.parts] == [Verdict.OK]


def test_a_change_of_frame_size_restarts_tracking_with_fresh_part_ids():
    pipe, sink, frames = setup(n=60)
    big = as_frames(render([moving(0, -60, 90, 9, 90)], 90, size=(800, 300)))
    for f in big:
        f.seq += 60
    run_loop(pipe, ScriptedCapture(frames + big))
    ids = [p.part_id for p in sink.parts]
    assert len(ids) == len(set(ids)) == 3
    resized = [p for p in sink.parts if p.reason and "frame size changed" in p.reason]
    assert len(resized) == 1  # the part in flight at the change is rejected, not judged twice


def test_a_frame_that_cannot_be_inspected_rejects_parts_in_flight_and_the_line_goes_on():
    pipe, sink, frames = setup()
    frames[20].image = frames[20].image[:, :, :2]  # a broken frame: two channels
    stats = run_loop(pipe, ScriptedCapture(frames))
    assert stats.errors == 1 and stats.frames == 90
    errors = [p for p in sink.parts if p.reason and "inspection error on frame 20" in p.reason]
    assert len(errors) == 1 and errors[0].rejected
    assert len({p.part_id for p in sink.parts}) == len(sink.parts) == 3  # the second part is judged normally


def test_frames_failing_in_a_row_stop_the_run():
    pipe, sink, frames = setup()
    for f in frames:
        f.image = f.image[:, :, :2]
    with pytest.raises(Exception):  # noqa: B017 - whatever OpenCV raises, it is not swallowed
        run_loop(pipe, ScriptedCapture(frames))

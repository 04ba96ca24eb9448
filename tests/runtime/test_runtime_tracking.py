"""Tracking and classify-once on drawn frames with a fake engine (pure logic: no model, no video)."""

from __future__ import annotations

import numpy as np
import pytest
from runtime_kit import DEFECT_GRAY, FakeEngine, ListSink, Sprite, as_frames, make_cfg, moving, render

from inspector.pipeline import Pipeline
from inspector.records import Verdict


def run(images, cfg=None, engine=None):
    engine = engine or FakeEngine()
    sink = ListSink()
    pipe = Pipeline(cfg or make_cfg(), engine, [sink])
    frames = as_frames(images)
    for f in frames:
        pipe.process(f)
    pipe.flush("source ended", frames[-1])
    return sink.parts, engine, pipe


def crossing_frame(sprite, trigger_x: float) -> int:
    """First frame whose centre is at or past the trigger line (what the pipeline must use)."""
    return min(f for f, (x, _) in sprite.path.items() if x + (sprite.size - 1) / 2 >= trigger_x)


def test_one_part_classified_once_at_the_trigger_frame():
    s = moving(0, -50, 90, 9, 90, defect=True)
    parts, engine, _ = run(render([s], 90))
    assert len(parts) == 1
    p = parts[0]
    assert p.verdict is Verdict.DEFECT and p.score == 1.0 and p.cls == "def_front"
    assert p.frame_index == crossing_frame(s, 320)
    assert engine.batches == [1]
    assert p.t_verdict_ns is not None and p.t_infer_start_ns is not None and p.crop is not None
    x, y, w, h = p.bbox
    assert (w, h) == (60, 60) and abs(y - 90) <= 1


def test_parts_close_together_keep_their_own_ids_and_verdicts():
    # 10 px gaps at 14 px/frame: a part moves further per frame than the gap to the next one.
    sprites = [moving(0, -70 * i - 60, 90, 14, 120, defect=(i % 2 == 1)) for i in range(5)]
    parts, _, _ = run(render(sprites, 120))
    assert len(parts) == 5
    assert len({p.part_id for p in parts}) == 5
    by_frame = sorted(parts, key=lambda p: p.frame_index)
    expected = sorted(sprites, key=lambda s: crossing_frame(s, 320))
    for p, s in zip(by_frame, expected, strict=True):
        assert p.frame_index == crossing_frame(s, 320)
        assert p.verdict is (Verdict.DEFECT if s.defect else Verdict.OK)


def test_part_clipped_by_the_roi_edge_waits_until_fully_in():
    # Trigger close to the entry edge: the centre crosses it while the part is still half outside.
    cfg = make_cfg(roi={"trigger": 0.04})
    s = moving(0, -55, 90, 5, 60)
    parts, _, _ = run(render([s], 60), cfg)
    assert len(parts) == 1 and parts[0].verdict is Verdict.OK
    first_inside = min(f for f, (x, _) in s.path.items() if x >= 1)
    assert parts[0].frame_index == first_inside
    assert parts[0].bbox[0] >= 1


def test_part_never_fully_in_the_roi_gets_no_verdict():
    # Runs along the ROI's bottom edge, half outside: never judged on half a view, rejected when it leaves.
    cfg = make_cfg(roi={"x": 0, "y": 0, "height": 200})
    s = moving(0, -50, 170, 12, 80)
    parts, _, _ = run(render([s], 80), cfg)
    assert len(parts) == 1
    assert parts[0].verdict is Verdict.NO_VERDICT and parts[0].rejected
    assert "never fully inside" in parts[0].reason


@pytest.mark.parametrize("stop_at", [20, 28, 36])  # before, on, after the trigger line
def test_part_that_stops_on_the_belt_stays_one_part(stop_at):
    s = moving(0, -60, 90, 10, 140, stop=(stop_at, stop_at + 50), defect=True)
    parts, engine, _ = run(render([s], 140))
    assert len(parts) == 1 and parts[0].verdict is Verdict.DEFECT
    assert engine.batches == [1]


def test_two_parts_entering_at_once_go_through_the_engine_in_one_batch():
    a = moving(0, -60, 20, 8, 90)
    b = moving(0, -60, 150, 8, 90, defect=True)
    parts, engine, _ = run(render([a, b], 90))
    assert len(parts) == 2
    assert engine.batches == [2]
    assert parts[0].frame_index == parts[1].frame_index
    verdicts = {p.bbox[1] // 100: p.verdict for p in parts}
    assert verdicts == {0: Verdict.OK, 1: Verdict.DEFECT}


@pytest.mark.parametrize("direction", ["right", "left", "down", "up"])
def test_every_belt_direction(direction):
    sprites = [moving(0, -60 - 110 * i, 90, 11, 110, defect=bool(i % 2)) for i in range(3)]
    images = render(sprites, 110)
    if direction == "left":
        images = [np.ascontiguousarray(im[:, ::-1]) for im in images]
    elif direction in ("down", "up"):
        images = [np.ascontiguousarray(im.transpose(1, 0, 2)) for im in images]
        if direction == "up":
            images = [np.ascontiguousarray(im[::-1]) for im in images]
    parts, _, _ = run(images, make_cfg(roi={"direction": direction}))
    assert [p.verdict for p in sorted(parts, key=lambda p: p.frame_index)] == [Verdict.OK, Verdict.DEFECT, Verdict.OK]
    assert [p.frame_index for p in sorted(parts, key=lambda p: p.frame_index)] == [
        crossing_frame(s, 320) for s in sprites
    ]


def test_a_part_moving_backwards_is_not_the_same_part():
    # A blob jumping 40 px against the belt is a different part, not the tracked one jittering back.
    cfg = make_cfg()
    sink = ListSink()
    pipe = Pipeline(cfg, FakeEngine(), [sink])
    fwd = moving(0, 100, 90, 10, 6)
    images = render([fwd], 6)
    for i, im in enumerate(images):
        pipe.process(as_frames([im])[0].__class__(i, i, im))
    ids_before = {t.track_id for t in pipe.tracker.tracks}
    back = render([moving(0, 110, 90, 0, 1)], 1)[0]  # 40 px behind the last position
    pipe.process(as_frames([back])[0].__class__(6, 6, back))
    assert {t.track_id for t in pipe.tracker.tracks} - ids_before, "expected a new track"


def test_inference_failure_rejects_the_parts_with_the_reason():
    s = moving(0, -50, 90, 9, 90)
    parts, _, _ = run(render([s], 90), engine=FakeEngine(fail=True))
    assert len(parts) == 1
    assert parts[0].verdict is Verdict.NO_VERDICT and "inference failed: device lost" in parts[0].reason


def test_source_ending_mid_part_rejects_the_part_in_flight():
    s = moving(0, -50, 90, 9, 30)  # ends before the trigger
    parts, _, _ = run(render([s], 30))
    assert len(parts) == 1
    assert parts[0].verdict is Verdict.NO_VERDICT and parts[0].reason == "source ended"


def test_threshold_from_config_overrides_the_model():
    s = moving(0, -50, 90, 9, 90, defect=True)
    parts, _, _ = run(render([s], 90), make_cfg(model={"threshold": 1.0}))
    # score 1.0 >= 1.0 stays a defect; an OK part with score 0 stays OK
    assert parts[0].verdict is Verdict.DEFECT
    parts, _, _ = run(render([moving(0, -50, 90, 9, 90)], 90), make_cfg(model={"threshold": 0.0}))
    assert parts[0].verdict is Verdict.DEFECT  # threshold 0: everything is a defect


def test_classify_at_centre_picks_the_frame_closest_to_the_line():
    cfg = make_cfg(tracking={"classify_at": "centre"})
    s = moving(0, -50, 90, 17, 70)
    parts, _, _ = run(render([s], 70), cfg)
    assert len(parts) == 1
    best = min(s.path, key=lambda f: abs(s.path[f][0] + 30 - 320))
    assert parts[0].frame_index == best
    assert abs(parts[0].bbox[0] + 30 - 320) <= 9
    assert DEFECT_GRAY > 0


def test_parts_that_touch_for_a_while_come_apart_as_themselves():
    # A sticks at x=120 for a while; B runs into it and pushes it along, touching (one blob) for ~15 frames;
    # then B falls behind. Each keeps its id and gets exactly one verdict; nothing is rejected for being lost.
    a_path, b_path = {}, {}
    ax, bx = 0.0, -200.0
    for f in range(110):
        if f < 15:
            ax += 8
        elif 30 <= f:
            ax += 8
        if bx + 60 < ax:
            bx = min(bx + 12, ax - 60) if f < 38 else bx + 5
        else:
            bx = ax - 60 if f < 38 else bx + 5
        a_path[f], b_path[f] = (int(ax), 90), (int(bx), 90)
    a, b = Sprite(a_path, defect=True), Sprite(b_path)
    touching = [f for f in range(110) if b_path[f][0] + 60 >= a_path[f][0]]
    assert len(touching) >= 12
    parts, _, _ = run(render([a, b], 110))
    assert sorted(p.verdict.value for p in parts) == ["defect", "ok"]
    assert len({p.part_id for p in parts}) == 2


def test_a_part_that_splits_into_two_blobs_is_still_one_part():
    # A dark band across the part splits its blob in two for some frames (deep scratch, shadow).
    s = moving(0, -60, 90, 9, 90, defect=True)
    images = render([s], 90)
    for f in range(20, 40):
        x, y = s.path[f]
        images[f][y : y + 60, max(0, x + 12) : max(0, x + 19)] = 40  # 7 px belt-coloured gap
    parts, _, _ = run(images)
    assert [p.verdict for p in parts] == [Verdict.DEFECT]

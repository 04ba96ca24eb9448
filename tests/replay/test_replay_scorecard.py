"""Scorecard logic on hand-made events and truth (pure: no video, no model)."""

from __future__ import annotations

from pathlib import Path

import pytest

from inspector.scorecard import score

# Three parts on a belt running right: the trigger line is at x = 320, parts 100 px, at different heights.
TRUTH = [
    {
        "part_id": 1,
        "label": "ok",
        "trigger_frame": 10,
        "x": 270,
        "y": 50,
        "w": 100,
        "h": 100,
        "enter_frame": 0,
        "exit_frame": 30,
    },
    {
        "part_id": 2,
        "label": "defect",
        "trigger_frame": 40,
        "x": 271,
        "y": 300,
        "w": 100,
        "h": 100,
        "enter_frame": 25,
        "exit_frame": 60,
    },
    {
        "part_id": 3,
        "label": "defect",
        "trigger_frame": 70,
        "x": 272,
        "y": 150,
        "w": 100,
        "h": 100,
        "enter_frame": 55,
        "exit_frame": 90,
    },
]


def ev(frame: int, verdict: str, y: int = 50, x: int = 272) -> dict:
    return {"part_id": frame, "frame_index": frame, "verdict": verdict, "bbox": [x, y, 100, 100]}


def test_perfect_run() -> None:
    card = score([ev(10, "ok"), ev(41, "defect", 300), ev(70, "defect", 150)], TRUTH)
    d = card.to_dict()
    assert d["found"] == 3 and d["missed"] == d["split"] == d["duplicated"] == d["spurious"] == 0
    assert d["accuracy"] == 1.0 and d["escaped_defects"] == 0 and d["exactly_one_verdict"]
    assert d["verdict_frame_error_mean"] == pytest.approx(1 / 3, abs=1e-3) and d["verdict_frame_error_max"] == 1
    assert d["confusion"] == {
        "ok": {"ok": 1, "defect": 0, "no_verdict": 0, "missed": 0},
        "defect": {"ok": 0, "defect": 2, "no_verdict": 0, "missed": 0},
    }


@pytest.mark.parametrize(
    "events, expect",
    [
        # part 3 missed: an escaped defect
        ([ev(10, "ok"), ev(40, "defect", 300)], {"missed": 1, "escaped_defects": 1, "missed_part_ids": [3]}),
        # part 2 judged ok: escaped; part 1 judged defect: false reject
        (
            [ev(10, "defect"), ev(40, "ok", 300), ev(70, "defect", 150)],
            {"escaped_defects": 1, "false_rejects": 1, "accuracy": round(1 / 3, 4), "wrong_part_ids": [1, 2]},
        ),
        # part 1 seen as two blobs on the same frame: split
        (
            [ev(10, "ok"), ev(10, "ok", 90), ev(40, "defect", 300), ev(70, "defect", 150)],
            {"split": 1, "duplicated": 0, "exactly_one_verdict": False},
        ),
        # part 1 judged again 15 frames later: duplicated
        ([ev(10, "ok"), ev(25, "ok"), ev(40, "defect", 300), ev(70, "defect", 150)], {"duplicated": 1, "split": 0}),
        # a blob where no part is (wrong height), and one long after the line emptied: spurious
        (
            [ev(10, "ok"), ev(12, "ok", 420), ev(40, "defect", 300), ev(70, "defect", 150), ev(200, "ok")],
            {"spurious": 2, "found": 3},
        ),
        # part 2 with no verdict (rejected, not passed): not correct, not escaped, counted in its column
        (
            [ev(10, "ok"), ev(45, "no_verdict", 300), ev(70, "defect", 150)],
            {"escaped_defects": 0, "correct": 2, "exactly_one_verdict": False, "verdict_frame_error_max": 0},
        ),
        # verdict made 6 frames late: found, but off the trigger
        (
            [ev(16, "ok"), ev(40, "defect", 300), ev(70, "defect", 150)],
            {"verdicts_off_trigger": 1, "verdict_frame_error_max": 6, "found": 3},
        ),
    ],
)
def test_failures_are_counted(events: list[dict], expect: dict) -> None:
    d = score(events, TRUTH, tolerance_frames=2).to_dict()
    for k, v in expect.items():
        assert d[k] == v, (k, d)


def test_event_goes_to_the_nearest_trigger_among_parts_on_screen() -> None:
    # Parts 2 and 3 are both on screen at frame 56; the lateral position says which one it is.
    d = score([ev(10, "ok"), ev(56, "defect", 150), ev(41, "defect", 300)], TRUTH).to_dict()
    assert d["found"] == 3 and d["duplicated"] == 0 and d["verdict_frame_error_max"] == 14


def test_up_down_belt_uses_x_as_the_lateral_axis() -> None:
    truth = [dict(t, x=t["y"], y=t["x"]) for t in TRUTH]
    events = [
        {"frame_index": 10, "verdict": "ok", "bbox": [50, 270, 100, 100]},
        {"frame_index": 40, "verdict": "defect", "bbox": [50, 270, 100, 100]},
    ]  # wrong column for part 2
    d = score(events, truth).to_dict()
    assert d["found"] == 1 and d["spurious"] == 1


def test_reads_truth_csv_and_renders_table(tmp_path: Path) -> None:
    from rich.console import Console

    p = tmp_path / "t.csv"
    p.write_text("part_id,class,label,trigger_frame,image\n1,ok_front,ok,5,a.png\n2,def_front,defect,20,b.png\n")
    card = score([{"frame_index": 6, "verdict": "ok"}, {"frame_index": 30, "verdict": "ok"}], p)
    assert card.found == 1 and card.missed == 1 and len(card.spurious) == 1  # no boxes: frame window only
    console = Console(record=True, width=100)
    console.print(card.table())
    text = console.export_text()
    assert "escaped defects" in text and "missed" in text and "no_verdict" in text


def test_late_no_verdict_goes_to_its_own_part_not_a_neighbour() -> None:
    # Part 1 is lost; its track ends 8 frames after it left the view, when part 2 (40 px lower, trigger frame
    # near the event) is on screen: the place across the belt says whose no-verdict it is.
    truth = [
        {
            "part_id": 1,
            "label": "defect",
            "trigger_frame": 10,
            "x": 270,
            "y": 50,
            "w": 100,
            "h": 100,
            "enter_frame": 0,
            "exit_frame": 20,
        },
        {
            "part_id": 2,
            "label": "ok",
            "trigger_frame": 27,
            "x": 270,
            "y": 90,
            "w": 100,
            "h": 100,
            "enter_frame": 17,
            "exit_frame": 37,
        },
    ]
    events = [ev(28, "no_verdict", 52, x=560), ev(27, "ok", 90)]
    d = score(events, truth, tolerance_frames=2).to_dict()
    assert d["found"] == 2 and d["split"] == d["duplicated"] == d["spurious"] == 0
    assert d["confusion"]["defect"]["no_verdict"] == 1 and d["confusion"]["ok"]["ok"] == 1


def test_truth_with_boxes_but_no_entry_exit_columns(tmp_path: Path) -> None:
    p = tmp_path / "t.csv"
    p.write_text("part_id,label,trigger_frame,x,y,w,h\n1,ok,5,270,50,100,100\n2,defect,20,270,300,100,100\n")
    card = score([ev(5, "ok"), ev(21, "defect", 300)], p)
    assert card.found == 2 and card.accuracy == 1.0

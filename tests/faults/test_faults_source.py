"""Source faults: a camera that freezes (and comes back), a recording that ends mid-part, corrupt frames.

The live camera is a real gst-launch-1.0 pipeline (played at its own clock, so it is live: latest frame wins)
frozen with SIGSTOP, exactly what a wedged driver looks like from here; recordings are real MJPG files.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from faults_kit import Hook, Line, check_fail_safe, corrupt_jpeg_frames, line_video, run_cli, write_config

from inspector.records import Verdict

STALLED = "source stalled; part in flight rejected"
PARTS = [(0, False), (14, True), (28, False), (42, True)]  # (first frame, defect); 8 px/frame, 40 px parts


def _live(video: Path) -> str:
    return f"gst:uridecodebin uri=file://{video} ! identity sync=true"


@pytest.fixture
def live_video(tmp_path: Path) -> Path:
    if shutil.which("gst-launch-1.0") is None:
        pytest.skip("gst-launch-1.0 not installed (apt-get install gstreamer1.0-tools)")
    return line_video(tmp_path / "line.avi", PARTS, 100)


def test_stall_rejects_the_parts_in_flight_and_the_line_comes_back(kit, tmp_path: Path, live_video: Path) -> None:
    """Camera frozen (SIGSTOP) while a part is on its way to the trigger line.

    Expected: the stall is noticed (stall_timeout_s 0.5), every part in flight at that moment gets
    NO_VERDICT "source stalled; part in flight rejected", goes to the gate as a reject and is logged with that
    reason; the source is reopened (1 stall, 1 reopen) and later parts get real verdicts again (OK here).
    Parts that cross the camera unseen while it is frozen are diverted: the pipeline tells the gate, which
    holds the controller (HOLD SOURCE_STALL) from the stall until one belt travel after frames flow again -
    the simulator's record shows the diverter out over every gate time such a part could have - then RUN."""
    # 1.5 s of belt to the gate: the reject of a part lost in a 0.5 s stall can still reach it
    line = Line(tmp_path, kit, _live(live_video), source={"stall_timeout_s": 0.5}, gate={"camera_to_gate_mm": 300.0})
    state: dict = {"in_flight": None, "pid": None}

    def hook(view) -> bool:
        if view is None:
            return True
        if state["in_flight"] is None:
            # a part well short of the trigger line, its speed known (8 px per 33.3 ms frame)
            due = [
                t
                for t in view.tracks
                if not t.classified and t.hits >= 6 and t.pos < view.roi.trigger_px - 40 and view.seq >= 20
            ]  # the frame rate is known by then
            if due:
                state["in_flight"] = {t.track_id for t in view.tracks if not t.classified}
                state["pid"] = line.capture.source.pid
                os.kill(state["pid"], signal.SIGSTOP)
                state["t_stop"] = time.monotonic_ns()
                t = due[0]
                state["eta"] = (t.track_id, time.monotonic_ns() + (view.roi.trigger_px - t.pos) / 8 * 33.3e6)
            return True
        if line.capture.stats.stalls and "t_back" not in state:  # capture time of the first frame back
            state["t_back"] = line.pipeline._last_capture_ns
        after = [p for p in line.parts.parts if p.part_id > max(state["in_flight"]) and p.verdict is Verdict.OK]
        return len(after) < 2 or line.gate.held.is_set()  # the line is back (two parts judged) and released

    line.run(Hook(hook), timeout_s=40)
    assert state["in_flight"], "no part was ever in flight"
    assert line.capture.stats.stalls == 1 and line.capture.stats.reopens == 1, line.capture.stats
    lost = {p.part_id: p.reason for p in line.parts.by_verdict(Verdict.NO_VERDICT)}
    assert {i for i, why in lost.items() if why == STALLED} == state["in_flight"], lost
    # besides those, only parts still on their way when the test stopped the run
    assert all(
        why == "run stopped before the part was classified" for i, why in lost.items() if i not in state["in_flight"]
    ), lost
    assert sum(p.verdict is Verdict.OK for p in line.parts.parts) >= 2
    # its reject aims at when it reaches the trigger line (and so the gate), not at where it was last seen
    pid, eta = state["eta"]
    part = next(p for p in line.parts.parts if p.part_id == pid)
    assert abs(part.t_capture_ns - eta) < 120e6, (part.t_capture_ns - eta) / 1e6
    rows = check_fail_safe(line)
    assert all(rows[i]["reason"] == STALLED and rows[i]["gate_status"] == "fired" for i in state["in_flight"]), rows
    # a part crossing the trigger line unseen between the freeze and the first frame back reaches the gate in
    # [t_stop, t_back] + travel: one HOLD interval covers all of it, and it ended (RUN) after that
    travel = line.gate.travel_ns
    assert [e["reason"] for e in line.sim.events if e["event"] == "hold"] == ["SOURCE_STALL"], line.sim.holds()
    held = [h for h in line.sim.holds() if h[0] <= state["t_stop"] + travel]
    assert held and held[-1][1] is not None and held[-1][1] >= state["t_back"] + travel, (held, state, travel)
    assert line.gate.stats["holds"] == 1 and line.gate.stats["releases"] == 1, line.gate.stats


def test_short_freeze_under_the_stall_timeout_loses_nothing(kit, tmp_path: Path, live_video: Path) -> None:
    """Camera frozen 0.25 s (SIGSTOP, then SIGCONT) with a part in flight, stall_timeout_s 1.0.

    Expected: no stall counted, no reopen, all 4 parts of the clip judged exactly once, none without a verdict
    (the part in flight is tracked across the gap: the frozen frames are simply late)."""
    line = Line(tmp_path, kit, _live(live_video), source={"stall_timeout_s": 1.0})
    state: dict = {"paused": False}

    def hook(view) -> bool:
        if view is not None and not state["paused"] and any(not t.classified and t.hits >= 2 for t in view.tracks):
            state["paused"] = True
            pid = line.capture.source.pid
            os.kill(pid, signal.SIGSTOP)
            threading.Timer(0.25, os.kill, (pid, signal.SIGCONT)).start()
        return len(line.parts.parts) < len(PARTS)

    line.run(Hook(hook), timeout_s=30)
    assert state["paused"]
    assert line.capture.stats.stalls == 0 and line.capture.stats.reopens == 0, line.capture.stats
    assert [p.verdict for p in line.parts.parts] == [Verdict.OK] * len(PARTS), line.parts.parts
    check_fail_safe(line)


def _run_file(kit, tmp: Path, video: Path, *extra: str):
    cfg = write_config(tmp / "line.yaml", kit, str(video), f"log:\n  db: {tmp / 'log' / 'defects.db'}\n")
    proc = run_cli(
        "run", "--config", str(cfg), "--events", str(tmp / "ev.jsonl"), "--serial", "sim", *extra, cwd=tmp, timeout=90
    )
    events = [json.loads(x) for x in (tmp / "ev.jsonl").read_text().splitlines()]
    con = sqlite3.connect(tmp / "log" / "defects.db")
    con.row_factory = sqlite3.Row
    rows = {r["part_id"]: dict(r) for r in con.execute("SELECT * FROM parts")}
    con.close()
    summary = json.loads((tmp / "ev.summary.json").read_text())
    return proc, events, rows, summary


def test_recording_that_ends_mid_part_rejects_that_part(kit, tmp_path: Path) -> None:
    """A recording cut while its second part is still short of the trigger line (`inspector run`).

    Expected: exit 0; part 1 judged OK; part 2 NO_VERDICT "source ended before the part was classified",
    sent to the gate as a reject (status fired or failsafe, never passed) and logged with that reason."""
    video = line_video(tmp_path / "cut.avi", [(0, False), (14, False)], 29)  # part 2 centre at x=100 < 160
    proc, events, rows, _ = _run_file(kit, tmp_path, video)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [e["verdict"] for e in events] == ["ok", "no_verdict"], events
    reason = "source ended before the part was classified"
    assert events[1]["reason"] == reason
    r = rows[events[1]["part_id"]]
    assert (r["verdict"], r["reason"], r["reject_sent"]) == ("no_verdict", reason, 1), r
    assert r["gate_status"] in ("fired", "failsafe"), r


def test_corrupt_frames_are_skipped_counted_and_never_judged(kit, tmp_path: Path) -> None:
    """Three undecodable JPEG frames in the middle of a recording, while a part passes (`inspector run`).

    Expected: exit 0; the summary counts 3 corrupt frames; no frame is invented for them; all 4 parts are
    still judged exactly once (the tracker bridges the gap), none without a verdict; one log row per part."""
    video = corrupt_jpeg_frames(line_video(tmp_path / "rot.avi", PARTS, 95), (30, 31, 32))
    proc, events, rows, summary = _run_file(kit, tmp_path, video)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert summary["corrupt_frames"] == 3, summary
    assert summary["frames"] == 95 - 3, summary
    assert [e["verdict"] for e in events] == ["ok"] * 4, events
    assert sorted(rows) == sorted(e["part_id"] for e in events)

"""One part record from camera to log: every stage stamps the same Part (monotonic ns), and Part.to_row() is the
one serialisation the events file, the defect log and MQTT share. The gate stamps its outcome on it too."""

from __future__ import annotations

import json
import sqlite3
import threading

from runtime_kit import LINE_FRAMES, LINE_SPRITES, FakeEngine, ListSink, as_frames, make_cfg, render

from inspector.config import GateConfig, LogConfig
from inspector.defectlog import open_log
from inspector.events import EventsFile
from inspector.gate import open_actuator
from inspector.pipeline import Pipeline
from inspector.records import Verdict
from tests.waiting import wait_for


def _run(sinks) -> list:
    keep = ListSink()
    pipe = Pipeline(make_cfg(), FakeEngine(), [keep, *sinks])
    for frame in as_frames(render(LINE_SPRITES, LINE_FRAMES)):
        pipe.process(frame)
    pipe.flush("end")
    return keep.parts


def test_each_stage_stamps_the_part_in_order_in_one_unit(tmp_path):
    parts = [p for p in _run([]) if p.verdict is not Verdict.NO_VERDICT]
    assert len(parts) == len(LINE_SPRITES)
    for p in parts:
        stamps = [
            p.t_capture_ns,
            p.t_detect_ns,
            p.t_infer_start_ns,
            p.t_engine_start_ns,
            p.t_engine_end_ns,
            p.t_verdict_ns,
        ]
        assert all(isinstance(s, int) for s in stamps), stamps  # monotonic ns, nothing in other units
        assert stamps[1:] == sorted(stamps[1:])  # (the drawn frames' capture stamps are synthetic)
        assert p.batch_size >= 1
        assert p.engine_ms <= p.infer_ms  # the engine call is part of preprocessing + engine + decision
        stages = p.stage_ms()
        assert set(stages) == {"capture_to_detect_ms", "preprocess_ms", "engine_ms", "engine_to_verdict_ms"}
        assert not hasattr(p, "timings")  # no second bag of durations beside the stamps


def test_events_and_defect_log_carry_the_same_row(tmp_path):
    events = EventsFile(tmp_path / "ev.jsonl")
    dlog = open_log(LogConfig(db=str(tmp_path / "log.db")), "m" * 16, "c" * 16)
    parts = _run([events, dlog])
    events.close()
    dlog.close()
    lines = {e["part_id"]: e for e in map(json.loads, (tmp_path / "ev.jsonl").read_text().splitlines())}
    assert lines == {p.part_id: p.to_row() for p in parts}
    con = sqlite3.connect(tmp_path / "log.db")
    con.row_factory = sqlite3.Row
    rows = {r["part_id"]: dict(r) for r in con.execute("SELECT * FROM parts")}
    con.close()
    assert set(rows) == set(lines)
    for pid, ev in lines.items():
        r = rows[pid]
        assert (r["frame"], r["verdict"], r["score"], r["class"], r["reason"], r["latency_ms"]) == (
            ev["frame_index"],
            ev["verdict"],
            ev["score"],
            ev["class"],
            ev["reason"],
            ev["latency_ms"],
        )
        if r["timings"]:
            assert set(json.loads(r["timings"])) <= {
                "capture_to_detect_ms",
                "preprocess_ms",
                "engine_ms",
                "engine_to_verdict_ms",
            }


def test_the_gate_stamps_its_outcome_on_the_same_record():
    cfg = GateConfig(
        port="sim",
        camera_to_gate_mm=150.0,
        belt_speed_mm_s=1000.0,
        worst_latency_ms=20.0,
        link_timeout_ms=60.0,
        heartbeat_ms=20.0,
        pulse_ms=5.0,
    )
    results = []
    done = threading.Event()

    def on_result(r):
        results.append(r)
        if len(results) == len(LINE_SPRITES):
            done.set()

    gate = open_actuator(cfg, on_result=on_result)
    try:
        parts = [p for p in _run([gate]) if p.verdict is not Verdict.NO_VERDICT]
        assert done.wait(10), f"{len(results)} gate results"
    finally:
        gate.close()
    assert len(parts) == len(LINE_SPRITES)
    by_id = {r.part_id: r for r in results}
    for p in parts:
        assert p.gate is by_id[p.part_id]  # the very outcome the log was given, on the part itself
        assert p.gate.gate_ns == p.t_capture_ns + cfg.travel_ns
        if p.rejected:
            assert p.gate.sent_ns is not None and p.gate.sent_ns >= p.t_verdict_ns


def test_with_a_gate_the_log_writes_each_row_once_with_its_outcome(tmp_path):
    from inspector.records import GateResult, Part

    dlog = open_log(LogConfig(db=str(tmp_path / "log.db")), "m" * 16, "c" * 16, gate_wait_s=0.3)
    t0 = 10**12
    parts = [
        Part(
            i,
            i,
            t0,
            (0, 0, 8, 8),
            Verdict.DEFECT,
            0.9,
            "def_front",
            t_infer_start_ns=t0 + 1_000_000,
            t_verdict_ns=t0 + 2_000_000,
        )
        for i in range(3)
    ]
    for p in parts:
        dlog.on_part(p)
    dlog.gate_result(GateResult(0, True, "fired", t0 + 10**9, t0, sent_ns=t0 + 3_000_000))  # in time: merged
    assert dlog.queue_depth >= 2  # parts 1 and 2 still wait for their outcome
    # part 1's outcome never comes: its row is written after the wait without one; part 2's comes late
    assert wait_for(lambda: dlog.stats["rows"] == 3, timeout_s=10)
    dlog.gate_result(GateResult(2, True, "missed", t0 + 10**9, t0, reason="never acknowledged"))
    dlog.close()
    con = sqlite3.connect(tmp_path / "log.db")
    got = {pid: (status, sent) for pid, status, sent in con.execute("SELECT part_id, gate_status, sent_ms FROM parts")}
    con.close()
    assert got == {0: ("fired", 3.0), 1: (None, None), 2: ("missed", None)}
    assert dlog.stats["rows"] == 3 and dlog.stats["gate_updates"] == 1  # only the late outcome is an update

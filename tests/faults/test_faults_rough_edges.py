"""The rough edges a new user hits (issue 13, defects 2-13) that are not one `error:` line with exit 1.

Those are in the table of test_faults_bad_input.py (same path twice, a foreign file, an ROI outside the frame,
checkpoints that do not fit, config union fields, ...). Here: what must be accepted (YAML's on/off), what must be
counted right (the scorecard after an early stop, MQTT acknowledgements), what the export and reports write,
flags refused by argparse (exit 2), and stderr kept to the one line. Everything through the real CLI or the real
classes (a real SQLite log, a real paho client against a port with nothing behind it).
"""

from __future__ import annotations

import csv
import io
import json
import socket
import sqlite3
import time
from pathlib import Path

import pytest
from faults_kit import Kit, run_cli

from inspector.config import InspectorConfig, load_config
from inspector.records import Part, Verdict


def _cfg(tmp: Path, text: str) -> Path:
    p = tmp / "line.yaml"
    p.write_text(text)
    return p


# --- 3: YAML 1.1 booleans in on/off fields ------------------------------------------------------------------
@pytest.mark.parametrize(
    "text,field,want",
    [
        ("display:\n  enabled: on\n", ("display", "enabled"), "on"),  # unquoted, as the README shows it
        ("display:\n  enabled: off\n", ("display", "enabled"), "off"),
        ("display:\n  enabled: yes\n", ("display", "enabled"), "on"),
        ("display:\n  enabled: auto\n", ("display", "enabled"), "auto"),
        ("gate:\n  port: off\n", ("gate", "port"), None),  # None means no gate
        ("log:\n  db: no\n", ("log", "db"), None),
        ("log:\n  retention_days: off\n", ("log", "retention_days"), None),
        ("model:\n  min_sharpness: off\n", ("model", "min_sharpness"), None),
        ("metrics:\n  enabled: on\n", ("metrics", "enabled"), True),
        ("mqtt:\n  parts: off\n", ("mqtt", "parts"), False),
    ],
)
def test_on_off_words_are_accepted(tmp_path: Path, text: str, field: tuple[str, str], want: object) -> None:
    cfg = load_config(_cfg(tmp_path, text))
    assert getattr(getattr(cfg, field[0]), field[1]) == want


def test_on_off_field_still_refuses_other_words(tmp_path: Path) -> None:
    from ground.errors import UserError

    with pytest.raises(UserError, match=r"line.yaml:2: field 'display.enabled': Input should be 'auto', 'on' or 'off'"):
        load_config(_cfg(tmp_path, "display:\n  enabled: maybe\n"))
    with pytest.raises(UserError, match=r"field 'gate.port'"):  # on is not a port
        load_config(_cfg(tmp_path, "gate:\n  port: on\n"))


# --- 5: the scorecard after an early stop -------------------------------------------------------------------
def test_scorecard_scores_only_the_parts_the_run_could_see() -> None:
    from inspector.scorecard import score

    truth = [{"part_id": i, "label": "defect" if i % 2 else "ok", "trigger_frame": 10 + 20 * i} for i in range(6)]
    events = [
        {"frame_index": 10, "verdict": "ok"},
        {"frame_index": 30, "verdict": "defect"},
        {"frame_index": 45, "verdict": "no_verdict"},  # part 2 (trigger 50) still in view when the run stopped
    ]
    card = score(events, truth, seen_until=45)
    d = card.to_dict()
    assert (d["parts"], d["missed"], d["not_reached"], d["escaped_defects"]) == (3, 0, 3, 0)
    assert card.verdicts() == {0: "ok", 1: "defect", 2: "no_verdict"}
    whole = score(events, truth)  # without the stop frame (a file run to its end): every truth row counts
    assert whole.to_dict()["missed"] == 3 and whole.to_dict()["not_reached"] == 0


def test_demo_stopped_by_max_frames_counts_no_unseen_part_as_missed(tmp_path: Path) -> None:
    proc = run_cli("demo", "--no-display", "--max-frames", "100", "--events", str(tmp_path / "ev.jsonl"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    card = json.loads((tmp_path / "scorecard.json").read_text())
    assert card["missed"] == 0 and card["not_reached"] > 0, card
    assert card["parts"] + card["not_reached"] > card["parts"] > 0
    assert card["escaped_defects"] == 0, card


# --- 9: MQTT counts what the broker acknowledged ------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _part(i: int, verdict: Verdict = Verdict.OK) -> Part:
    t = time.monotonic_ns()
    return Part(
        part_id=i,
        frame_index=i,
        t_capture_ns=t - 5_000_000,
        bbox=(0, 0, 10, 10),
        verdict=verdict,
        score=0.123456789,
        cls="ok_front",
        t_infer_start_ns=t - 3_000_000,
        t_detect_ns=t - 4_000_000,
        t_engine_start_ns=t - 2_000_000,
        t_engine_end_ns=t - 1_000_000,
        t_verdict_ns=t,
    )


def test_mqtt_to_a_dead_broker_reports_nothing_published() -> None:
    pytest.importorskip("paho.mqtt.client", reason="paho-mqtt is not installed (pip install 'paho-mqtt>=2')")
    from inspector.config import MqttConfig
    from inspector.mqtt import MqttPublisher

    port = _free_port()  # nothing listens there
    pub = MqttPublisher(MqttConfig(enabled=True, port=port, topic="t/rough"))
    for i in range(3):
        pub.on_part(_part(i))
    deadline = time.monotonic() + 10
    while pub.stats["parts"] < 3 and time.monotonic() < deadline:  # handed to paho by its publisher thread
        time.sleep(0.02)
    pub.close(timeout_s=1.0)
    report = pub.report()
    assert pub.stats["acked"] == 0
    assert "0 part message(s) published under t/rough/parts" in report, report
    assert "3 never acknowledged by the broker" in report, report


# --- 13: the export -----------------------------------------------------------------------------------------
def _log_with_parts(tmp: Path) -> Path:
    from inspector.config import LogConfig
    from inspector.defectlog import DefectLog

    db = tmp / "defects.db"
    log = DefectLog(LogConfig(db=str(db), ok_sample_fraction=0.0))
    for i in range(3):
        log.on_part(_part(i))
    log.close()
    return db


def test_export_rounds_scores_and_writes_timings_as_an_object(tmp_path: Path) -> None:
    from inspector.defectlog.query import export

    db = _log_with_parts(tmp_path)
    assert sqlite3.connect(db).execute("SELECT COUNT(*) FROM parts").fetchone()[0] == 3
    out = io.StringIO()
    assert export(db, out, fmt="jsonl") == 3
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    for r in rows:
        assert r["score"] == 0.1235  # 4 significant digits, not 0.123457
        assert isinstance(r["timings"], dict) and r["timings"]["engine_ms"] == pytest.approx(1.0, abs=0.01)
    out = io.StringIO()
    export(db, out, fmt="csv")
    table = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [r["score"] for r in table] == ["0.1235"] * 3
    assert json.loads(table[0]["timings"])["engine_ms"] == pytest.approx(1.0, abs=0.01)  # CSV: JSON text


# --- 13: bench-engine ---------------------------------------------------------------------------------------
def test_bench_reports_ms_per_image_and_images_per_s_from_one_statistic(kit: Kit) -> None:
    from engines.base import load_engine
    from engines.bench import bench_batch

    with load_engine(kit.onnx) as engine:
        row = bench_batch(engine, 4, seconds=0.3)
    assert row.images_per_s == pytest.approx(1000.0 / row.per_image_ms, rel=1e-9)


def test_bench_engine_takes_several_models(kit: Kit, tmp_path: Path) -> None:
    proc = run_cli("bench-engine", str(kit.onnx), str(kit.pt), "--batch", "1", "--seconds", "0.2", timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    flat = " ".join(proc.stdout.split())
    assert "onnxruntime" in flat and "pytorch" in flat, proc.stdout
    assert "median" in flat


# --- 13: Grad-CAM captions ----------------------------------------------------------------------------------
def test_gradcam_captions_say_correct_or_wrong_and_are_legible() -> None:
    from training.plots import CAPTION_PT, gradcam_caption

    right = gradcam_caption("correct", "ok_front", "ok_front", 0.01)
    wrong = gradcam_caption("wrong", "def_front", "ok_front", 0.2)
    assert right.startswith("correct:") and wrong.startswith("wrong:")
    assert "P(defect) 0.01" in right and "true" not in right
    assert CAPTION_PT >= 9


# --- 12: the command line -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "argv,flag,expect",
    [
        (["run", "--max-frames", "0"], "--max-frames", "expected a whole number of 1 or more, got 0"),
        (["run", "--max-frames", "-5"], "--max-frames", "expected a whole number of 1 or more, got -5"),
        (["run", "--camera", "-1"], "--camera", "expected a whole number of 0 or more, got -1"),
        (["demo", "--max-frames", "0"], "--max-frames", "expected a whole number of 1 or more, got 0"),
        (["train", "--data", "d", "--out", "o", "--epochs", "0"], "--epochs", "got 0"),
        (["train", "--data", "d", "--out", "o", "--target-recall", "1.5"], "--target-recall", "at most 1, got 1.5"),
        (["simulate", "--parts", "0"], "--parts", "got 0"),
        (["simulate", "--fps", "nan"], "--fps", "expected a number above 0, got nan"),
        (["bench-engine", "m.onnx", "--seconds", "0"], "--seconds", "expected a number above 0, got 0"),
        (["simulate", "--trigger", "1"], "--trigger", "between 0 and 1"),
        (["gate-sim", "--duration", "-1"], "--duration", "got -1"),
    ],
)
def test_numeric_flags_out_of_range_are_refused(argv: list[str], flag: str, expect: str, tmp_path: Path) -> None:
    proc = run_cli(*argv, cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout[-1000:] + proc.stderr[-1000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert f"error: argument {flag}" in last and expect in last, proc.stderr
    assert "Traceback" not in proc.stderr


def test_verbose_flag_after_the_sub_command(tmp_path: Path, root: Path) -> None:
    proc = run_cli("check-config", "-v", str(root / "configs" / "default.yaml"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("log", "stats", "--db", str(tmp_path / "nope.db"), "-vv", cwd=tmp_path)
    assert proc.returncode == 1 and "no such defect log" in proc.stderr, proc.stderr  # parsed, then refused


def test_failed_train_leaves_no_empty_out_folder(tmp_path: Path) -> None:
    (tmp_path / "data" / "ok").mkdir(parents=True)  # a class folder with no images: refused
    proc = run_cli("train", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert proc.returncode == 1 and "hold no files" in proc.stderr, proc.stderr
    assert not (tmp_path / "run").exists()
    (tmp_path / "mine").mkdir()  # a folder that was there before is the operator's: left alone
    proc = run_cli("train", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "mine"), cwd=tmp_path)
    assert proc.returncode == 1 and (tmp_path / "mine").is_dir()


# --- 11: stderr holds the one line; OpenCV's and FFmpeg's noise only with -v ----------------------------------
def test_opencv_and_ffmpeg_noise_stays_behind_verbose(kit: Kit, tmp_path: Path) -> None:
    bad = tmp_path / "cut.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom")  # a header and no moov atom
    argv = ["run", "--no-display", "--model", str(kit.onnx), "--source", str(bad)]
    proc = run_cli(*argv, cwd=tmp_path)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: source"), proc.stderr
    loud = run_cli("-v", *argv, cwd=tmp_path)
    assert loud.returncode == 1 and "moov atom not found" in loud.stderr, loud.stderr
    proc = run_cli("run", "--no-display", "--model", str(kit.onnx), "--source", "rtsp://127.0.0.1:9/x", cwd=tmp_path)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 1 and len(lines) == 1 and "connection refused" in lines[0], proc.stderr


# --- 7: check-config ----------------------------------------------------------------------------------------
def test_check_config_says_an_empty_file_is_empty(tmp_path: Path) -> None:
    for text in ("", "# nothing here yet\n"):
        proc = run_cli("check-config", str(_cfg(tmp_path, text)), cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert "empty" in proc.stdout and "defaults apply" in proc.stdout, proc.stdout


def test_check_config_checks_the_files_it_names(kit: Kit, tmp_path: Path) -> None:
    good = _cfg(tmp_path, f"source:\n  uri: {kit.video}\nmodel:\n  path: {kit.onnx}\n")
    proc = run_cli("check-config", str(good), cwd=tmp_path)
    assert proc.returncode == 0 and "valid" in proc.stdout and "empty" not in proc.stdout, proc.stderr
    bad = _cfg(tmp_path, "source:\n  uri: nope.mp4\nmodel:\n  path: nope.onnx\nmqtt:\n  tls_ca: nope.pem\n")
    proc = run_cli("check-config", str(bad), cwd=tmp_path)
    errors = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(errors) == 3, proc.stderr
    assert all(e.startswith("error: ") for e in errors)
    for field in ("model.path", "source.uri", "mqtt.tls_ca"):
        assert any(field in e for e in errors), (field, errors)


# --- 2 and 8: output paths ----------------------------------------------------------------------------------
def test_a_missing_output_folder_is_created_and_said(kit: Kit, tmp_path: Path) -> None:
    events, db = tmp_path / "new" / "ev.jsonl", tmp_path / "logs" / "day1" / "defects.db"
    argv = ["run", "--no-display", "--model", str(kit.onnx), "--source", str(kit.video)]
    proc = run_cli(*argv, "--events", str(events), "--log-db", str(db), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    said = " ".join(proc.stdout.split())
    assert f"warning: --events {events}: the folder {events.parent} did not exist; created it" in said, said
    assert f"warning: log.db {db}: the folder {db.parent} did not exist; created it" in said, said
    assert events.is_file() and db.is_file()
    again = run_cli(*argv, "--events", str(events), "--log-db", str(db), cwd=tmp_path)  # our own files: rewritten
    assert again.returncode == 0, again.stderr[-2000:]
    assert "did not exist" not in again.stdout


def test_display_on_unquoted_reaches_the_display_check(kit: Kit, tmp_path: Path) -> None:
    """`display.enabled: on` as README writes it: validated as 'on', so no display is an error about the display."""
    cfg = _cfg(tmp_path, "display:\n  enabled: on\n")
    proc = run_cli("run", "--config", str(cfg), "--model", str(kit.onnx), "--source", str(kit.video), cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert "display.enabled is 'on' but no display is available" in proc.stderr, proc.stderr


def test_default_config_is_unchanged_by_the_on_off_rule() -> None:
    assert InspectorConfig().display.enabled == "auto" and InspectorConfig().gate.port is None


def test_events_to_stdout_leave_nothing_beside_them(kit: Kit, tmp_path: Path) -> None:
    """`--events /dev/stdout` streams the events; the run summary is not written into /dev beside it."""
    beside = Path("/dev/stdout.summary.json")
    assert not beside.exists(), "left over from an earlier run: remove it"
    argv = ["run", "--no-display", "--model", str(kit.onnx), "--source", str(kit.video), "--events", "/dev/stdout"]
    proc = run_cli(*argv, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "inspection summary" in proc.stdout and not beside.exists()
    truth = tmp_path / "truth.csv"
    truth.write_text("part_id,label,trigger_frame\n0,ok,5\n")
    proc = run_cli(*argv, "--truth", str(truth), cwd=tmp_path)  # the scorecard could not read them back
    assert proc.returncode == 1 and "write --events to a file" in proc.stderr, proc.stderr

"""`inspector run` end to end through the CLI: events, summary, scorecard, clean stop, and bad input."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from runtime_kit import LINE_SPRITES

from tests.conftest import inspector

ROOT = Path(__file__).resolve().parents[2]
FIELDS = {
    "part_id",
    "frame_index",
    "t_capture",
    "verdict",
    "score",
    "class",
    "latency_ms",
    "bbox",
    "reason",
    "sharpness",
}


def crossing(sprite, trigger_x=320) -> int:
    return min(f for f, (x, _) in sprite.path.items() if x + (sprite.size - 1) / 2 >= trigger_x)


def test_run_writes_one_event_per_part_and_a_summary(line_video, line_config, tmp_path):
    events = tmp_path / "out" / "events.jsonl"
    r = inspector("run", "--config", line_config, "--source", line_video, "--events", events, "--no-display")
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    lines = [json.loads(x) for x in events.read_text().splitlines()]
    assert len(lines) == len(LINE_SPRITES)
    assert all(set(ev) == FIELDS for ev in lines)
    assert len({ev["part_id"] for ev in lines}) == len(lines)
    got = sorted(ev["frame_index"] for ev in lines)
    want = sorted(crossing(s) for s in LINE_SPRITES)
    assert all(abs(g - w) <= 1 for g, w in zip(got, want, strict=True)), (got, want)
    assert all(ev["verdict"] in ("ok", "defect") and 0 <= ev["score"] <= 1 for ev in lines)
    assert all(ev["latency_ms"] > 0 and len(ev["bbox"]) == 4 for ev in lines)
    summary = json.loads((tmp_path / "out" / "events.summary.json").read_text())
    assert summary["parts"] == len(LINE_SPRITES) and summary["frames"] == 150
    assert summary["ok"] + summary["defect"] == len(LINE_SPRITES) and summary["no_verdict"] == 0
    assert summary["latency_p50_ms"] > 0 and summary["frames_per_s"] > 0
    for word in ("inspection summary", "parts", "latency p99 ms", "dropped frames"):
        assert word in r.stdout


def test_max_frames_stops_early_and_rejects_parts_in_flight(line_video, line_config, tmp_path):
    events = tmp_path / "ev.jsonl"
    r = inspector(
        "run", "--config", line_config, "--source", line_video, "--events", events, "--no-display", "--max-frames", 40
    )
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in events.read_text().splitlines()]
    decided = [ev for ev in lines if ev["verdict"] != "no_verdict"]
    in_flight = [ev for ev in lines if ev["verdict"] == "no_verdict"]
    assert len(decided) == sum(crossing(s) < 40 for s in LINE_SPRITES)
    assert in_flight and all("max-frames" in ev["reason"] for ev in in_flight)


def test_truth_gives_a_scorecard(tiny_dataset, tiny_onnx, tmp_path):
    from inspector.simulate import render_line

    images = tiny_dataset({"ok_front": 4, "def_front": 4}, size=96)
    spec = render_line(images, tmp_path / "line.mp4", tmp_path / "truth.csv", size=(320, 240), parts=6, seed=3)
    cfg = spec.write_config(tmp_path / "line.yaml", model=str(tiny_onnx))
    r = inspector("run", "--config", cfg, "--truth", spec.truth, "--no-display", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    card = json.loads((tmp_path / "scorecard.json").read_text())
    assert card["parts"] == 6 and card["found"] == 6 and card["missed"] == 0
    assert "scorecard" in r.stdout


@pytest.mark.parametrize("sig, rc", [(signal.SIGTERM, 0), (signal.SIGINT, 130)])
def test_stop_signal_shuts_down_cleanly_with_a_summary(line_video, line_config, tmp_path, sig, rc):
    events = tmp_path / "ev.jsonl"
    env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "inspector",
            "run",
            "--config",
            str(line_config),
            "--source",
            str(line_video),
            "--events",
            str(events),
            "--no-display",
            "--realtime",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.monotonic() + 60
    while not (events.exists() and events.read_text().strip()):  # the first part has its verdict
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == rc, err
    assert "Traceback" not in err and "inspection summary" in out
    lines = [json.loads(x) for x in events.read_text().splitlines()]
    assert 1 <= len(lines) <= len(LINE_SPRITES)
    assert all(ev["verdict"] != "no_verdict" or "before the part was classified" in ev["reason"] for ev in lines)


def _text_file(tmp: Path) -> Path:
    p = tmp / "notes.mp4"
    p.write_text("this is not a video\n" * 50)
    return p


def _bad_config(tmp: Path) -> Path:
    p = tmp / "bad.yaml"
    p.write_text("source:\n  uri: x.mp4\ndetection:\n  min_area: -5\n")
    return p


BAD = [
    ("missing file", lambda t: ["--source", "/nonexistent/line.mp4"], "no such file"),
    ("not a video", lambda t: ["--source", _text_file(t)], ""),
    ("unknown camera", lambda t: ["--camera", "57"], ""),
    ("bad pipeline", lambda t: ["--source", "gst:nosuchelement0 ! fakesink"], ""),
    ("missing model", lambda t: ["--source", "/nonexistent.mp4", "--model", t / "none.onnx"], "model file not found"),
    ("missing truth", lambda t: ["--truth", t / "none.csv"], "--truth"),
    ("bad config", lambda t: ["--config", _bad_config(t)], "bad.yaml:4"),
]


@pytest.mark.parametrize("name, make_args, expect", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_one_clear_line(name, make_args, expect, tmp_path, tiny_onnx):
    args = make_args(tmp_path)
    if "--model" not in args:
        args += ["--model", tiny_onnx]
    r = inspector("run", *args, "--no-display", timeout=60)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, r.stderr
    assert expect.lower() in errors[0].lower()


def test_a_file_with_no_decodable_frame_is_one_clear_line(tmp_path, tiny_onnx):
    bad = tmp_path / "garbage.avi"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00AVI LIST" + random.Random(7).randbytes(20000))
    r = inspector("run", "--source", bad, "--model", tiny_onnx, "--no-display", timeout=60)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert len([x for x in r.stderr.splitlines() if x.startswith("error:")]) == 1


def test_corrupt_frames_inside_a_video_are_skipped_counted_and_said(line_video, line_config, tmp_path):
    data = bytearray(line_video.read_bytes())
    starts = [i for i in range(len(data) - 3) if data[i : i + 3] == b"\xff\xd8\xff"]  # one JPEG per frame
    assert len(starts) == 150
    for i in starts[40:45]:  # frames 40-44 lose their JPEG header: undecodable
        data[i : i + 400] = bytes(400)
    clip = tmp_path / "corrupt.avi"
    clip.write_bytes(bytes(data))
    events = tmp_path / "ev.jsonl"
    r = inspector("run", "--config", line_config, "--source", clip, "--events", events, "--no-display")
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert "5 undecodable frame" in r.stderr
    summary = json.loads((tmp_path / "ev.summary.json").read_text())
    assert summary["corrupt_frames"] == 5 and summary["frames"] == 145
    lines = [json.loads(x) for x in events.read_text().splitlines()]
    assert len({ev["part_id"] for ev in lines}) == len(lines) == len(LINE_SPRITES)
    assert all(ev["verdict"] != "no_verdict" for ev in lines)


NO_TORCH = (
    "import sys\n"
    "for m in ('torch', 'torchvision', 'onnx', 'sklearn'): sys.modules[m] = None  # the plain install has none\n"
    "from inspector.cli import main\n"
    "sys.exit(main(['demo', '--no-display']))\n"
)


@pytest.mark.slow
def test_demo_runs_with_the_shipped_model_and_no_torch(tmp_path):
    model = ROOT / "models" / "casting_seedcnn.onnx"
    demo = ROOT / "demo"
    if not model.is_file() or not demo.is_dir() or not any(demo.iterdir()):
        pytest.skip("shipped model or demo/ images not in this checkout yet")
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    env.pop("DISPLAY", None)
    r = subprocess.run(
        [sys.executable, "-c", NO_TORCH],
        capture_output=True,
        text=True,
        errors="replace",
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert "inspection summary" in r.stdout and "scorecard" in r.stdout
    saved = re.search(r"scorecard saved to (\S+)", r.stdout.replace("\n", ""))
    assert saved and not (tmp_path / "scorecard.json").exists(), "the demo must not litter the working directory"
    card = json.loads(Path(saved.group(1)).read_text())
    assert card["found"] == card["parts"] == 24 and card["missed"] == 0
    assert card["split"] == card["duplicated"] == card["spurious"] == 0
    assert list((tmp_path / "cache" / "inspector" / "demo").glob("*.mp4")), "the rendered line is cached"

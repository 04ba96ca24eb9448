"""The Prometheus endpoint of `inspector run`, scraped over real HTTP while a drawn line plays in real time.

The run is a child process (`python -m inspector`, torch hidden as on a plain install) with the shipped ONNX
model, the simulated gate and a defect log; the test scrapes /metrics with urllib until the run ends, parses each
scrape with prometheus_client's own parser, and checks the last one against the summary written at exit.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import cv2
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError
from runtime_kit import (
    LINE_FRAMES,
    LINE_SPRITES,
    FakeEngine,
    ListSink,
    as_frames,
    make_cfg,
    moving,
    render,
    watch_child,
)

from inspector.config import InspectorConfig

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "casting_seedcnn.onnx"
FPS = 60.0  # the drawn line at twice its usual rate: 2.5 s in real time, the last verdict ~0.6 s before the end

NO_TORCH = (
    "import sys\n"
    "for m in ('torch', 'torchvision', 'onnx', 'sklearn'): sys.modules[m] = None  # the plain install has none\n"
    "from inspector.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> dict[str, float] | None:
    """{'name{label="v"}': value} from one GET /metrics, or None when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return None
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


@pytest.fixture(scope="module")
def line(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("metrics")
    video = d / "line.avi"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (640, 240))
    assert w.isOpened()
    for img in render(LINE_SPRITES, LINE_FRAMES):
        w.write(img)
    w.release()
    cfg = d / "line.yaml"
    cfg.write_text(
        "detection:\n  method: threshold\n  threshold: 100\n  min_area: 800\n"
        f"model:\n  path: {MODEL}\n"
        "gate:\n  camera_to_gate_mm: 150\n  belt_speed_mm_s: 200\n"  # 0.75 s of travel: a short drain at exit
    )
    return cfg


@pytest.mark.slow
def test_scraped_while_running_and_the_counts_match_the_summary(line: Path, tmp_path: Path) -> None:
    if not MODEL.is_file():
        pytest.skip("the shipped model is not in this checkout")
    psutil = pytest.importorskip("psutil")
    port = free_port()
    events = tmp_path / "ev.jsonl"
    argv = [
        "run",
        "--config",
        str(line),
        "--source",
        str(line.parent / "line.avi"),
        "--realtime",
        "--no-display",
        "--events",
        str(events),
        "--serial",
        "sim",
        "--log-db",
        str(tmp_path / "log.db"),
        "--metrics-port",
        str(port),
    ]
    env = {**os.environ}
    env.pop("DISPLAY", None)
    proc = subprocess.Popen(
        [sys.executable, "-c", NO_TORCH, *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        env=env,
        cwd=tmp_path,
    )
    scrapes: list[dict[str, float]] = []
    listen: set[str] = set()

    def probe() -> bool:  # scrape until the run ends
        nonlocal listen
        if (m := scrape(port)) is not None:
            scrapes.append(m)
            if not listen:
                conns = psutil.Process(proc.pid).net_connections(kind="tcp")
                listen = {c.laddr.ip for c in conns if c.status == psutil.CONN_LISTEN and c.laddr.port == port}
        return False

    out, err = watch_child(proc, probe, timeout_s=60, every_s=0.05, exit_timeout_s=30)
    assert proc.returncode == 0, err[-3000:]
    assert "Traceback" not in err
    assert listen == {"127.0.0.1"}, f"the endpoint must listen on localhost only by default, got {listen}"
    assert len(scrapes) >= 10, f"only {len(scrapes)} scrape(s) answered while the line ran"

    summary = json.loads((tmp_path / "ev.summary.json").read_text())
    assert summary["parts"] == len(LINE_SPRITES), summary
    last = scrapes[-1]
    for verdict in ("ok", "defect", "no_verdict"):
        assert last[f'inspector_parts_total{{verdict="{verdict}"}}'] == summary[verdict], (verdict, summary)
    # counters only grow, scrape after scrape
    for a, b in zip(scrapes, scrapes[1:], strict=False):
        for key in (
            *(f'inspector_parts_total{{verdict="{v}"}}' for v in ("ok", "defect", "no_verdict")),
            "inspector_frames_captured_total",
            "inspector_frames_inspected_total",
        ):
            assert b[key] >= a[key], key
    assert any(0 < m["inspector_frames_inspected_total"] < summary["frames"] for m in scrapes), "scraped mid-run"
    judged = summary["ok"] + summary["defect"]
    assert last["inspector_latency_seconds_count"] == judged
    assert 0 < last["inspector_latency_seconds_sum"] / judged < 1.0  # seconds, not ms
    assert 1 <= last["inspector_inference_seconds_count"] <= judged  # once per batch, not per part
    assert 0 < last["inspector_inference_seconds_sum"] / last["inspector_inference_seconds_count"] < 1.0
    assert last["inspector_frames_inspected_total"] <= summary["frames"]
    assert last["inspector_frames_captured_total"] >= last["inspector_frames_inspected_total"]
    # a recording paced at its own rate: read at about 60 frames/s (flat out it would be hundreds), none skipped
    # (files never drop frames); the gauge averages over >= 5 s, here the whole run, start-up included
    fps = max(m["inspector_camera_fps"] for m in scrapes)
    assert 30 < fps < 75, fps
    assert last["inspector_skipped_fps"] == 0 and last["inspector_skipped_frames_total"] == 0
    assert last["inspector_source_stalls_total"] == 0 and last["inspector_source_stalled"] == 0
    assert last["inspector_source_live"] == 0
    info = [k for k, v in last.items() if k.startswith("inspector_model_info{") and v == 1]
    assert len(info) == 1 and 'model="casting_seedcnn.onnx"' in info[0] and 'backend="onnxruntime' in info[0], info
    # the simulated gate: connected, not held, and it has taken every part (rejects = defects + no verdicts)
    assert last["inspector_gate_connected"] == 1 and last["inspector_gate_hold"] == 0
    assert last['inspector_gate_events_total{event="parts"}'] == summary["parts"]
    assert last['inspector_gate_events_total{event="rejects"}'] == summary["defect"] + summary["no_verdict"]
    assert "inspector_log_queue" in last and 'inspector_log_images_dropped_total{why="queue"}' in last
    assert last["process_resident_memory_bytes"] > 0


class StallingCapture:
    """Frames 0-19, then a stall (counted, no frames for a few polls, as while the watchdog reopens), then the rest."""

    def __init__(self, frames) -> None:
        self.frames, self.ended, self.live = list(frames), threading.Event(), True
        self.stats = SimpleNamespace(frames=0, dropped=0, corrupt=0, stalls=0, reopens=0)
        self._gap = 0

    @property
    def stall_count(self) -> int:
        return self.stats.stalls

    def get(self, timeout):
        if not self.frames:
            self.ended.set()
            return None
        if self.frames[0].seq == 20 and self._gap < 3:
            self.stats.stalls = 1
            self._gap += 1
            return None
        if self._gap == 3:
            self.stats.reopens, self._gap = 1, 4
        self.stats.frames += 1
        return self.frames.pop(0)


class Recorder:
    """A view that reads the registry as a scrape would, after every frame and every empty poll."""

    paused = False

    def __init__(self, registry) -> None:
        self.registry, self.seen = registry, []

    def update(self, view, stats) -> bool:
        get = self.registry.get_sample_value
        self.seen.append((view is not None, get("inspector_source_stalled"), get("inspector_source_stalls_total")))
        return True

    def close(self) -> None:
        pass


def test_a_stall_shows_while_it_lasts_and_parts_it_rejects_are_counted() -> None:
    from inspector.metrics import RunMetrics
    from inspector.pipeline import LoopStats, Pipeline, run_loop

    sprites = [moving(0, 0, 90, 6, 40)]  # short of the trigger line when the source stalls at frame 20
    metrics, stats = RunMetrics("fake", "fake"), LoopStats()
    capture = StallingCapture(as_frames(render(sprites, 40)))
    metrics.attach(stats=stats, capture=capture)
    sink, view = ListSink(), Recorder(metrics.registry)
    run_loop(Pipeline(make_cfg(), FakeEngine(), [sink, metrics]), capture, view=view, stats=stats, poll_s=0.001)
    during = [s for s in view.seen if not s[0]]
    assert during and all(s[1:] == (1.0, 1.0) for s in during), view.seen
    assert view.seen[-1][1:] == (0.0, 1.0), "frames flow again: no longer stalled"
    get = metrics.registry.get_sample_value
    assert get("inspector_source_reopens_total") == 1
    assert sink.parts[0].reason == "source stalled; part in flight rejected"
    for v in ("ok", "defect", "no_verdict"):
        assert get("inspector_parts_total", {"verdict": v}) == sum(p.verdict.value == v for p in sink.parts)
    judged = [p for p in sink.parts if p.verdict.value != "no_verdict"]
    assert get("inspector_latency_seconds_count") == len(judged)  # a part without a verdict has no verdict latency


def test_metrics_section_refuses_unknown_keys_and_defaults_to_localhost() -> None:
    cfg = InspectorConfig()
    assert (cfg.metrics.enabled, cfg.metrics.host) == (False, "127.0.0.1")
    with pytest.raises(ValidationError, match="prot"):
        InspectorConfig.model_validate({"metrics": {"enabled": True, "prot": 9100}})
    with pytest.raises(ValidationError, match="65535"):
        InspectorConfig.model_validate({"metrics": {"port": 70000}})


def test_cli_flag_enables_metrics_on_the_configured_host(tmp_path: Path) -> None:
    from inspector.cli import build_parser
    from inspector.commands.lineargs import build_config

    cfg = tmp_path / "line.yaml"
    cfg.write_text("metrics:\n  host: 0.0.0.0\n  port: 9999\n")
    args = build_parser().parse_args(["run", "--config", str(cfg), "--metrics-port", "9200"])
    got = build_config(args).metrics
    assert (got.enabled, got.host, got.port) == (True, "0.0.0.0", 9200)
    assert build_config(build_parser().parse_args(["run", "--config", str(cfg)])).metrics.enabled is False
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--metrics-port", "99999"])

"""The live console's routes without a browser: real uvicorn on a free port over a real demo line (the shipped
model, a rendered video, a SQLite defect log): live counts, the stream, defects by id, the audited threshold
change, tokens and bad input (each a 4xx with a one-line JSON error)."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from web_kit import RunningLine, free_port, get_json, post_json, request, wait_for

from inspector.overlay import layout_for

ROOT = Path(__file__).resolve().parents[2]


def one_line_error(data: bytes) -> str:
    body = json.loads(data)
    assert set(body) == {"error"}, body
    assert body["error"] and "\n" not in body["error"]
    return body["error"]


def test_state_counts_follow_the_line_and_the_health_snapshot(running_line):
    r = running_line()
    first = get_json(r.port, "/api/state")
    assert first["running"] is True
    assert first["model"] == r.line.model_label
    assert wait_for(lambda: get_json(r.port, "/api/state")["parts"] >= first["parts"] + 3, 30), "counts did not move"
    s = get_json(r.port, "/api/state")
    assert s["parts"] == sum(s["counts"].values())
    h = r.line.health()
    assert s["parts"] <= sum(h.parts.as_dict().values())  # the page's snapshot is never ahead of the line
    assert s["health"]["model"] == {"name": h.model.name, "backend": h.model.backend}
    assert s["health"]["log"] is not None  # the defect log is on: its state is reported
    assert s["yield_pct"] == pytest.approx(100.0 * s["counts"]["ok"] / s["parts"], abs=0.01)
    assert s["threshold"] == pytest.approx(r.line.pipeline.threshold)


def test_stream_sends_jpeg_frames_of_the_overlay_only_while_watched(running_line):
    r = running_line(stream_fps=5.0)
    console = r.line.console.state
    assert wait_for(lambda: r.line.stats.frames > 10, 20)
    assert console.frames_offered == 0  # nobody watches: no stream frame taken on the inspection thread
    sock = socket.create_connection(("127.0.0.1", r.port), timeout=10)
    try:
        sock.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: x\r\n\r\n")
        buf = b""
        frames = []
        while len(frames) < 2:
            chunk = sock.recv(65536)
            assert chunk, "the stream ended"
            buf += chunk
            while (start := buf.find(b"\xff\xd8")) >= 0 and (end := buf.find(b"\xff\xd9", start)) >= 0:
                frames.append(buf[start : end + 2])
                buf = buf[end + 2 :]
        assert b"multipart/x-mixed-replace" in buf or frames  # headers came first
        img = cv2.imdecode(np.frombuffer(frames[-1], np.uint8), cv2.IMREAD_COLOR)
        canvas_w, canvas_h = layout_for(640, 480).canvas  # the operator's overlay of the demo's 640x480 frame
        scale = min(1.0, console.cfg.stream_width / canvas_w)  # scaled down to stream_width at most
        assert img is not None and img.shape[:2] == (round(canvas_h * scale), round(canvas_w * scale))
        assert img.std() > 10  # a real picture, not a blank frame
        assert console.clients == 1
    finally:
        sock.close()
    assert wait_for(lambda: console.clients == 0, 10), "the stream client was not let go"
    rendered = console.frames_offered
    assert rendered >= 2
    frames_then = r.line.stats.frames
    assert wait_for(lambda: r.line.stats.frames > frames_then + 30, 20)
    assert console.frames_offered <= rendered + 1  # no client: the stream stops costing anything


def test_defects_are_served_by_id_and_paths_are_refused(running_line):
    r = running_line()
    assert wait_for(lambda: get_json(r.port, "/api/defects")["defects"], 40), "no reject in the demo line"
    d = get_json(r.port, "/api/defects")["defects"][0]
    assert set(d) >= {"id", "verdict", "score", "reason", "class", "time", "has_crop", "has_map"}
    assert isinstance(d["id"], int) and d["verdict"] in ("defect", "no_verdict")
    if d["has_crop"]:
        for kind in ("crop", "thumb"):
            status, headers, data = request(r.port, "GET", f"/api/defects/{d['id']}/{kind}.jpg")
            assert status == 200 and headers["content-type"] == "image/jpeg"
            assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) is not None
    for path, want in (
        # an id is an integer: anything else matches no route (404) or fails the id's type (400)
        ("/api/defects/../../../etc/passwd/crop.jpg", {404}),
        ("/api/defects/%2Fetc%2Fpasswd/crop.jpg", {400, 404}),
        ("/api/defects/..%2F..%2Fsetup.cfg/crop.jpg", {400, 404}),
        ("/api/defects/setup.cfg/crop.jpg", {400}),
        ("/api/defects/999999/crop.jpg", {404}),
        (f"/api/defects/{d['id']}/..%2F..%2Fsetup.cfg.jpg", {404}),
        ("/static/..%2F__init__.py", {404}),
        ("/static/../../setup.cfg", {404}),
        ("/static/%2Fetc%2Fpasswd", {404}),
    ):
        status, _, data = request(r.port, "GET", path)
        assert status in want, (path, status, data)
        msg = one_line_error(data)
        assert "root:" not in msg and "[metadata]" not in msg


def test_threshold_change_is_applied_between_frames_and_audited(running_line, tmp_path):
    r = running_line()
    db = Path(r.line.cfg.log.db)
    assert wait_for(lambda: r.line.stats.frames > 5, 20)
    old = r.line.pipeline.threshold
    new = 0.42 if abs(old - 0.42) > 1e-6 else 0.61
    status, body = post_json(r.port, "/api/threshold", {"threshold": new, "who": "Ana", "reason": "shift test"})
    assert status == 200, body
    assert body["old"] == pytest.approx(old) and body["new"] == pytest.approx(new)
    assert r.line.pipeline.threshold == pytest.approx(new)
    assert r.line.cfg.model.threshold == pytest.approx(new)
    con = sqlite3.connect(db)
    try:
        rows = con.execute("SELECT who, address, old, new, reason, run FROM threshold_changes").fetchall()
        tables = {t for (t,) in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        part_cols = [c[1] for c in con.execute("PRAGMA table_info(parts)")]
    finally:
        con.close()
    assert rows == [("Ana", "127.0.0.1", pytest.approx(old), pytest.approx(new), "shift test", r.line.dlog.run)]
    assert {"parts", "runs", "threshold_changes"} <= tables
    assert "threshold" not in part_cols  # the inspection rows are not altered
    hist = get_json(r.port, "/api/threshold/history")["changes"]
    assert hist[0]["id"] == body["id"] and hist[0]["who"] == "Ana"
    assert get_json(r.port, "/api/scores")["threshold"] == pytest.approx(new)


@pytest.mark.parametrize(
    ("payload", "headers", "status", "words"),
    [
        (b"{not json", {}, 400, "not JSON"),
        (b"", {}, 400, "not JSON"),
        ({"threshold": 1.5, "who": "a", "reason": "b"}, {}, 400, "threshold"),
        ({"threshold": "high", "who": "a", "reason": "b"}, {}, 400, "threshold"),
        ({"threshold": True, "who": "a", "reason": "b"}, {}, 400, "threshold"),
        (b'{"threshold": NaN, "who": "a", "reason": "b"}', {}, 400, "finite"),
        ({"threshold": 0.5, "who": "   ", "reason": "b"}, {}, 400, "who"),
        ({"threshold": 0.5, "reason": "b"}, {}, 400, "who"),
        ({"threshold": 0.5, "who": "a", "reason": ""}, {}, 400, "reason"),
        ({"threshold": 0.5, "who": "a", "reason": "b", "path": "/etc"}, {}, 400, "path"),
        ([0.5], {}, 400, "threshold change"),
        ({"threshold": 0.5, "who": "a", "reason": "b"}, {"Content-Type": "text/plain"}, 415, "JSON"),
        (b"x" * 5000, {}, 413, "bytes"),
    ],
)
def test_bad_threshold_requests_get_one_line_4xx(running_line, payload, headers, status, words):
    r = running_line()
    before = r.line.pipeline.threshold
    got, body = post_json(r.port, "/api/threshold", payload, headers)
    assert got == status, body
    assert set(body) == {"error"} and words in body["error"] and "\n" not in body["error"]
    assert r.line.pipeline.threshold == before
    assert get_json(r.port, "/api/state")["running"] is True  # the server is unharmed


def test_token_refused_or_accepted(running_line, monkeypatch):
    monkeypatch.setenv("INSPECTOR_WEB_TOKEN", "s3cret-token-value")
    r = running_line(token_env="INSPECTOR_WEB_TOKEN")
    change = {"threshold": 0.55, "who": "Bo", "reason": "token test"}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-Inspector-Token": "s3cret"}):
        status, body = post_json(r.port, "/api/threshold", change, headers)
        assert status == 401, (headers, body)
        assert "token" in body["error"] and "s3cret" not in body["error"]
    assert not get_json(r.port, "/api/threshold/history")["changes"]
    status, body = post_json(r.port, "/api/threshold", change, {"Authorization": "Bearer s3cret-token-value"})
    assert status == 200, body
    other = {**change, "threshold": 0.5}
    status, body = post_json(r.port, "/api/threshold", other, {"X-Inspector-Token": "s3cret-token-value"})
    assert status == 200, body
    assert [c["new"] for c in get_json(r.port, "/api/threshold/history")["changes"]] == [0.5, 0.55]


def test_threshold_change_without_a_defect_log_is_refused(demo_cfg):

    cfg = demo_cfg.model_copy(deep=True)
    cfg.source.loop, cfg.source.realtime = True, True
    cfg.web.enabled, cfg.web.port = True, 0
    r = RunningLine(cfg)
    try:
        status, body = post_json(r.port, "/api/threshold", {"threshold": 0.5, "who": "a", "reason": "b"})
        assert status == 409 and "--log-db" in body["error"]
    finally:
        r.stop()


def test_beyond_localhost_needs_a_token():
    from ground.errors import UserError
    from inspector.web.http import read_token
    from inspector.webaccess import is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
    assert read_token("127.0.0.1", None) is None
    with pytest.raises(UserError, match="web.token_env"):
        read_token("0.0.0.0", None)
    with pytest.raises(UserError, match="unset or empty"):
        read_token("0.0.0.0", "INSPECTOR_TEST_TOKEN_THAT_IS_NOT_SET")


def inspector_cli(*args, env=None, code: str | None = None, timeout=120) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env or {})}
    env.pop("DISPLAY", None)
    head = [sys.executable, "-c", code] if code else [sys.executable, "-m", "inspector"]
    cmd = [*head, *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


def test_cli_errors_are_one_line(demo_cfg, tmp_path):
    video = demo_cfg.source.uri
    r = inspector_cli("run", "--source", video, "--no-display", "--web", "nope")
    assert r.returncode == 2 and "expected PORT or HOST:PORT" in r.stderr
    r = inspector_cli("run", "--source", video, "--no-display", "--web", "0.0.0.0:0", "--max-frames", "5")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "error: web.host 0.0.0.0 serves the network: set web.token_env" in r.stderr
    config = tmp_path / "web.yaml"
    config.write_text("web:\n  token_env: INSPECTOR_TEST_UNSET_TOKEN\n")
    env = {"INSPECTOR_TEST_UNSET_TOKEN": ""}
    r = inspector_cli("run", "--config", config, "--source", video, "--no-display", "--web", "0", env=env)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "error: web.token_env names INSPECTOR_TEST_UNSET_TOKEN, which is unset or empty" in r.stderr
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        r = inspector_cli("run", "--source", video, "--no-display", "--web", str(port), "--max-frames", "5")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert f"error: web console: cannot listen on 127.0.0.1:{port}" in r.stderr
    # without the web extra: one line saying what to install (fastapi hidden from this one process)
    hide = "import sys; sys.modules['fastapi'] = None; from inspector.cli import main; sys.exit(main(sys.argv[1:]))"
    r = inspector_cli("run", "--source", video, "--no-display", "--web", str(free_port()), code=hide)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "needs the web extra: pip install 'inspector[web]'" in r.stderr


def test_an_anomaly_models_map_is_served_over_its_crop():
    """The page's heat map for an anomaly model's reject: the map laid over the crop, by id (pure logic: no line)."""
    from inspector.config import WebConfig
    from inspector.records import Part, Verdict
    from inspector.web.console import WebConsole

    rng = np.random.default_rng(0)
    crop = rng.integers(60, 200, (90, 120, 3), dtype=np.uint8)
    amap = np.zeros((28, 28), np.float32)
    amap[5:12, 5:12] = 1.0  # one hot spot, top left
    console = WebConsole(WebConfig(), line=None)
    try:
        part = Part(7, 3, 0, (0, 0, 120, 90), verdict=Verdict.DEFECT, score=0.93, crop=crop, anomaly_map=amap)
        console.record(part)
        console.record(Part(8, 4, 0, (0, 0, 120, 90), verdict=Verdict.DEFECT, score=0.9, crop=crop))
        info = {d["id"]: d for d in console.defects()}
        assert info[7]["has_map"] is True and info[8]["has_map"] is False
        assert console.defect_image(8, "map") is None
        heat = cv2.imdecode(np.frombuffer(console.defect_image(7, "map"), np.uint8), cv2.IMREAD_COLOR)
        assert heat.shape == crop.shape
        hot, cold = heat[20:35, 25:48].astype(int), heat[60:85, 80:115].astype(int)  # map cells 5-11 -> px
        assert hot[..., 2].mean() - hot[..., 0].mean() > 40  # red where the map is high (JET)
        assert cold[..., 0].mean() - cold[..., 2].mean() > 20  # blue where it is low
        thumb = cv2.imdecode(np.frombuffer(console.defect_image(7, "thumb"), np.uint8), cv2.IMREAD_COLOR)
        assert max(thumb.shape[:2]) == 120  # no larger than the crop: thumbnails never upscale
    finally:
        console.close()

"""The live console in a real browser (Debian's chromium driven by Playwright) during a replayed line run by the
real CLI: the counts change and end equal to the run's summary; a threshold change made through the page is
applied and its audit row is in the SQLite file; a screenshot is saved and its stream image is a real picture."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from web_kit import free_port, get_json, wait_for

from inspector.resources import resolve_model

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FRAMES = 600  # 20 s of the looped demo line at its recorded 30 frames/s

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (the dev extra) is not installed")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Debian chromium (apt-get install chromium)")


def text(page, sel: str) -> str:
    return page.locator(sel).inner_text().strip()


def test_console_in_chromium_during_a_replayed_line(demo_cfg, tmp_path):
    port = free_port()
    db = tmp_path / "log.db"
    events = tmp_path / "events.jsonl"
    cfg = demo_cfg.model_dump(mode="json")
    cfg["source"].update(loop=True, realtime=True)
    cfg["model"]["path"] = str(resolve_model(demo_cfg.model.path).resolve())  # the shipped model, not beside the YAML
    cfg["web"] = {"linger_s": 120}  # a last look at the final counts; the test ends it with SIGTERM
    config = tmp_path / "line.yaml"
    config.write_text(yaml.safe_dump(cfg))
    env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
    cmd = [sys.executable, "-m", "inspector", "run", "--config", config, "--no-display", "--log-db", db]
    cmd += ["--events", events, "--max-frames", FRAMES, "--web", f"127.0.0.1:{port}"]
    proc = subprocess.Popen(list(map(str, cmd)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        up = wait_for(lambda: proc.poll() is not None or _answers(port), 60, every_s=0.1)
        assert up and proc.poll() is None, proc.communicate(timeout=10)
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.goto(f"http://127.0.0.1:{port}/")
                page.wait_for_function("document.getElementById('running').textContent === 'inspecting'")
                seen = {int(text(page, "#n-parts"))}
                assert wait_for(lambda: seen.add(int(text(page, "#n-parts"))) or len(seen) >= 3, 30), seen
                assert max(seen) > min(seen)

                # the supervisor's change, through the page's form
                page.wait_for_function("document.getElementById('threshold').textContent !== '-'")
                old = float(text(page, "#threshold"))
                new = 0.35 if abs(old - 0.35) > 1e-3 else 0.65
                page.fill("#t-new", f"{new}")
                page.fill("#t-who", "Carla (shift B)")
                page.fill("#t-reason", "too many false rejects on the new batch")
                page.click("#t-apply")
                page.wait_for_function("document.getElementById('t-result').textContent.startsWith('applied')")
                page.wait_for_function(
                    "document.querySelector('#history tbody tr td:nth-child(2)')?.textContent === 'Carla (shift B)'"
                )
                assert wait_for(lambda: abs(float(text(page, "#threshold")) - new) < 1e-3, 5)
                con = sqlite3.connect(db)
                try:
                    rows = con.execute("SELECT who, address, old, new, reason FROM threshold_changes").fetchall()
                finally:
                    con.close()
                assert rows == [
                    (
                        "Carla (shift B)",
                        "127.0.0.1",
                        pytest.approx(old, abs=1e-3),
                        pytest.approx(new),
                        "too many false rejects on the new batch",
                    )
                ]

                # the stream is a real picture of the line
                page.wait_for_function("document.getElementById('stream').naturalWidth > 0")
                shot = tmp_path / "console.png"
                page.screenshot(path=str(shot), full_page=True)
                stream_png = page.locator("#stream").screenshot()
                img = cv2.imdecode(np.frombuffer(stream_png, np.uint8), cv2.IMREAD_COLOR)
                assert img is not None and img.shape[0] > 100 and img.shape[1] > 100
                assert img.std() > 10, "the stream image is blank"
                assert len(np.unique(img.reshape(-1, 3), axis=0)) > 50, "the stream image is flat"
                full = cv2.imread(str(shot))
                assert full is not None and full.shape[1] == 1280

                # the line ends: the page says so and shows the final counts
                page.wait_for_function(
                    "document.getElementById('running').textContent === 'line stopped'", timeout=120_000
                )
                state = get_json(port, "/api/state")  # the line has stopped: these counts no longer move
                assert state["running"] is False
                want = {"parts": state["parts"], **state["counts"]}

                def shown() -> dict[str, int]:
                    return {k: int(text(page, f"#n-{k}")) for k in ("parts", "ok", "defect", "no_verdict")}

                assert wait_for(lambda: shown() == want, 10), (shown(), want)  # the page's next poll shows them
                final = shown()
            finally:
                browser.close()
        proc.send_signal(signal.SIGTERM)  # ends the linger
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert f"web console: http://127.0.0.1:{port}/" in out
    summary = json.loads((tmp_path / "events.summary.json").read_text())
    assert summary["frames"] == FRAMES
    assert final == {k: summary[k] for k in ("parts", "ok", "defect", "no_verdict")}
    assert final["parts"] == len(events.read_text().splitlines())


def _answers(port: int) -> bool:
    try:
        get_json(port, "/api/state")
        return True
    except OSError:
        return False

"""The notifier in a replay: a real video through the real capture thread, real ONNX inference, a real
AF_UNIX datagram socket. The loop here stands in for the line until the line calls the notifier itself:
READY after warm-up and the first frame, WATCHDOG while the replay runs, no pings within one period of an
inference that hangs or a source that ends, pings again when inference resumes, STOPPING at exit."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from notify_kit import Listener

from engines.base import load_engine
from engines.preprocess import preprocess
from inspector.capture.thread import CaptureThread
from inspector.config import SourceConfig
from inspector.service.notify import ServiceNotifier

ROOT = Path(__file__).resolve().parents[2]
PERIOD = 0.5
SLACK = 0.05  # the ping that was sent just before the deadline may arrive a little after it


def _video(path: Path, n: int, fps: float = 30.0) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (320, 240))
    assert writer.isOpened()
    rng = np.random.default_rng(0)
    for i in range(n):
        img = np.full((240, 320, 3), 40, np.uint8)
        cv2.circle(img, (40 + (i * 7) % 240, 120), 40, (200, 200, 200), -1)
        img = cv2.add(img, rng.integers(0, 20, img.shape, dtype=np.uint8))
        writer.write(img)
    writer.release()
    return path


@pytest.mark.slow
def test_watchdog_through_a_replay(tmp_path: Path) -> None:
    sock = str(tmp_path / "notify.sock")
    lst = Listener(sock)
    env = {"NOTIFY_SOCKET": sock, "WATCHDOG_USEC": str(int(PERIOD * 1e6))}
    clip = _video(tmp_path / "belt.avi", n=150)  # 5 s at the recorded rate
    hang, release, stop = threading.Event(), threading.Event(), threading.Event()
    last_frame = [0.0]
    try:
        with ServiceNotifier(env=env) as svc, load_engine(ROOT / "models" / "casting_seedcnn.onnx") as engine:
            cap = CaptureThread(SourceConfig(uri=str(clip), realtime=True)).start()
            ready = threading.Event()

            def inspect() -> None:
                while not stop.is_set():
                    frame = cap.get(timeout=0.1)
                    if frame is None:
                        if cap.ended.is_set():
                            return
                        continue
                    svc.frame_arrived()
                    last_frame[0] = time.monotonic()
                    if not ready.is_set():
                        svc.ready("model warmed up, first frame in")  # load_engine warmed the model up
                        ready.set()
                    if hang.is_set():
                        release.wait(10)  # an inference call that does not return
                    engine.infer(preprocess([frame.image[60:180, 100:220]], engine.meta))
                    svc.inspection_progressed()

            worker = threading.Thread(target=inspect, daemon=True)
            worker.start()
            assert "STATUS=model warmed up, first frame in" in lst.wait_for("READY=1", 10)
            pings = [t for t, m in lst.collect(1.0) if m == "WATCHDOG=1"]
            assert len(pings) >= 2, lst.messages  # every PERIOD / 2 while the replay runs

            hang.set()
            hung_at = time.monotonic()
            msgs = lst.collect(2 * PERIOD)
            assert all(t < hung_at + PERIOD + SLACK for t, m in msgs if m == "WATCHDOG=1"), (hung_at, msgs)
            assert any(m.startswith("STATUS=stalled: ") for _, m in msgs), msgs

            hang.clear()
            release.set()
            lst.wait_for("WATCHDOG=1", 2 * PERIOD)  # inference is back: pings resume

            assert cap.ended.wait(15), "the replay did not end"
            ended_at = last_frame[0]
            msgs = lst.collect(2 * PERIOD)
            late = [t for t, m in lst.messages if m == "WATCHDOG=1" and t >= ended_at + PERIOD + SLACK]
            assert late == [], (ended_at, late)
            assert any("no frame for" in m for _, m in msgs), msgs

            svc.stopping("stopping: replay ended")
            assert "STATUS=stopping: replay ended" in lst.wait_for("STOPPING=1", 2)
            stop.set()
            worker.join(5)
            assert not worker.is_alive()
            cap.close()
    finally:
        lst.close()

"""CaptureThread on real sources: every recorded frame, pacing, looping, live drops, stalls, shutdown."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time

import numpy as np
import pytest
from capture_kit import frame_index

from engines.errors import UserError
from inspector.capture import CaptureThread, FrameSource
from inspector.capture import thread as capture_thread
from inspector.config import SourceConfig
from tests.waiting import wait_for

needs_gst = pytest.mark.skipif(
    shutil.which("gst-launch-1.0") is None,
    reason="gst-launch-1.0 not installed (apt-get install gstreamer1.0-tools gstreamer1.0-plugins-base)",
)
LIVE = "gst:videotestsrc is-live=true {extra} ! video/x-raw,width=64,height=48,framerate={fps}/1"


def drain(cap: CaptureThread, timeout: float = 10.0) -> list:
    """Every frame until the source ends; fails rather than hangs if it never does."""
    frames = []
    deadline = time.monotonic() + timeout
    while not cap.ended.is_set():
        assert time.monotonic() < deadline, "capture did not end"
        if (f := cap.get(timeout=1.0)) is not None:
            frames.append(f)
    return frames


def test_file_every_frame_in_order_with_seq_and_time(mjpg_video):
    with CaptureThread(SourceConfig(), str(mjpg_video(n=30))) as cap:
        assert not cap.live and cap.size == (160, 120) and cap.fps == pytest.approx(30)
        frames = drain(cap)
    assert [f.seq for f in frames] == list(range(30))
    assert [frame_index(f.image) for f in frames] == [i % 20 for i in range(30)]
    assert all(b.t_capture_ns > a.t_capture_ns for a, b in zip(frames, frames[1:], strict=False))
    assert frames[-1].pos_ms == pytest.approx(29 * 1000 / 30)
    assert cap.stats.to_dict() == {"frames": 30, "dropped": 0, "stalls": 0, "reopens": 0, "corrupt": 0}
    assert cap.get(timeout=0.1) is None


def test_file_reader_waits_for_a_slow_consumer(mjpg_video):
    """Files are never dropped: the reader stays at most a few frames ahead of inspection."""
    with CaptureThread(SourceConfig(), str(mjpg_video(n=20))) as cap:
        ahead, seqs = [], []
        while not cap.ended.is_set():
            f = cap.get(timeout=2.0)
            if f is not None:
                seqs.append(f.seq)
                ahead.append(cap.stats.frames - len(seqs))
                time.sleep(0.005)  # a slow consumer (timing is not asserted)
    assert seqs == list(range(20)) and cap.stats.dropped == 0
    assert max(ahead) <= capture_thread.FILE_QUEUE + 1


def test_realtime_paces_at_the_recorded_rate(mjpg_video):
    fps, n = 20.0, 12
    with CaptureThread(SourceConfig(realtime=True), str(mjpg_video(n=n, fps=fps))) as cap:
        frames = drain(cap)
    t = np.array([f.t_capture_ns for f in frames]) / 1e9
    expected = (n - 1) / fps
    assert len(frames) == n
    assert expected * 0.95 <= t[-1] - t[0] <= expected + 1.0  # not flat out, not far behind
    assert np.diff(t).min() > 0.5 / fps  # each frame waited for its turn


def test_loop_restarts_the_file_and_seq_keeps_counting(mjpg_video):
    with CaptureThread(SourceConfig(loop=True), str(mjpg_video(n=8))) as cap:
        frames = [cap.get(timeout=5.0) for _ in range(20)]
        assert not cap.ended.is_set()
    assert [f.seq for f in frames] == list(range(20))
    assert [frame_index(f.image) for f in frames] == [i % 8 for i in range(20)]
    assert cap.stats.reopens == 0 and cap.stats.stalls == 0


def test_corrupt_frames_counted_in_stats(mjpg_video):
    with CaptureThread(SourceConfig(), str(mjpg_video(n=20, corrupt=(3, 4, 15)))) as cap:
        frames = drain(cap)
    assert [frame_index(f.image) for f in frames] == [i for i in range(20) if i not in (3, 4, 15)]
    assert [f.seq for f in frames] == list(range(17))
    assert cap.stats.corrupt == 3


def test_bad_source_raises_on_the_callers_thread(tmp_path):
    cap = CaptureThread(SourceConfig(uri=str(tmp_path / "missing.avi")))
    with pytest.raises(UserError, match="no such file"):
        cap.start()
    assert cap.close() == []


@needs_gst
def test_live_latest_frame_wins_and_drops_are_counted():
    cap = CaptureThread(SourceConfig(), LIVE.format(extra="", fps=100)).start()
    try:
        assert cap.live
        first = cap.get(timeout=5.0)
        assert first is not None
        # Inspection is busy: ten more frames arrive meanwhile; only the newest is kept.
        assert wait_for(lambda: cap.stats.frames >= first.seq + 11, timeout_s=5.0)
        nxt = cap.get(timeout=1.0)
        assert nxt.seq >= first.seq + 10
        assert cap.stats.dropped >= 9
        got = 2
        while got < 10 and cap.get(timeout=0.05) is not None:
            got += 1
    finally:
        cap.close()
    leftover = 1 if cap.get(timeout=0) is not None else 0
    assert cap.stats.frames == got + cap.stats.dropped + leftover  # every frame read is inspected or counted


@needs_gst
def test_stall_is_detected_within_a_second_and_the_source_reopened():
    """A real pipeline frozen with SIGSTOP: detected, counted, killed and started again."""
    cap = CaptureThread(SourceConfig(stall_timeout_s=0.5), LIVE.format(extra="", fps=30)).start()
    old_pid = cap.source.pid
    try:
        assert cap.get(timeout=5.0) is not None
        os.kill(old_pid, signal.SIGSTOP)
        frozen = time.monotonic()
        seen = wait_for(lambda: cap.stall_count == 1, timeout_s=3.0)
        assert seen is not None and seen - frozen <= 0.5 + 1.0
        assert wait_for(lambda: cap.stats.reopens == 1, timeout_s=10.0)
        after = cap.get(timeout=5.0)
        while after is not None and after.t_capture_ns < seen * 1e9:  # skip a frame from before the stall
            after = cap.get(timeout=5.0)
        assert after is not None and cap.source.pid != old_pid
        assert cap.stall_count == 1
    finally:
        try:
            os.kill(old_pid, signal.SIGCONT)
        except ProcessLookupError:
            pass  # already gone, as it should be
        assert cap.close() == []
    with pytest.raises(ProcessLookupError):
        os.kill(old_pid, 0)


@needs_gst
def test_live_source_given_up_after_max_reopen():
    cfg = SourceConfig(max_reopen=1, stall_timeout_s=0.5)
    cap = CaptureThread(cfg, LIVE.format(extra="num-buffers=3", fps=50)).start()
    try:
        frames = drain(cap, timeout=15.0)  # the source ends once the reopen is used up
    finally:
        cap.close()
    assert cap.stats.stalls == 2 and cap.stats.reopens == 1
    assert "gave up" in cap.error
    assert 1 <= len(frames) <= 6 and [f.seq for f in frames] == sorted({f.seq for f in frames})


class _BlockedSource(FrameSource):
    """A source whose read never returns until released: what a hung driver looks like (pure logic)."""

    live = True

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def read(self) -> np.ndarray | None:
        self.release.wait(30)
        return None


def test_close_is_idempotent_and_names_a_stuck_thread(monkeypatch):
    src = _BlockedSource()
    monkeypatch.setattr(capture_thread, "open_source", lambda uri, cfg: src)
    cap = CaptureThread(SourceConfig(max_reopen=0), "stuck", join_timeout_s=0.2).start()
    try:
        assert cap.close() == ["capture"]
        assert cap.close() == ["capture"]
    finally:
        src.release.set()
    assert wait_for(lambda: cap.close() == [], timeout_s=5.0)


class _SilentSource(FrameSource):
    """A device that opens but never gives a frame (pure logic: what a wrong camera format looks like)."""

    live = True

    def read(self) -> np.ndarray | None:
        return None


def test_a_source_that_never_delivers_is_reopened_with_back_off(monkeypatch):
    opened = []
    monkeypatch.setattr(capture_thread, "open_source", lambda uri, cfg: opened.append(1) or _SilentSource())
    t0 = time.monotonic()
    cap = CaptureThread(SourceConfig(max_reopen=3), "silent").start()
    try:
        assert drain(cap, timeout=10.0) == []
    finally:
        cap.close()
    assert len(opened) == 4 and cap.stats.stalls == 4 and cap.stats.reopens == 3
    assert "gave up" in cap.error
    assert time.monotonic() - t0 >= 0.2 + 0.4 + 0.8  # waited between reopens instead of spinning


@needs_gst
def test_realtime_paces_a_file_like_pipeline():
    uri = "gst:videotestsrc num-buffers=6 ! video/x-raw,width=32,height=24,framerate=20/1"
    with CaptureThread(SourceConfig(realtime=True), uri) as cap:
        frames = drain(cap)
    t = [f.t_capture_ns / 1e9 for f in frames]
    assert len(frames) == 6 and frames[-1].pos_ms == pytest.approx(250.0)
    assert 0.25 * 0.95 <= t[-1] - t[0] <= 0.25 + 1.0

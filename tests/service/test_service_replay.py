"""The real line under a stand-in for systemd: `inspector run` (or the in-process Line where a fault must be
injected) on a rendered line of real casting photos, real ONNX inference, a real AF_UNIX datagram socket bound
by the test as $NOTIFY_SOCKET.

READY after warm-up and the first frame, WATCHDOG while the replay runs, no pings within one watchdog period of
a camera that freezes (a real gst-launch-1.0 pipeline stopped with SIGSTOP) or an inference that hangs (the one
fake: an engine wrapper the test can block), pings again when it returns, STOPPING at exit; SIGHUP with a good
and then a bad file during a replay: the new threshold decides the later parts, the bad file is refused with
one line, and no frame or part is lost."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from notify_kit import Listener

from engines.base import load_engine
from inspector.config import InspectorConfig
from inspector.line import Line, LineRequest

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "casting_seedcnn.onnx"
PERIOD = 0.5  # WATCHDOG_USEC: short, so the test is quick; the logic does not depend on its size
SLACK = 0.1  # a ping sent just before the deadline may arrive a little after it (a loaded machine)

pytestmark = pytest.mark.slow


def _config(line, tmp: Path, uri: str | None = None, **sections: dict) -> dict:
    cfg = {k: dict(v) for k, v in line.config.items()}
    if uri is not None:
        cfg["source"]["uri"] = uri
    cfg["source"]["realtime"] = True  # at the line's own pace: the run lasts as long as the clip (7.2 s)
    cfg["model"] = {"path": str(MODEL)}
    cfg["display"] = {"enabled": "off"}
    for k, v in sections.items():
        cfg[k] = {**cfg.get(k, {}), **v}
    return cfg


def _write(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _spawn(tmp: Path, config: Path, *extra: str) -> subprocess.Popen:
    """`inspector run --config FILE --no-display` as the unit's ExecStart runs it, with $NOTIFY_SOCKET set."""
    env = {
        **os.environ,
        "NOTIFY_SOCKET": str(tmp / "notify.sock"),
        "WATCHDOG_USEC": str(int(PERIOD * 1e6)),
        "PYTHONPATH": str(ROOT),
    }
    env.pop("DISPLAY", None)
    # a session of its own, no terminal, as systemd starts it (in a terminal SIGHUP means hang-up, not reload)
    return subprocess.Popen(
        [sys.executable, "-m", "inspector", "run", "--config", str(config), "--no-display", *extra],
        cwd=tmp,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _finish(proc: subprocess.Popen, lst: Listener, timeout: float = 60) -> tuple[int, str, str]:
    """Wait for the run to end, reading its datagrams meanwhile, as systemd does (the output is small)."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        lst.collect(0.1)
    try:
        out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"inspector run did not end within {timeout} s; stderr:\n{err[-3000:]}") from None
    return proc.returncode, out, err


def _pings(msgs: list[tuple[float, str]]) -> list[float]:
    return [t for t, m in msgs if m == "WATCHDOG=1"]


def _wait_prefix(lst: Listener, prefix: str, timeout_s: float) -> float:
    """The arrival time of the first datagram (already received or still to come) that starts with ``prefix``."""
    deadline = time.monotonic() + timeout_s
    while True:
        hit = [t for t, m in lst.messages if m.startswith(prefix)]
        if hit:
            return hit[0]
        left = deadline - time.monotonic()
        assert left > 0, f"no {prefix!r} within {timeout_s} s; got {[m for _, m in lst.messages]}"
        lst.next(left)


def _gst_child(pid: int) -> int:
    """The gst-launch-1.0 process the capture started for a gst: source (a child of ``pid``)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            if "gst-launch" in Path(f"/proc/{child}/cmdline").read_bytes().decode(errors="replace"):
                return int(child)
    raise AssertionError("no gst-launch-1.0 child found")


def test_run_speaks_the_notify_protocol(rendered_line, tmp_path: Path) -> None:
    """READY=1 (MAINPID, STATUS naming the warmed-up model and the first frame) before any ping; WATCHDOG=1 every
    half period while the replay runs; STOPPING=1 once the source ends and no ping after it; exit 0."""
    lst = Listener(str(tmp_path / "notify.sock"))
    try:
        proc = _spawn(tmp_path, _write(tmp_path / "line.yaml", _config(rendered_line, tmp_path)))
        ready = lst.wait_for("READY=1", 60)
        assert f"MAINPID={proc.pid}" in ready.split("\n"), ready
        assert "STATUS=casting_seedcnn.onnx (onnxruntime-cpu) warmed up; first frame 480x240 from " in ready, ready
        t_ready = lst.messages[-1][0]
        running = lst.collect(1.5)
        assert len(_pings(running)) >= 2, lst.messages  # every PERIOD / 2 while the replay runs
        stopping = lst.wait_for("STOPPING=1", 30)
        assert "STATUS=stopping: source ended" in stopping, stopping
        t_stop = lst.messages[-1][0]
        rc, _, err = _finish(proc, lst)
        lst.collect(0.3)  # anything still in the socket
        assert rc == 0, err[-3000:]
        pings = _pings(lst.messages)
        assert pings and min(pings) > t_ready, "a ping before READY=1"
        assert max(pings) < t_stop, "a ping after STOPPING=1"
        assert "Traceback" not in err, err[-3000:]
    finally:
        lst.close()


def test_pings_stop_while_the_camera_is_frozen(rendered_line, tmp_path: Path) -> None:
    """A live camera (gst-launch-1.0 at its own clock) frozen with SIGSTOP: the capture stops delivering; the last
    ping comes within one period of the freeze and STATUS says 'no frame'. The capture's own stall handling acts
    next (stall_timeout_s 1.5 s): STATUS 'camera stalled', the source is reopened (a new pipeline), frames flow,
    STATUS 'camera back' and the pings resume. SIGTERM: STOPPING=1, exit 0."""
    if shutil.which("gst-launch-1.0") is None:
        pytest.skip("gst-launch-1.0 not installed (apt-get install gstreamer1.0-tools)")
    uri = f"gst:uridecodebin uri=file://{rendered_line.video} ! identity sync=true"
    cfg = _config(rendered_line, tmp_path, uri, source={"stall_timeout_s": 1.5})
    lst = Listener(str(tmp_path / "notify.sock"))
    proc = _spawn(tmp_path, _write(tmp_path / "live.yaml", cfg))
    gst = None
    try:
        lst.wait_for("READY=1", 60)
        lst.wait_for("WATCHDOG=1", 2 * PERIOD)
        gst = _gst_child(proc.pid)
        os.kill(gst, signal.SIGSTOP)
        frozen_at = time.monotonic()
        msgs = lst.collect(1.2)  # the watchdog's turn: before the capture's own stall timeout
        late = [t - frozen_at for t in _pings(msgs) if t > frozen_at + PERIOD + SLACK]
        assert late == [], f"pings {late} s after the freeze; {msgs}"
        assert any(m.startswith("STATUS=stalled: no frame for") for _, m in msgs), msgs
        lst.wait_for("STATUS=camera stalled: parts in flight rejected, the gate holds; reopening the source", 5)
        t_back = _wait_prefix(lst, "STATUS=camera back: parts ", 10)  # the reopened source delivers
        lst.wait_for("WATCHDOG=1", 2 * PERIOD)  # and the pings resume
        assert max(_pings(lst.messages)) > t_back
        proc.send_signal(signal.SIGTERM)
        assert "STATUS=stopping: stop requested" in lst.wait_for("STOPPING=1", 10)
        rc, _, err = _finish(proc, lst)
        assert rc == 0, err[-3000:]
        assert "stall 1" in err, err[-3000:]  # one stall, counted by the capture
    finally:
        if gst is not None:
            try:
                os.kill(gst, signal.SIGCONT)
            except ProcessLookupError:  # the capture has already ended it on reopening
                pass
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        lst.close()


class BlockableEngine:
    """The real ONNX engine, with one fault the test controls: while ``hang`` is set, infer() does not return
    (until ``release``), as a wedged GPU driver or a deadlocked runtime would."""

    def __init__(self, engine) -> None:
        self._engine = engine
        self.hang, self.release, self.blocked = threading.Event(), threading.Event(), threading.Event()

    def __getattr__(self, name: str):
        return getattr(self._engine, name)

    def infer(self, batch):
        if self.hang.is_set():
            self.blocked.set()
            self.release.wait(30)
        return self._engine.infer(batch)

    def close(self) -> None:
        self._engine.close()


def test_pings_stop_while_inference_hangs(rendered_line, tmp_path: Path, monkeypatch) -> None:
    """The real Line in this process (its run loop on the main thread, as `inspector run` has it) with a live
    camera that keeps delivering; inference hangs on a part: frames still arrive, but the last ping comes within
    one period of the hang and STATUS says 'inspection made no progress'; released, pings resume; stop: STOPPING."""
    if shutil.which("gst-launch-1.0") is None:
        pytest.skip("gst-launch-1.0 not installed (apt-get install gstreamer1.0-tools)")
    sock = str(tmp_path / "notify.sock")
    lst = Listener(sock)
    monkeypatch.setenv("NOTIFY_SOCKET", sock)
    monkeypatch.setenv("WATCHDOG_USEC", str(int(PERIOD * 1e6)))
    engines: list[BlockableEngine] = []

    def load(path, **opts):
        engines.append(BlockableEngine(load_engine(path, **opts)))
        return engines[-1]

    monkeypatch.setattr("inspector.line.load_engine", load)
    uri = f"gst:uridecodebin uri=file://{rendered_line.video} ! identity sync=true"
    cfg = InspectorConfig.model_validate(_config(rendered_line, tmp_path, uri, source={"stall_timeout_s": 30.0}))
    seen: dict = {}

    def control(line: Line) -> None:
        try:
            lst.wait_for("READY=1", 60)
            lst.wait_for("WATCHDOG=1", 2 * PERIOD)
            eng = engines[0]
            eng.hang.set()
            assert eng.blocked.wait(10), "no part reached the engine"
            hung_at = time.monotonic()
            frames_then = line.capture.stats.frames
            seen["msgs"] = lst.collect(3 * PERIOD)
            seen["late"] = [t - hung_at for t in _pings(seen["msgs"]) if t > hung_at + PERIOD + SLACK]
            seen["frames_during"] = line.capture.stats.frames - frames_then
            eng.hang.clear()
            eng.release.set()
            lst.wait_for("WATCHDOG=1", 3 * PERIOD)
            seen["resumed"] = True
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread below
            seen["error"] = exc
        finally:
            line.request_stop()

    try:
        with Line(cfg, LineRequest(view=False)) as line:
            ctl = threading.Thread(target=control, args=(line,), daemon=True)
            ctl.start()
            line.run()
        ctl.join(10)
        assert "STATUS=stopping: stop requested" in lst.wait_for("STOPPING=1", 5)
    finally:
        for e in engines:
            e.release.set()
        lst.close()
    if "error" in seen:
        raise seen["error"]
    assert seen["frames_during"] > 0, "the camera should have kept delivering while inference hung"
    assert seen["late"] == [], (seen["late"], seen["msgs"])
    assert any(m.startswith("STATUS=stalled: inspection made no progress") for _, m in seen["msgs"]), seen["msgs"]
    assert seen.get("resumed")


def test_sighup_reloads_a_good_file_and_refuses_a_bad_one(rendered_line, tmp_path: Path) -> None:
    """During a replay: SIGHUP with threshold 1 -> 0 (and retention 30 -> 7, and one field that needs a restart),
    then SIGHUP with a threshold of 1.5. Expected: the first is applied between two frames (every part before it
    OK, every part after it DEFECT: with threshold 0 nothing can pass), logged as 'old -> new'; the restart-only
    field is named and not applied; the second is refused with ONE error line naming file:line and field, and
    the settings of the first stay. No frame lost (every frame of the clip inspected, none dropped), every part of
    the truth judged exactly once, part ids contiguous."""
    cfg_path = _write(tmp_path / "line.yaml", _config(rendered_line, tmp_path, model={"threshold": 1.0}))
    events = tmp_path / "run.jsonl"
    lst = Listener(str(tmp_path / "notify.sock"))
    proc = _spawn(tmp_path, cfg_path, "--events", str(events), "--truth", str(rendered_line.truth))
    try:
        lst.wait_for("READY=1", 60)
        lst.collect(1.5)  # a few parts go by under threshold 1.0
        good = _config(
            rendered_line,
            tmp_path,
            model={"threshold": 0.0},
            log={"retention_days": 7},
            source={"stall_timeout_s": 2.0},
        )
        _write(cfg_path, good)
        proc.send_signal(signal.SIGHUP)
        reloaded = lst.wait_for("READY=1", 10)  # RELOADING=1 first, then READY=1 with the outcome
        assert "STATUS=reloaded: model.threshold 1 -> 0; log.retention_days 30 -> 7" in reloaded, lst.messages
        assert any(m.startswith("RELOADING=1\nMONOTONIC_USEC=") for _, m in lst.messages), lst.messages
        lst.collect(1.0)
        bad = {**good, "model": {"path": str(MODEL), "threshold": 1.5}}
        _write(cfg_path, bad)
        proc.send_signal(signal.SIGHUP)
        refused = lst.wait_for("READY=1", 10)
        assert "STATUS=reload refused: " in refused and "keeping the running settings" in refused, refused
        rc, _, err = _finish(proc, lst)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        lst.close()
    assert rc == 0, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    lines = err.splitlines()
    done = [ln for ln in lines if "reloaded " in ln]
    assert len(done) == 1 and "model.threshold 1 -> 0; log.retention_days 30 -> 7" in done[0], lines
    restart = [ln for ln in lines if "source.stall_timeout_s changed" in ln]
    assert len(restart) == 1 and "needs a restart" in restart[0] and "not applied" in restart[0], lines
    refused_lines = [ln for ln in lines if "reload refused" in ln]
    assert len(refused_lines) == 1, lines
    bad_line = next(i + 1 for i, t in enumerate(cfg_path.read_text().splitlines()) if "threshold: 1.5" in t)
    assert f"{cfg_path}:{bad_line}: field 'model.threshold'" in refused_lines[0], refused_lines

    parts = [json.loads(x) for x in events.read_text().splitlines()]
    verdicts = [p["verdict"] for p in parts]
    assert "no_verdict" not in verdicts, parts
    k = verdicts.index("defect")  # the first part judged under threshold 0 ...
    # ... all of them, to the end: the refused file left threshold 0 in force; under 1.0 only a score of
    # exactly 1.0 is a defect, so the parts before the swap are OK (they are, on this line)
    assert 0 < k < len(parts) and all(v == "defect" for v in verdicts[k:]), verdicts
    assert all(v == "ok" for v in verdicts[:k]), verdicts
    assert [p["part_id"] for p in parts] == list(range(1, len(parts) + 1))
    frames_seen = [p["frame_index"] for p in parts]
    assert frames_seen == sorted(frames_seen)
    summary = json.loads((tmp_path / "run.summary.json").read_text())
    assert summary["frames"] == rendered_line.frames and summary["dropped_frames"] == 0, summary
    card = json.loads((tmp_path / "scorecard.json").read_text())
    assert card["missed"] == 0 and card["exactly_one_verdict"] and card["found"] == card["parts"] == 10, card


def test_sighup_in_a_terminal_still_ends_the_run(rendered_line, tmp_path: Path) -> None:
    """`inspector run --config` started in a terminal (a real pty as its controlling terminal): SIGHUP there means
    the terminal closed, so the run ends as it always did (killed by SIGHUP) instead of reloading."""
    import pty

    cfg_path = _write(tmp_path / "line.yaml", _config(rendered_line, tmp_path))
    lst = Listener(str(tmp_path / "notify.sock"))
    env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "PYTHONPATH": str(ROOT)}
    env.pop("DISPLAY", None)
    pid, master = pty.fork()  # the child: a new session with the pty's slave as its controlling terminal
    if pid == 0:  # pragma: no cover - the child
        os.chdir(tmp_path)
        signal.signal(signal.SIGHUP, signal.SIG_DFL)  # as a shell leaves it (this test may run under nohup)
        os.execve(sys.executable, [sys.executable, "-m", "inspector", "run", "--config", str(cfg_path)], env)
    out = bytearray()
    reader = threading.Thread(target=lambda: _drain(master, out), daemon=True)  # the dashboard draws on it
    reader.start()
    try:
        lst.wait_for("READY=1", 60)  # started: the signal handlers are in place (or left alone)
        os.kill(pid, signal.SIGHUP)
        deadline = time.monotonic() + 20
        while (done := os.waitpid(pid, os.WNOHANG))[0] == 0:
            assert time.monotonic() < deadline, "the run did not end on SIGHUP in a terminal"
            lst.collect(0.1)
        status = done[1]
        pid = 0
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGHUP, (status, bytes(out[-2000:]))
        assert not any(m.startswith("RELOADING=1") for _, m in lst.messages), lst.messages
    finally:
        if pid:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(master)
        lst.close()


def _drain(fd: int, into: bytearray) -> None:
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # the child has gone (EIO) or the test closed it
            return
        if not chunk:
            return
        into += chunk

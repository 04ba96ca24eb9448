"""MQTT from `inspector run`, against a real Mosquitto broker on localhost, read by a real paho subscriber.

The runs are child processes (`python -m inspector` with torch hidden, as on a plain install) over the drawn
line with the shipped ONNX model and the simulated gate. Checked: one message per part with the events file's
verdicts, state online -> offline (retained), camera state, stats equal to the exit summary; the broker's last
will when the inspector is killed; a broker that is not there (the line runs on, one warning, a clear report);
a password-protected broker; configuration errors.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from pydantic import ValidationError
from runtime_kit import LINE_SPRITES, watch_child

from engines.errors import UserError
from inspector.config import MqttConfig
from tests.waiting import wait_for

paho = pytest.importorskip("paho.mqtt.client", reason="paho-mqtt is not installed (pip install 'paho-mqtt>=2')")

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "casting_seedcnn.onnx"
TOPIC = "plant/line1/inspector"
NO_TORCH = (
    "import sys\n"
    "for m in ('torch', 'torchvision', 'onnx', 'sklearn'): sys.modules[m] = None  # the plain install has none\n"
    "from inspector.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)
MOSQUITTO = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_broker(d: Path, *, password: str | None = None) -> tuple[subprocess.Popen, int]:
    if MOSQUITTO is None:
        pytest.skip("mosquitto (the MQTT broker) is not installed: apt-get install mosquitto")
    port = free_port()
    conf = [f"listener {port} 127.0.0.1", "persistence false"]
    if os.geteuid() == 0:
        conf.append("user root")  # else it drops to user 'mosquitto', who cannot read the test's password file
    if password is None:
        conf.append("allow_anonymous true")
    else:
        pw = d / "passwd"
        pw.write_text(f"inspector:{password}\n")
        pw.chmod(0o600)
        subprocess.run([shutil.which("mosquitto_passwd") or "mosquitto_passwd", "-U", str(pw)], check=True)
        conf += ["allow_anonymous false", f"password_file {pw}"]
    (d / "mosquitto.conf").write_text("\n".join(conf) + "\n")
    proc = subprocess.Popen(
        [MOSQUITTO, "-c", str(d / "mosquitto.conf")], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, port
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"mosquitto did not start: {proc.stderr.read()}")
            time.sleep(0.05)
    proc.kill()
    pytest.fail("mosquitto did not listen within 10 s")


@pytest.fixture
def broker(tmp_path):
    proc, port = start_broker(tmp_path)
    yield port
    proc.terminate()
    proc.wait(timeout=10)


class Subscriber:
    """Everything under TOPIC/#: (topic, payload, retained) in arrival order."""

    def __init__(self, port: int, **auth) -> None:
        self.got: list[tuple[str, str, bool]] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        c = paho.Client(paho.CallbackAPIVersion.VERSION2)
        if auth:
            c.username_pw_set(auth["username"], auth["password"])
        c.on_message = self._on_message
        c.on_subscribe = lambda *a: self.subscribed.set()
        c.on_connect = lambda cl, *a: cl.subscribe(f"{TOPIC}/#", qos=1)
        c.connect("127.0.0.1", port)
        c.loop_start()
        assert self.subscribed.wait(5), "the test subscriber could not subscribe"
        self.client = c

    def _on_message(self, client, userdata, msg) -> None:
        with self.lock:
            self.got.append((msg.topic, msg.payload.decode(), bool(msg.retain)))

    def on(self, leaf: str) -> list[tuple[str, bool]]:
        with self.lock:
            return [(p, r) for t, p, r in self.got if t == f"{TOPIC}/{leaf}"]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def run_line(
    line_video: Path, d: Path, port: int, *, realtime: bool = False, extra_cfg: str = "", env_extra: dict | None = None
) -> subprocess.Popen:
    if not MODEL.is_file():
        pytest.skip("the shipped model is not in this checkout")
    cfg = d / "line.yaml"
    cfg.write_text(
        "detection:\n  method: threshold\n  threshold: 100\n  min_area: 800\n"
        f"model:\n  path: {MODEL}\n"
        "gate:\n  camera_to_gate_mm: 150\n  belt_speed_mm_s: 200\n"
        f"mqtt:\n  topic: {TOPIC}\n  stats_interval_s: 0.5\n{extra_cfg}"
    )
    argv = [
        "run",
        "--config",
        str(cfg),
        "--source",
        str(line_video),
        "--no-display",
        "--events",
        str(d / "ev.jsonl"),
        "--serial",
        "sim",
        "--mqtt",
        f"127.0.0.1:{port}",
    ]
    env = {**os.environ, **(env_extra or {})}
    env.pop("DISPLAY", None)
    return subprocess.Popen(
        [sys.executable, "-c", NO_TORCH, *argv, *(["--realtime"] if realtime else [])],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        env=env,
        cwd=d,
    )


def test_every_part_state_and_stats_reach_the_broker(line_video: Path, broker: int, tmp_path: Path) -> None:
    sub = Subscriber(broker)
    try:
        proc = run_line(line_video, tmp_path, broker, realtime=True)  # 5 s at the line's pace: stats go out mid-run
        out, err = watch_child(proc, lambda: False, timeout_s=60, every_s=0.1, exit_timeout_s=30)
        assert proc.returncode == 0, err[-3000:]
        assert "Traceback" not in err and "WARNING" not in err, err[-2000:]
        summary = json.loads((tmp_path / "ev.summary.json").read_text())
        events = [json.loads(line) for line in (tmp_path / "ev.jsonl").read_text().splitlines()]
        assert summary["parts"] == len(LINE_SPRITES) == len(events)
        assert wait_for(lambda: sub.on("state")[-1:] == [("offline", False)])
        parts = [json.loads(p) for p, _ in sub.on("parts")]
        # one message per part, with the events file's verdict, score and class, and a wall-clock time
        assert sorted(p["part_id"] for p in parts) == sorted(e["part_id"] for e in events)
        by_id = {e["part_id"]: e for e in events}
        for p in parts:
            e = by_id[p["part_id"]]
            assert (p["verdict"], p["score"], p["class"]) == (e["verdict"], e["score"], e["class"])
            assert abs(p["time"] - time.time()) < 120
        assert [s for s, _ in sub.on("state")] == ["online", "offline"]
        assert [s for s, _ in sub.on("camera")] == ["online"]
        stats = [json.loads(p) for p, _ in sub.on("stats")]
        assert len(stats) >= 3, "stats every 0.5 s over a 5 s run, and the last one at exit"
        assert any(0 < s["frames"] < summary["frames"] for s in stats), "a stats message mid-run"
        last = stats[-1]
        for verdict in ("ok", "defect", "no_verdict"):
            assert last["parts"][verdict] == summary[verdict]
        assert last["frames"] == summary["frames"] and last["mqtt_dropped"] == 0
        assert last["model"] == "casting_seedcnn.onnx" and last["gate"]["held"] is False
        assert last["gate"]["events"]["parts"] == summary["parts"]
        assert f"{summary['parts']} part message(s) published under {TOPIC}/parts, 0 dropped" in " ".join(out.split())
    finally:
        sub.close()
    # a monitor that connects later finds the last state and stats retained
    late = Subscriber(broker)
    try:
        # the broker sends the retained topics in no promised order: wait for all three before judging them
        assert wait_for(lambda: late.on("state") and late.on("stats") and late.on("camera"))
        assert late.on("state") == [("offline", True)] and late.on("camera") == [("online", True)]
        assert json.loads(late.on("stats")[0][0])["parts"] == last["parts"] and late.on("stats")[0][1]
        assert late.on("parts") == []  # verdicts are events, not retained state
    finally:
        late.close()


def test_a_killed_inspector_goes_offline_by_the_brokers_last_will(
    line_video: Path, broker: int, tmp_path: Path
) -> None:
    sub = Subscriber(broker)
    try:
        proc = run_line(line_video, tmp_path, broker, realtime=True)
        try:
            assert wait_for(lambda: sub.on("parts"), timeout_s=30), "no part message while the line ran"
            proc.send_signal(signal.SIGKILL)  # no goodbye: only the broker can say it
            proc.communicate(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert wait_for(lambda: [s for s, _ in sub.on("state")] == ["online", "offline"], timeout_s=10), sub.got
    finally:
        sub.close()


def test_no_broker_the_line_runs_on_and_says_so(line_video: Path, tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    proc = run_line(line_video, tmp_path, port)
    out, err = watch_child(proc, lambda: False, timeout_s=60, every_s=0.1, exit_timeout_s=30)
    assert proc.returncode == 0, err[-3000:]
    assert "Traceback" not in err
    summary = json.loads((tmp_path / "ev.summary.json").read_text())
    assert summary["parts"] == len(LINE_SPRITES), "every part judged and logged without the broker"
    assert err.count(f"mqtt broker 127.0.0.1:{port} unreachable") == 1, err[-2000:]
    assert f"never reached the broker at 127.0.0.1:{port}" in err
    assert f"mqtt 127.0.0.1:{port} (never reached;" in " ".join(out.split())


def test_password_protected_broker(tmp_path: Path) -> None:
    from inspector.mqtt import MqttPublisher

    proc, port = start_broker(tmp_path, password="s3cret")
    sub = Subscriber(port, username="inspector", password="s3cret")
    pub = None
    try:
        os.environ["TEST_MQTT_PASSWORD"] = "s3cret"
        cfg = MqttConfig(enabled=True, port=port, topic=TOPIC, username="inspector", password_env="TEST_MQTT_PASSWORD")
        pub = MqttPublisher(cfg)
        assert pub.connected.wait(5), "did not connect with the right password"
        assert wait_for(lambda: sub.on("state") == [("online", False)])
        pub.close()
        assert wait_for(lambda: [s for s, _ in sub.on("state")] == ["online", "offline"])
        os.environ["TEST_MQTT_PASSWORD"] = "wrong"
        pub = MqttPublisher(cfg)
        assert not pub.connected.wait(1.5), "a wrong password must not connect"
        pub.close()
        assert pub.stats["connects"] == 0 and "never reached" in pub.report()
    finally:
        os.environ.pop("TEST_MQTT_PASSWORD", None)
        sub.close()
        proc.terminate()
        proc.wait(timeout=10)


def test_configuration_errors() -> None:
    from inspector.mqtt import MqttPublisher

    for bad in ("a/#", "a/+/b", "", "/a", "a//b"):
        with pytest.raises(ValidationError, match="no wildcards"):
            MqttConfig(topic=bad)
    assert MqttConfig(topic="plant/line1/").topic == "plant/line1"
    with pytest.raises(ValidationError):
        MqttConfig(qos=3)
    with pytest.raises(ValidationError):
        MqttConfig(bogus=1)
    os.environ.pop("INSPECTOR_TEST_UNSET", None)
    with pytest.raises(UserError, match="mqtt.password_env names INSPECTOR_TEST_UNSET, which is not set"):
        MqttPublisher(MqttConfig(username="u", password_env="INSPECTOR_TEST_UNSET"))
    with pytest.raises(UserError, match="mqtt.tls_ca .*cannot use it"):
        MqttPublisher(MqttConfig(tls_ca="/nonexistent/ca.pem"))


def test_cli_broker_argument() -> None:
    from inspector.cli import main
    from inspector.commands.lineargs import broker as _broker

    assert _broker("broker.local") == ("broker.local", None)
    assert _broker("10.0.0.5:8883") == ("10.0.0.5", 8883)
    assert _broker("::1") == ("::1", None)
    for bad in ("host:0", "host:x", ":1883", "host:70000"):
        with pytest.raises(Exception, match="HOST or HOST:PORT"):
            _broker(bad)
    with pytest.raises(SystemExit) as e:
        main(["run", "--mqtt", "host:x"])
    assert e.value.code == 2

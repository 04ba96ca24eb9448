"""MQTT for one `inspector run`: verdicts and line state pushed to the plant's broker (paho-mqtt).

Topics under ``mqtt.topic`` (PREFIX):

- ``PREFIX/state``  ``online`` / ``offline``, retained; the broker publishes ``offline`` itself (last will)
  if the inspector dies without saying goodbye;
- ``PREFIX/camera`` ``online`` / ``stalled``, retained, on each change;
- ``PREFIX/parts``  one JSON message per part (the events-file fields plus wall-clock ``time``), QoS ``mqtt.qos``;
- ``PREFIX/stats``  retained JSON every ``mqtt.stats_interval_s``: parts by verdict, frames, stalls, the gate.

The inspection thread only puts the part on a bounded queue (``on_part``); a publisher thread serialises it
and hands it to paho, whose own network thread talks to the broker and reconnects by itself. An unreachable
broker never slows or stops the line: messages wait in paho's queue up to ``mqtt.max_queued``, later ones are
dropped and counted, and the run's end says how many.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import socket
import threading
import time
from typing import Any

import paho.mqtt.client as paho

from ground.errors import UserError
from inspector.config import MqttConfig
from inspector.health import HealthProbe
from inspector.records import Part, Verdict

log = logging.getLogger(__name__)

POLL_S = 0.02  # the publisher thread's pace: at most this much added to a part message's latency


class MqttPublisher:
    """A PartSink that publishes to MQTT. ``attach`` hands over the loop stats and the gate for PREFIX/stats."""

    def __init__(self, cfg: MqttConfig, model: str = "") -> None:
        self.cfg = cfg
        self.model = model
        p = cfg.topic
        self.t_state, self.t_camera, self.t_parts, self.t_stats = (
            f"{p}/state",
            f"{p}/camera",
            f"{p}/parts",
            f"{p}/stats",
        )
        self.counts = {v.value: 0 for v in Verdict}
        # parts: part messages handed to paho (sent, or held by it until the broker is back); dropped: not;
        # acked: part messages the broker acknowledged (QoS 1/2; QoS 0: written to the socket), what "published" means
        self.stats = {"parts": 0, "acked": 0, "messages": 0, "dropped": 0, "connects": 0, "disconnects": 0}
        # paho's message ids (16 bit, reused) of part messages in flight, and acks that came before the id was noted
        self._ack_lock = threading.Lock()
        self._in_flight: dict[int, bool] = {}
        self._early_acks: set[int] = set()
        self._closed = False
        self._stop = threading.Event()
        self.dropped_queue = 0
        self.loop_stats: Any = None
        self.gate: Any = None
        self.probe = HealthProbe()  # what the stats messages read
        self.connected = threading.Event()
        self._camera: str | None = None
        self._warned = False
        self._q: queue.Queue = queue.Queue(maxsize=cfg.max_queued)
        client_id = cfg.client_id or f"inspector-{socket.gethostname()}-{os.getpid()}"
        c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id)
        c.will_set(self.t_state, "offline", qos=1, retain=True)
        if cfg.username:
            password = None
            if cfg.password_env:
                password = os.environ.get(cfg.password_env)
                if password is None:
                    raise UserError(
                        f"mqtt.password_env names {cfg.password_env}, which is not set; export it or drop "
                        "mqtt.password_env"
                    )
            c.username_pw_set(cfg.username, password)
        if cfg.tls_ca:
            try:
                c.tls_set(ca_certs=cfg.tls_ca)
            except (OSError, ValueError) as exc:
                raise UserError(f"mqtt.tls_ca {cfg.tls_ca}: cannot use it ({exc}); give a readable PEM file") from None
        c.max_queued_messages_set(cfg.max_queued)
        c.reconnect_delay_set(1, 30)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_connect_fail = self._on_connect_fail
        c.on_publish = self._on_publish
        self.client = c
        try:
            c.connect_async(cfg.host, cfg.port, keepalive=30)
        except (OSError, ValueError) as exc:
            raise UserError(f"mqtt {cfg.host}:{cfg.port}: {exc}; check mqtt.host and mqtt.port") from None
        c.loop_start()
        self._thread = threading.Thread(target=self._run, name="mqtt-publisher", daemon=True)
        self._thread.start()

    def attach(self, *, stats: Any = None, gate: Any = None) -> None:
        """The line's stages the stats messages read (through one :class:`~inspector.health.Health` snapshot)."""
        self.loop_stats, self.gate = stats, gate
        self.probe.attach(stats=stats, gate=gate)

    # -- paho callbacks (its network thread) -----------------------------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._warn(f"mqtt broker {self.cfg.host}:{self.cfg.port} refused the connection: {reason_code}")
            return
        self.stats["connects"] += 1
        self.connected.set()
        self._note(client.publish(self.t_state, "online", qos=1, retain=True), False)
        if self._camera is not None:
            self._note(client.publish(self.t_camera, self._camera, qos=1, retain=True), False)
        log.info("mqtt connected to %s:%d, publishing under %s/", self.cfg.host, self.cfg.port, self.cfg.topic)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if self.connected.is_set() and not self._closed:  # our own goodbye in close() is not news
            self.stats["disconnects"] += 1
            log.warning(
                "mqtt broker %s:%d disconnected (%s); reconnecting, messages held up to mqtt.max_queued",
                self.cfg.host,
                self.cfg.port,
                reason_code,
            )
        self.connected.clear()

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        """The broker acknowledged message ``mid`` (QoS 0: it was written to the socket). Runs on paho's thread
        inside its own lock: only our small bookkeeping lock is taken here, never a paho call."""
        with self._ack_lock:
            is_part = self._in_flight.pop(mid, None)
            if is_part is None:
                self._early_acks.add(mid)
            elif is_part:
                self.stats["acked"] += 1

    def _note(self, info, is_part: bool) -> None:
        """Remember a message paho took, to count its acknowledgement when it comes (or came already)."""
        with self._ack_lock:
            if info.mid in self._early_acks:
                self._early_acks.discard(info.mid)
                if is_part:
                    self.stats["acked"] += 1
            else:
                self._in_flight[info.mid] = is_part

    def _on_connect_fail(self, client, userdata) -> None:
        self._warn(f"mqtt broker {self.cfg.host}:{self.cfg.port} unreachable; retrying (the line runs on)")

    def _warn(self, msg: str) -> None:
        if not self._warned:  # once: the retries go on quietly
            self._warned = True
            log.warning(msg)

    # -- PartSink (the inspection thread) --------------------------------------------------------------
    def on_part(self, part: Part) -> None:
        self.counts[part.verdict.value] += 1
        if not self.cfg.parts:
            return
        try:
            self._q.put_nowait((time.time(), part))  # turned into JSON on the publisher thread
        except queue.Full:
            self.dropped_queue += 1  # this thread's own counter: the publisher thread keeps stats

    # -- publisher thread ------------------------------------------------------------------------------
    def _run(self) -> None:
        # Polls (every POLL_S) rather than waiting on the queue: a put then wakes no thread, so on_part costs
        # the inspection thread a few microseconds instead of a thread switch per part.
        next_stats = time.monotonic()
        stopping = False
        while not stopping:
            stopping = self._stop.wait(POLL_S)
            while True:
                try:
                    t, part = self._q.get_nowait()
                except queue.Empty:
                    break
                payload = json.dumps({"time": round(t, 3), **part.to_row()}, separators=(",", ":"))
                if self._publish(self.t_parts, payload, self.cfg.qos, part=True):
                    self.stats["parts"] += 1
            now = time.monotonic()
            self._camera_state()
            if now >= next_stats and not stopping:
                next_stats = now + self.cfg.stats_interval_s
                self._publish(self.t_stats, json.dumps(self.snapshot(), separators=(",", ":")), 1, retain=True)

    def _publish(self, topic: str, payload: str, qos: int, retain: bool = False, part: bool = False) -> bool:
        """True: sent, or held by paho until the broker is back (QoS > 0); False: dropped (counted)."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc == paho.MQTT_ERR_SUCCESS or (info.rc == paho.MQTT_ERR_NO_CONN and qos > 0):
            self.stats["messages"] += 1
            self._note(info, part)
            return True
        self.stats["dropped"] += 1
        return False

    def _camera_state(self) -> None:
        if self.loop_stats is None:
            return
        state = "stalled" if self.probe.snapshot().camera.stalled else "online"
        if state != self._camera:
            self._camera = state
            self._publish(self.t_camera, state, 1, retain=True)

    def snapshot(self) -> dict:
        """What PREFIX/stats carries (also the last message at the end of the run)."""
        h = self.probe.snapshot()
        insp = h.inspection
        out: dict[str, Any] = {
            "time": round(h.time, 3),
            "model": self.model,
            "parts": dict(self.counts),
            "frames": insp.frames,
            "fps": round(insp.fps, 1),
            "dropped_frames": insp.dropped,
            "source_stalls": insp.stalls,
            "stalled": h.camera.stalled,
            "mqtt_dropped": self.stats["dropped"] + self.dropped_queue,
        }
        if h.gate is not None:
            g = h.gate
            out["gate"] = {
                "connected": g.connected,
                "held": g.held,
                "hold_reasons": list(g.hold_reasons),
                "events": g.events,
            }
        return out

    def close(self, timeout_s: float = 3.0) -> None:
        """Flush the parts, publish the last stats and ``offline``, then disconnect; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._thread.join(timeout=timeout_s)
        last = [
            self.client.publish(self.t_stats, json.dumps(self.snapshot(), separators=(",", ":")), qos=1, retain=True),
            self.client.publish(self.t_state, "offline", qos=1, retain=True),
        ]
        for info in last:
            self._note(info, False)
        deadline = time.monotonic() + timeout_s
        if self.connected.is_set():
            for info in last:
                try:
                    info.wait_for_publish(max(0.0, deadline - time.monotonic()))
                except (RuntimeError, ValueError):
                    break
        self.client.disconnect()
        self.client.loop_stop()
        if self.stats["connects"] == 0:
            log.warning(
                "mqtt: never reached the broker at %s:%d; no message was delivered", self.cfg.host, self.cfg.port
            )

    @property
    def undelivered(self) -> int:
        """Part messages paho took that the broker never acknowledged (held while it was away, then lost at exit)."""
        return max(0, self.stats["parts"] - self.stats["acked"])

    def report(self) -> str:
        """One line for the end of the run: "published" counts what the broker acknowledged (QoS 0: sent)."""
        s = self.stats
        reached = "connected" if s["connects"] else "never reached"
        lost = self.undelivered
        unacked = f", {lost} never acknowledged by the broker (lost when the run ended)" if lost else ""
        return (
            f"mqtt {self.cfg.host}:{self.cfg.port} ({reached}; {s['disconnects']} disconnect(s)): "
            f"{s['acked']} part message(s) published under {self.cfg.topic}/parts, "
            f"{s['dropped'] + self.dropped_queue} dropped{unacked}"
        )

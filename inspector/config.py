"""The runtime configuration: one YAML file, validated by typed models that reject unknown keys.

Each section belongs to one stage of the line (source -> roi/detection/tracking -> model -> gate -> log ->
display). Paths in the file are relative to the file itself. Load with :func:`load_config`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from ground.yamlconf import load_model


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _resolve(value: str | None, info: ValidationInfo) -> str | None:
    """Relative paths are relative to the configuration file."""
    if value is None or "://" in value or value.startswith("gst:"):
        return value
    base = (info.context or {}).get("base_dir")
    p = Path(value).expanduser()
    if base is not None and not p.is_absolute():
        p = Path(base) / p
    return str(p)


def _on_off(value: object) -> object:
    """YAML 1.1 reads an unquoted on/off (yes/no, true/false) as a boolean: for an on/off field that is the word."""
    if isinstance(value, bool):
        return "on" if value else "off"
    return value


def _off_is_none(value: object) -> object:
    """A field whose None means 'off' (no gate, no log, no limit) also takes an unquoted off/no/false."""
    return None if value is False else value


class SourceConfig(Section):
    uri: str = Field(
        "demo",
        description="'demo', a camera index ('0'), a video file or image folder, rtsp://..., or 'gst:PIPELINE'",
    )
    width: int | None = Field(None, gt=0, description="requested capture width in px (cameras)")
    height: int | None = Field(None, gt=0, description="requested capture height in px (cameras)")
    fps: float | None = Field(None, gt=0, description="requested camera frame rate")
    fourcc: str | None = Field("MJPG", description="camera pixel format, e.g. MJPG or YUYV")
    realtime: bool = Field(False, description="files: pace frames at the recorded rate instead of flat out")
    stall_timeout_s: float = Field(1.0, gt=0, description="no frame for this long = stalled; reopen the source")
    max_reopen: int = Field(-1, description="how many times to reopen a stalled live source (-1: forever)")
    loop: bool = Field(False, description="files: start again at the end (soak tests)")

    @field_validator("uri")
    @classmethod
    def _file_uri(cls, value: str, info: ValidationInfo) -> str:
        """A video file or image folder is relative to the configuration file, like every other path."""
        if value == "demo" or value.strip().lstrip("-").isdigit():  # a camera index (a negative one is refused)
            return value
        return _resolve(value, info)


class RoiConfig(Section):
    x: int = Field(0, ge=0, description="ROI left edge, px")
    y: int = Field(0, ge=0, description="ROI top edge, px")
    width: int | None = Field(None, gt=0, description="ROI width in px (None: to the right edge)")
    height: int | None = Field(None, gt=0, description="ROI height in px (None: to the bottom edge)")
    direction: Literal["left", "right", "up", "down"] = Field("right", description="belt travel in the image")
    trigger: float = Field(
        0.5, gt=0, lt=1, description="trigger line position as a fraction of the ROI along the belt direction"
    )
    file: str | None = Field(None, description="an ROI artefact from `inspector calibrate roi` (overrides the above)")

    _r = field_validator("file")(_resolve)


class DetectionConfig(Section):
    method: Literal["threshold", "background", "color", "hue"] = Field(
        "threshold",
        description="segment parts by brightness, by a learned background, by colour difference from the belt, or "
        "by a range of hue, saturation and value",
    )
    threshold: int | Literal["otsu"] = Field("otsu", description="brightness threshold 0-255, or 'otsu'")
    otsu_min_contrast: float = Field(
        25.0, ge=0, description="otsu: the two classes' mean brightness must differ by this, else no part (empty belt)"
    )
    invert: bool = Field(False, description="parts darker than the belt")
    belt_color: list[int] | None = Field(None, description="BGR belt colour for method 'color'")
    color_distance: float = Field(40.0, gt=0, description="colour distance from the belt that counts as a part")
    hsv_lower: list[int] | None = Field(
        None, description="method 'hue': the lowest [H, S, V] that is a part (OpenCV: H 0-179, i.e. degrees / 2)"
    )
    hsv_upper: list[int] | None = Field(
        None, description="method 'hue': the highest [H, S, V]; an H below hsv_lower's wraps past 179 (reds)"
    )
    blur: int = Field(5, ge=0, description="Gaussian blur kernel (odd px, 0 = none) before segmentation")
    min_area: int = Field(400, ge=1, description="smallest blob area in px that counts as a part")
    max_area: int | None = Field(None, ge=1, description="largest blob area in px (None: no limit)")
    margin: int = Field(8, ge=0, description="px added around each part's box for the crop")
    morph: int = Field(5, ge=0, description="morphological open/close kernel (px, 0 or 1 = none) on the mask")
    downscale: int | Literal["auto"] = Field(
        "auto",
        description="segment at 1/N resolution (speed; boxes are scaled back, +-N px); auto: from min_area",
    )

    @field_validator("downscale")
    @classmethod
    def _downscale(cls, v: int | str) -> int | str:
        if v != "auto" and not 1 <= int(v) <= 8:
            raise ValueError(f"downscale must be 1-8 or 'auto', got {v}")
        return v

    background_frames: int = Field(
        15, ge=1, description="method 'background': frames of empty belt to learn the background from"
    )
    background_rate: float = Field(
        0.01, ge=0, le=1, description="method 'background': running-average rate over belt pixels (0: frozen)"
    )

    @field_validator("hsv_lower", "hsv_upper")
    @classmethod
    def _hsv(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (len(v) != 3 or not 0 <= v[0] <= 179 or not all(0 <= c <= 255 for c in v[1:])):
            raise ValueError("expected [H, S, V] with H 0-179 (OpenCV's hue: degrees / 2), S and V 0-255")
        return v

    @model_validator(mode="after")
    def _areas(self) -> DetectionConfig:
        if self.max_area is not None and self.max_area < self.min_area:
            raise ValueError(f"max_area ({self.max_area}) must be >= min_area ({self.min_area})")
        if self.method == "hue":
            lo, hi = self.hsv_lower, self.hsv_upper
            if lo is None or hi is None:
                raise ValueError(
                    "method 'hue' needs hsv_lower and hsv_upper, e.g. [100, 150, 60] and [125, 255, 255] for blue "
                    "(OpenCV HSV: H 0-179, S and V 0-255)"
                )
            if lo[1] > hi[1] or lo[2] > hi[2]:
                raise ValueError(
                    f"hsv_lower {lo} has a higher S or V than hsv_upper {hi}, so nothing would match; swap them "
                    "(only H may wrap: lower H > upper H means the hues past 179 and from 0)"
                )
        return self


class TrackingConfig(Section):
    max_distance_px: float = Field(80.0, gt=0, description="largest jump of a part between frames")
    max_missed_frames: int = Field(5, ge=0, description="frames a part may vanish before its track ends")
    classify_at: Literal["trigger", "centre"] = Field(
        "trigger", description="classify when the part crosses the trigger line, or at its best-centred frame"
    )
    min_hits: int = Field(2, ge=1, description="frames a part must be seen in before it can be classified")
    max_backtrack_px: float = Field(
        10.0, ge=0, description="how far a part may appear to move against the belt between frames (jitter)"
    )


class ModelConfig(Section):
    path: str = Field("models/casting_seedcnn.onnx", description="model file: .onnx, .engine or .pt")
    threshold: float | None = Field(None, ge=0, le=1, description="override the model's decision threshold")
    min_sharpness: float | None = Field(
        None,
        ge=0,
        description="reject (no_verdict, reason 'blurred: ...') a part whose crop, at the model's input size, has a "
        "variance of the Laplacian below this: motion blur or defocus hides small defects; None: off. On simulated "
        "casting lines sharp crops scored >= 305 and half-frame motion blur at 25 px/frame <= 201, so 250 separates "
        "them (docs/BENCHMARKS.md, Runtime (replay)); measure your own line's events before setting it",
    )
    threads: int | None = Field(
        1,
        ge=1,
        description="CPU threads per inference (ONNX Runtime, PyTorch); 1 leaves the other cores to capture and "
        "segmentation (on 2 cores ORT's default pool raised pipeline overhead from 0.95 to 1.41); None: the backend's",
    )
    input_size: int | None = Field(None, gt=0, description="expected model input size; refused if it differs")

    _r = field_validator("path")(_resolve)
    _off = field_validator("min_sharpness", mode="before")(_off_is_none)


class GateConfig(Section):
    port: str | None = Field(None, description="serial port, a pyserial URL (loop://, spy://...), 'sim', or None")
    baudrate: int = Field(115200, gt=0, description="serial line speed (bits/s)")
    camera_to_gate_mm: float = Field(300.0, gt=0, description="belt distance from the trigger line to the gate")
    belt_speed_mm_s: float = Field(200.0, gt=0, description="belt speed")
    ack_timeout_ms: float = Field(50.0, gt=0, description="the controller must acknowledge a command within this")
    heartbeat_ms: float = Field(200.0, gt=0, description="heartbeat period, both ways")
    link_timeout_ms: float = Field(
        600.0, gt=0, description="no heartbeat for this long: the controller goes fail-safe (and the host says so)"
    )
    fail_safe: Literal["divert", "stop"] = Field("divert", description="what the controller does when the link dies")
    worst_latency_ms: float = Field(100.0, gt=0, description="worst-case capture-to-command latency to allow for")
    pulse_ms: float = Field(50.0, gt=0, description="how long the diverter stays out for one part")
    timebase: Literal["clock", "time", "encoder"] = Field(
        "clock",
        description="'clock': fire at a time on the controller's clock (synchronised by heartbeats); 'time': "
        "fire N ms after receipt; 'encoder': fire at an encoder count on the controller",
    )
    counts_per_mm: float | None = Field(None, gt=0, description="encoder counts per mm of belt (timebase encoder)")
    wire_delay_ms: float = Field(
        0.0, ge=0, description="measured host-to-controller transfer delay, subtracted from each fire delay"
    )
    late_margin_ms: float = Field(
        5.0, ge=0, description="a verdict with less than this left before its gate time is late"
    )
    late_policy: Literal["reject", "pass"] = Field(
        "reject", description="a late verdict: fire the gate at once (reject) even for an OK part, or let it pass"
    )
    queue_size: int = Field(256, ge=1, description="parts waiting for the serial thread before new ones overflow")

    _off = field_validator("port", mode="before")(_off_is_none)

    @property
    def travel_ms(self) -> float:
        """Belt travel from the camera to the gate, in ms: the one place it is computed."""
        return self.camera_to_gate_mm / self.belt_speed_mm_s * 1000.0

    @property
    def travel_ns(self) -> int:
        return int(self.camera_to_gate_mm / self.belt_speed_mm_s * 1e9)

    @model_validator(mode="after")
    def _reachable(self) -> GateConfig:
        if self.timebase == "encoder" and self.counts_per_mm is None:
            raise ValueError("timebase 'encoder' needs counts_per_mm (encoder counts per mm of belt)")
        travel = self.travel_ms
        need = self.worst_latency_ms + self.link_timeout_ms
        if travel < need:
            raise ValueError(
                f"the gate is {travel:.0f} ms of belt travel from the camera ({self.camera_to_gate_mm:g} mm at "
                f"{self.belt_speed_mm_s:g} mm/s) but a verdict may take worst_latency_ms {self.worst_latency_ms:g}"
                f" and a dead link is noticed after link_timeout_ms {self.link_timeout_ms:g} ({need:.0f} ms); "
                "move the gate further downstream, slow the belt, or lower link_timeout_ms"
            )
        return self


class LogConfig(Section):
    db: str | None = Field(None, description="SQLite defect log (None: no log)")
    images_dir: str | None = Field(None, description="where JPEG crops go (default: beside the database)")
    ok_sample_fraction: float = Field(0.02, ge=0, le=1, description="fraction of OK parts whose crop is kept")
    retention_days: float | None = Field(30.0, gt=0, description="delete rows and images older than this")
    max_size_mb: float | None = Field(2048.0, gt=0, description="keep images under this total size")
    queue_size: int = Field(1024, ge=1, description="parts waiting to be written before images are dropped")
    max_pending_rows: int = Field(
        200_000,
        ge=100,
        description="rows held in memory while the database cannot be written (disk full, locked); past that new "
        "rows are dropped and counted, so a long outage cannot exhaust memory and stop the line (~1 KB a row)",
    )
    min_free_mb: float = Field(200.0, ge=0, description="stop writing images when the disk has less free space")
    jpeg_quality: int = Field(90, ge=1, le=100, description="JPEG quality of the kept crops")
    retention_check_s: float = Field(300.0, gt=0, description="how often retention runs while logging")

    _r = field_validator("db", "images_dir")(_resolve)
    _off = field_validator("db", "retention_days", "max_size_mb", mode="before")(_off_is_none)


class DisplayConfig(Section):
    enabled: Literal["auto", "on", "off"] = Field("auto", description="overlay window: auto = when a display exists")
    scale: float = Field(1.0, gt=0, description="window scale")

    _b = field_validator("enabled", mode="before")(_on_off)


class MetricsConfig(Section):
    enabled: bool = Field(False, description="serve Prometheus metrics at http://HOST:PORT/metrics while the line runs")
    host: str = Field(
        "127.0.0.1",
        description="address to listen on: this machine only by default; '0.0.0.0' serves the network (no "
        "authentication: firewall it)",
    )
    port: int = Field(9108, ge=1, le=65535, description="TCP port of the metrics endpoint")


class MqttConfig(Section):
    enabled: bool = Field(False, description="publish verdicts and line state to an MQTT broker while the line runs")
    host: str = Field("127.0.0.1", description="the broker's address")
    port: int = Field(1883, ge=1, le=65535, description="the broker's TCP port (8883 is usual with TLS)")
    topic: str = Field(
        "inspector",
        description="topic prefix: PREFIX/state (online/offline, retained), PREFIX/camera (online/stalled, "
        "retained), PREFIX/parts (one JSON message per part), PREFIX/stats (retained JSON counts)",
    )
    client_id: str | None = Field(None, description="MQTT client id (None: inspector-<host>-<pid>)")
    username: str | None = Field(None, description="user name, when the broker asks for one")
    password_env: str | None = Field(
        None, description="name of the environment variable that holds the password (never the password itself)"
    )
    tls_ca: str | None = Field(
        None, description="CA certificate file: connect with TLS and check the broker's certificate"
    )
    qos: int = Field(1, ge=0, le=2, description="QoS of the parts messages (state and stats use 1)")
    parts: bool = Field(True, description="publish one message per part (false: state and stats only)")
    stats_interval_s: float = Field(5.0, gt=0, description="seconds between PREFIX/stats messages")
    max_queued: int = Field(
        10000,
        ge=10,
        description="messages held while the broker is unreachable; past that, new ones are dropped and counted",
    )

    _r = field_validator("tls_ca")(_resolve)

    @field_validator("topic")
    @classmethod
    def _topic(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if not value or "+" in value or "#" in value or "//" in value or value.startswith("/"):
            raise ValueError("a topic prefix like 'factory/line1/inspector': no wildcards (+, #), no empty levels")
        return value


class WebConfig(Section):
    enabled: bool = Field(False, description="serve the live console (stream, counts, threshold) while the line runs")
    host: str = Field(
        "127.0.0.1",
        description="address to listen on: this machine only by default; any other address needs token_env",
    )
    port: int = Field(8088, ge=0, le=65535, description="TCP port of the console (0: any free port)")
    token_env: str | None = Field(
        None,
        description="name of the environment variable holding the token that threshold changes must carry "
        "(required when host is not a loopback address; never the token itself)",
    )
    stream_fps: float = Field(
        10.0, gt=0, le=60, description="most overlay frames per second the stream sends (rendered only while watched)"
    )
    stream_width: int = Field(960, ge=64, description="the stream's frames are scaled down to this width at most")
    jpeg_quality: int = Field(75, ge=10, le=100, description="JPEG quality of the stream and the thumbnails")
    recent_defects: int = Field(24, ge=1, le=500, description="how many recent defects the page shows")
    score_window: int = Field(1000, ge=10, le=100000, description="recent OK and defect scores in the histogram")
    linger_s: float = Field(
        0.0, ge=0, description="keep the console up this long after the line ends (the final counts); SIGTERM ends it"
    )


class CalibrationConfig(Section):
    camera: str | None = Field(None, description="camera calibration YAML from `inspector calibrate camera`")

    _r = field_validator("camera")(_resolve)


class InspectorConfig(Section):
    source: SourceConfig = Field(default_factory=SourceConfig)
    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig)
    roi: RoiConfig = Field(default_factory=RoiConfig)
    detection: DetectionConfig = Field(default_factory=DetectionConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    gate: GateConfig = Field(default_factory=GateConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    display: DisplayConfig = Field(default_factory=DisplayConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    web: WebConfig = Field(default_factory=WebConfig)


def stall_gate_problem(cfg: InspectorConfig) -> str | None:
    """A live camera's stall must be noticed, and the gate held, before an unseen part can reach the gate."""
    if not cfg.gate.port:
        return None
    travel_ms = cfg.gate.travel_ms
    need_ms = cfg.source.stall_timeout_s * 1000.0 + cfg.gate.ack_timeout_ms
    if need_ms < travel_ms:
        return None
    return (
        f"source.stall_timeout_s {cfg.source.stall_timeout_s:g} s (+ gate.ack_timeout_ms "
        f"{cfg.gate.ack_timeout_ms:g}) is not shorter than the {travel_ms:.0f} ms of belt travel from camera to gate, "
        "so parts passing a frozen camera could reach the gate before it is held; lower source.stall_timeout_s"
    )


def load_config(path: str | Path) -> InspectorConfig:
    return load_model(InspectorConfig, path)

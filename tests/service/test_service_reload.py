"""The SIGHUP reload's logic: which fields change live, the diff, validation and refusal (real files, the real
loader), and the ROI swap between two frames in the real pipeline (real ONNX engine, drawn frames). The reload
through a real signal during a real replay is in test_service_replay.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from waiting import wait_for

from engines.base import load_engine
from inspector.config import InspectorConfig, load_config
from inspector.detect import Roi
from inspector.pipeline import Pipeline
from inspector.records import Frame, Part, Verdict
from inspector.service.reload import Reloader, differences, is_live, with_live

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "casting_seedcnn.onnx"
SIZE = (320, 120)


@pytest.mark.parametrize(
    ("key", "live"),
    [
        ("model.threshold", True),
        ("model.min_sharpness", True),
        ("roi.x", True),
        ("roi.trigger", True),
        ("roi.file", True),
        ("log.retention_days", True),
        ("log.max_size_mb", True),
        ("log.ok_sample_fraction", True),
        ("log.min_free_mb", True),
        ("model.path", False),
        ("model.threads", False),
        ("source.uri", False),
        ("source.stall_timeout_s", False),
        ("gate.port", False),
        ("gate.belt_speed_mm_s", False),
        ("log.db", False),
        ("log.images_dir", False),
        ("log.queue_size", False),
        ("metrics.port", False),
        ("mqtt.host", False),
        ("display.enabled", False),
        ("detection.min_area", False),
        ("tracking.min_hits", False),
        ("calibration.camera", False),
    ],
)
def test_which_fields_change_live(key: str, live: bool) -> None:
    assert is_live(key) is live


def test_differences_and_the_running_configuration_after() -> None:
    old = InspectorConfig.model_validate({"model": {"threshold": 0.79}, "roi": {"x": 10}, "gate": {"port": "sim"}})
    new = InspectorConfig.model_validate(
        {
            "model": {"threshold": 0.7, "path": "other.onnx"},
            "roi": {"x": 20},
            "log": {"retention_days": 7},
            "gate": {"port": None},
        }
    )
    live, restart = differences(old, new)
    assert live == [("roi.x", 10, 20), ("model.threshold", 0.79, 0.7), ("log.retention_days", 30.0, 7.0)]
    assert restart == ["model.path", "gate.port"]
    after = with_live(old, new)
    assert (after.model.threshold, after.roi.x, after.log.retention_days) == (0.7, 20, 7.0)
    assert after.model.path == old.model.path and after.gate.port == "sim"  # needs a restart: the running value
    assert old.model.threshold == 0.79 and old.roi.x == 10  # the running object itself is never changed
    assert differences(after, after) == ([], [])


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def reloader(tmp_path: Path):
    path = _write(tmp_path / "line.yaml", {"model": {"path": str(MODEL), "threshold": 0.79}})
    running = load_config(path)
    roi = [Roi.from_config(running.roi, SIZE)]  # the pipeline's ROI, as the line reads it
    r = Reloader(
        lambda: load_config(path),
        running,
        label=str(path),
        model_threshold=0.5,
        frame_size=lambda: SIZE,
        current_roi=lambda: roi[0],
    )
    r.test_roi = roi
    yield r, path
    r.close()


def test_reloader_validates_and_applies_only_what_changed(reloader) -> None:
    r, path = reloader
    assert r.prepare() is None and r.pending is None  # nothing changed
    _write(path, {"model": {"path": str(MODEL), "threshold": 0.7}, "roi": {"trigger": 0.6}})
    s = r.prepare()
    assert s is r.pending and s.threshold == 0.7
    assert s.changes == ("roi.trigger 0.5 -> 0.6", "model.threshold 0.79 -> 0.7")
    assert s.roi == Roi(0, 0, 320, 120, "right", 0.6)
    assert r.take() is s and r.pending is None and r.take() is None  # taken once
    r.applied(s)
    r.test_roi[0] = s.roi
    assert r.running is s.cfg and r.reloads == 1
    _write(path, {"model": {"path": str(MODEL), "threshold": None}, "roi": {"trigger": 0.6}})
    s = r.prepare()
    assert s.threshold == 0.5 and s.changes == ("model.threshold 0.7 -> none",)  # the model's own threshold


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        ("model:\n  threshold: 1.5\n", ":2: field 'model.threshold'"),
        ("model:\n  threshold: [0.5\n", "malformed YAML"),
        ("roi:\n  x: 400\n", "leaves no usable area in a 320x120 frame"),
        ("model:\n  treshold: 0.5\n", "unknown key 'model.treshold'"),
    ],
)
def test_a_bad_file_is_refused_and_the_running_settings_stay(reloader, text: str, expect: str, caplog) -> None:
    r, path = reloader
    path.write_text(text)
    with caplog.at_level("ERROR", logger="inspector.service.reload"):
        assert r.prepare() is None
    assert r.pending is None and r.refused == 1 and r.running.model.threshold == 0.79
    errors = [rec.getMessage() for rec in caplog.records if rec.levelname == "ERROR"]
    assert len(errors) == 1 and errors[0].startswith("reload refused: ") and expect in errors[0], errors
    assert errors[0].endswith("; keeping the running settings") and "\n" not in errors[0]


def test_a_request_is_prepared_on_the_reload_thread(reloader) -> None:
    """request() (what the SIGHUP handler calls) only sets an event; the reload thread reads the file."""
    r, path = reloader
    _write(path, {"model": {"path": str(MODEL), "threshold": 0.6}})
    r.request()
    assert wait_for(lambda: r.pending is not None, 5), "the reload thread did not prepare the settings"
    assert r.pending.changes == ("model.threshold 0.79 -> 0.6",)


class Parts:
    def __init__(self) -> None:
        self.parts: list[Part] = []

    def on_part(self, part: Part) -> None:
        self.parts.append(part)

    def close(self) -> None:
        pass


def _frame(seq: int, starts: list[int]) -> Frame:
    """A dark belt with 40 px bright squares moving right at 8 px/frame (each from its start frame)."""
    w, h = SIZE
    img = np.full((h, w, 3), 40, np.uint8)
    for start in starts:
        x = -40 + (seq - start) * 8
        if seq >= start and x < w:
            img[40:80, max(0, x) : max(0, x + 40)] = 200
    return Frame(seq, seq * 33_333_333, img, None)


def test_an_roi_change_between_frames_rejects_the_parts_in_flight() -> None:
    """The real pipeline: a part tracked short of the trigger line when the ROI changes (trigger 0.5 -> 0.8) gets
    a no-verdict with the reason; the next part is judged once, at the new trigger line; part ids go on."""
    cfg = InspectorConfig.model_validate(
        {
            "model": {"path": str(MODEL)},
            "detection": {"method": "threshold", "threshold": 100, "min_area": 800},
        }
    )
    sink = Parts()
    with load_engine(MODEL) as engine:
        p = Pipeline(cfg, engine, [sink])
        for seq in range(12):  # the part's leading edge at 56 px: tracked, short of the trigger (160 px)
            p.process(_frame(seq, [0, 30]))
        assert sink.parts == [] and p.tracker.tracks
        new = cfg.model_copy(update={"roi": cfg.roi.model_copy(update={"trigger": 0.8})})
        lost = p.set_live(new, 0.5, Roi.from_config(new.roi, p.frame_size))
        assert [x.part_id for x in lost] == [1] and lost[0].verdict is Verdict.NO_VERDICT
        assert lost[0].reason == "ROI changed by a configuration reload; part in flight rejected"
        assert sink.parts == lost  # handed to the sinks (the gate rejects it)
        for seq in range(12, 90):
            p.process(_frame(seq, [0, 30]))
    judged = [x for x in sink.parts if x.verdict is not Verdict.NO_VERDICT]
    assert len(judged) == 2, sink.parts  # part 1 seen again after the swap: a new track, judged once; then part 2
    assert [x.part_id for x in sink.parts] == [1, 2, 3]
    for part in judged:
        x, _, w, _ = part.bbox
        assert x + w / 2 >= 0.8 * SIZE[0] - 8, part.bbox  # judged at the new trigger line (8 px/frame)
    assert p.threshold == 0.5 and p.cfg is new


def test_roi_file_is_read_again_and_a_wrong_one_refused(tmp_path: Path, caplog) -> None:
    """roi.file unchanged in the configuration but the artefact re-made (`inspector calibrate roi`): the reload
    reads it again and names the change; one made for another frame size is refused."""
    from calibration.artefact import save_artefact
    from calibration.roi import RoiCalibration

    art = tmp_path / "roi.yaml"
    save_artefact(
        RoiCalibration(frame_size=SIZE, x=0, y=10, width=320, height=100, direction="right", trigger=0.5), art
    )
    path = _write(tmp_path / "line.yaml", {"model": {"path": str(MODEL)}, "roi": {"file": str(art)}})
    running = load_config(path)
    roi = Roi.from_config(running.roi, SIZE)
    r = Reloader(
        lambda: load_config(path),
        running,
        label=str(path),
        model_threshold=0.5,
        frame_size=lambda: SIZE,
        current_roi=lambda: roi,
    )
    try:
        save_artefact(
            RoiCalibration(frame_size=SIZE, x=0, y=20, width=320, height=80, direction="right", trigger=0.6), art
        )
        s = r.prepare()
        assert s.roi == Roi(0, 20, 320, 80, "right", 0.6)
        assert s.changes == (f"roi from {art}: 0,10 320x100 right trigger 0.5 -> 0,20 320x80 right trigger 0.6",)
        r.take()
        save_artefact(
            RoiCalibration(frame_size=(640, 480), x=0, y=0, width=640, height=480, direction="right", trigger=0.5), art
        )
        with caplog.at_level("ERROR", logger="inspector.service.reload"):
            assert r.prepare() is None
        errors = [rec.getMessage() for rec in caplog.records if rec.levelname == "ERROR"]
        assert len(errors) == 1 and "was made for 640x480 frames but the source gives 320x120" in errors[0], errors
    finally:
        r.close()

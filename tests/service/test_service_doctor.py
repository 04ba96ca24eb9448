"""`inspector doctor`: on this machine (rows whose outcome the test works out independently) and with planted
faults (a missing model, a sidecar that does not match, serial ports that cannot be opened, a missing element)."""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from inspector.service import doctor, v4l2
from inspector.service.doctor import FAIL, PASS, WARN, Check, failed_needed, run_checks

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "casting_seedcnn.onnx"


def rows_by_name(rows: list[Check]) -> dict[str, Check]:
    return {r.name: r for r in rows}


def write_config(d: Path, model: Path = MODEL, source: str = "demo", port: str | None = "sim") -> Path:
    cfg = d / "line.yaml"
    gate = f"gate:\n  port: {port}\n" if port else ""
    cfg.write_text(f'source:\n  uri: "{source}"\nmodel:\n  path: {model}\n{gate}log:\n  db: {d}/log/defects.sqlite\n')
    return cfg


def test_this_machine_without_config() -> None:
    import cv2

    r = rows_by_name(run_checks())
    assert r["python"].state == PASS and r["python"].needed
    assert r["packages"].state == PASS and "onnxruntime" in r["packages"].detail
    build = cv2.getBuildInformation()
    assert r["opencv GStreamer"].state == (PASS if doctor.opencv_build(build)["gstreamer"] == "YES" else WARN)
    assert r["onnxruntime"].state == PASS and "CPUExecutionProvider" in r["onnxruntime"].detail
    trt_here = importlib.util.find_spec("tensorrt") is not None
    assert r["tensorrt"].state == (PASS if trt_here else WARN) and not r["tensorrt"].needed
    if shutil.which("nvidia-smi") is None and importlib.util.find_spec("pycuda") is None:
        assert r["CUDA device"].state in (PASS, WARN)  # torch may still see one
    nodes = sorted(glob.glob("/dev/video*"))
    if nodes:
        assert {f"camera {n}" for n in nodes} <= set(r)
    else:
        assert r["cameras"].state == WARN and not r["cameras"].needed  # nothing configured needs one
    assert r["gst-launch-1.0"].state == (PASS if shutil.which("gst-launch-1.0") else WARN)
    assert r["free disk"].state in (PASS, WARN) and "GB free" in r["free disk"].detail
    assert r["clock sync"].state in (PASS, WARN)
    assert failed_needed(r.values()) == []


def test_good_config_passes_model_checks(tmp_path: Path) -> None:
    rows = run_checks(str(write_config(tmp_path)))
    r = rows_by_name(rows)
    assert r["config"].state == PASS
    assert r["model file"].state == PASS and r["model sidecar"].state == PASS
    assert r["model checksum"].state == PASS and "matches" in r["model checksum"].detail
    assert r["onnxruntime"].needed and not r["tensorrt"].needed
    assert r["gate port"].state == PASS and "simulated" in r["gate port"].detail
    assert failed_needed(rows) == []


def test_missing_model(tmp_path: Path) -> None:
    rows = run_checks(str(write_config(tmp_path, model=tmp_path / "gone.onnx")))
    r = rows_by_name(rows)
    assert r["model file"].state == FAIL and "not found" in r["model file"].detail
    assert [c.name for c in failed_needed(rows)] == ["model file"]


@pytest.mark.parametrize("fault", ["model bytes", "sidecar checksum", "no sidecar"])
def test_sidecar_that_does_not_match(tmp_path: Path, fault: str) -> None:
    model = tmp_path / MODEL.name
    shutil.copy(MODEL, model)
    side = tmp_path / (MODEL.name + ".json")
    shutil.copy(MODEL.with_name(MODEL.name + ".json"), side)
    if fault == "model bytes":
        with open(model, "r+b") as f:  # one byte changed: what a truncated or corrupted copy looks like
            f.seek(1000)
            b = f.read(1)
            f.seek(1000)
            f.write(bytes([b[0] ^ 0xFF]))
    elif fault == "sidecar checksum":
        data = json.loads(side.read_text())
        data["extra"]["onnx_sha256"] = "0" * 64
        side.write_text(json.dumps(data))
    else:
        side.unlink()
    rows = run_checks(str(write_config(tmp_path, model=model)))
    r = rows_by_name(rows)
    if fault == "no sidecar":
        assert r["model sidecar"].state == FAIL and "not found" in r["model sidecar"].detail
        assert [c.name for c in failed_needed(rows)] == ["model sidecar"]
    else:
        assert r["model checksum"].state == FAIL and "differs" in r["model checksum"].detail
        assert [c.name for c in failed_needed(rows)] == ["model checksum"]


def test_engine_with_a_sidecar_checksum_that_does_not_match(tmp_path: Path) -> None:
    engine = tmp_path / "m.trt10.3.0.orin.fp16.b8.engine"
    engine.write_bytes(b"not really an engine" * 100)
    data = json.loads(MODEL.with_name(MODEL.name + ".json").read_text())
    data["extra"] = {
        "tensorrt": {
            "tensorrt_version": "10.3.0",
            "gpu": "Orin (nvgpu)",
            "precision": "fp16",
            "max_batch": 8,
            "engine_sha256": "f" * 64,
        }
    }
    (tmp_path / (engine.name + ".json")).write_text(json.dumps(data))
    rows = run_checks(str(write_config(tmp_path, model=engine)))
    r = rows_by_name(rows)
    assert r["model checksum"].state == FAIL
    assert r["tensorrt"].needed and r["CUDA device"].needed
    if importlib.util.find_spec("tensorrt") is None:
        assert r["tensorrt"].state == FAIL
        assert r["engine target"].state == FAIL and "TensorRT is not installed" in r["engine target"].detail
        assert "inspector build-engine" in r["engine target"].fix


def test_serial_port_faults(tmp_path: Path) -> None:
    r = rows_by_name(run_checks(str(write_config(tmp_path, port="/dev/inspector-gate-missing"))))
    assert r["gate port"].state == FAIL and "no such device" in r["gate port"].detail and r["gate port"].needed
    r = rows_by_name(run_checks(str(write_config(tmp_path, port="/dev/null"))))
    assert r["gate port"].state == FAIL and "not a serial port" in r["gate port"].detail
    master, slave = os.openpty()
    try:
        r = rows_by_name(run_checks(str(write_config(tmp_path, port=os.ttyname(slave)))))
        assert r["gate port"].state == PASS, r["gate port"]
    finally:
        os.close(master)
        os.close(slave)


def _unprivileged_prefix() -> tuple[list[str], bool] | None:
    """A command prefix that runs Python without the power to ignore file modes, and whether it is another user.

    As an unprivileged user (runuser) where that user can run this Python; else as root without
    CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH (setpriv), which a mode-000 file refuses just the same.
    """
    runuser, setpriv = shutil.which("runuser"), shutil.which("setpriv")
    for user in ("nobody", "daemon"):
        if runuser is None:
            break
        probe = [runuser, "-u", user, "--"]
        if subprocess.run([*probe, sys.executable, "-c", "pass"], capture_output=True, timeout=60).returncode == 0:
            return probe, True
    if setpriv is not None:
        probe = [setpriv, "--bounding-set", "-dac_override,-dac_read_search", "--"]
        if subprocess.run([*probe, sys.executable, "-c", "pass"], capture_output=True, timeout=60).returncode == 0:
            return probe, False
    return None


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run doctor as another user")
def test_unopenable_serial_port_as_an_unprivileged_user() -> None:
    """A pty slave with mode 000: root could still open it, so doctor runs without that privilege."""
    how = _unprivileged_prefix()
    if how is None:
        pytest.skip("neither runuser nor setpriv can start Python unprivileged here")
    prefix, other_user = how
    d = Path(tempfile.mkdtemp(prefix="doctor-"))
    master, slave = os.openpty()
    try:
        os.chmod(d, 0o755)
        tty = os.ttyname(slave)
        os.chmod(tty, 0)
        cfg = write_config(d, port=tty)
        cfg.chmod(0o644)
        r = subprocess.run(
            [*prefix, sys.executable, "-m", "inspector", "doctor", "--config", str(cfg), "--json"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=d,
        )
        assert r.stdout, r.stderr
        rows = rows_by_name([Check(**x) for x in json.loads(r.stdout)])
        assert r.returncode == 1, r.stderr
        assert rows["gate port"].state == FAIL and "permission denied" in rows["gate port"].detail
        assert "usermod -aG dialout" in rows["gate port"].fix
        want = {"gate port"}
        if other_user:  # the log folder belongs to root: another user cannot write it either
            assert "not writable" in rows["log folder"].detail
            want.add("log folder")
        assert {c.name for c in failed_needed(rows.values())} == want
    finally:
        os.close(master)
        os.close(slave)
        shutil.rmtree(d)


def test_gst_pipeline_elements(tmp_path: Path) -> None:
    if shutil.which("gst-inspect-1.0") is None:
        pytest.skip("GStreamer tools not installed (apt-get install gstreamer1.0-tools)")
    assert doctor.pipeline_elements(
        "nvarguscamerasrc sensor-id=0 ! video/x-raw(memory:NVMM),width=1280,height=720 ! nvvidconv ! "
        "video/x-raw,format=BGRx"
    ) == ["nvarguscamerasrc", "nvvidconv"]
    good = rows_by_name(run_checks(str(write_config(tmp_path, source="gst:videotestsrc ! videoconvert"))))
    assert good["gst elements"].state == PASS and "videotestsrc" in good["gst elements"].detail
    bad = run_checks(str(write_config(tmp_path, source="gst:videotestsrc ! nosuchelement42 ! videoconvert")))
    r = rows_by_name(bad)
    assert r["gst elements"].state == FAIL and r["gst elements"].detail == "missing: nosuchelement42"
    assert [c.name for c in failed_needed(bad)] == ["gst elements"]
    jetson = rows_by_name(run_checks(str(write_config(tmp_path, source="gst:nvarguscamerasrc ! nvvidconv"))))
    if jetson["gst elements"].state == FAIL:
        assert "JetPack" in jetson["gst elements"].fix


def test_configured_camera_missing(tmp_path: Path) -> None:
    rows = run_checks(str(write_config(tmp_path, source="7")))
    names = [c.name for c in failed_needed(rows)]
    assert names == (["cameras"] if not glob.glob("/dev/video*") else ["camera /dev/video7"])


def test_bad_config_is_a_failed_row(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("model:\n  treshold: 0.5\n")
    rows = run_checks(str(cfg))
    assert rows[0].name == "config" and rows[0].state == FAIL and "unknown key 'model.treshold'" in rows[0].detail
    assert "model file" not in rows_by_name(rows)  # nothing is judged against a bad file


class FakeV4L2:
    """What a UVC camera's driver answers (pure logic: the ioctl structs are packed and parsed as the kernel's)."""

    FORMATS = [(0x56595559, [(640, 480), (1280, 720)]), (0x47504A4D, [(1920, 1080)])]  # YUYV, MJPG

    def __call__(self, fd: int, request: int, buf: bytes) -> bytes:
        assert len(buf) == (request >> 16) & 0x3FFF, "struct size differs from the one encoded in the request"
        if request == v4l2.VIDIOC_QUERYCAP:
            return v4l2._CAP.pack(b"uvcvideo", b"USB Camera", b"usb-1", 0, 0x84A00001, 0x04200001)
        if request == v4l2.VIDIOC_ENUM_FMT:
            index, typ, *_ = v4l2._FMTDESC.unpack(buf)
            if index >= len(self.FORMATS):
                raise OSError(22, "Invalid argument")
            return v4l2._FMTDESC.pack(index, typ, 0, b"x", self.FORMATS[index][0], 0)
        if request == v4l2.VIDIOC_ENUM_FRAMESIZES:
            index, pixfmt, *_ = v4l2._FRMSIZE.unpack(buf)
            sizes = dict(self.FORMATS)[pixfmt]
            if index >= len(sizes):
                raise OSError(22, "Invalid argument")
            return v4l2._FRMSIZE.pack(
                index,
                pixfmt,
                1,
                bytes(
                    bytearray(sizes[index][0].to_bytes(4, "little") + sizes[index][1].to_bytes(4, "little")) + bytes(16)
                ),
            )
        raise AssertionError(hex(request))


def test_v4l2_format_listing() -> None:
    card, formats = v4l2.v4l2_formats(-1, ioctl=FakeV4L2())
    assert card == "USB Camera"
    assert formats == {"YUYV": ["640x480", "1280x720"], "MJPG": ["1920x1080"]}


def test_cli_table_and_exit_status(tmp_path: Path) -> None:
    ok = subprocess.run(
        [sys.executable, "-m", "inspector", "doctor", "--config", str(write_config(tmp_path))],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "COLUMNS": "160"},
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "model checksum" in ok.stdout and "nothing needed is missing" in ok.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "inspector", "doctor", "--config", str(tmp_path / "none.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "COLUMNS": "160"},
    )
    assert bad.returncode == 1 and "needed check(s) failed: config" in bad.stdout and "Traceback" not in bad.stderr


def test_a_system_opencv_without_a_pip_distribution_counts(monkeypatch) -> None:
    """On a Jetson cv2 comes from apt (no opencv-python distribution); the packages row must still pass."""
    real = doctor._version
    monkeypatch.setattr(doctor, "_version", lambda dist: None if dist.startswith("opencv") else real(dist))
    r = rows_by_name(doctor.check_python())
    assert r["packages"].state == PASS and "no pip distribution: a system OpenCV" in r["packages"].detail
    monkeypatch.setattr(doctor, "_version", lambda dist: None if dist == "pyserial" else real(dist))
    r = rows_by_name(doctor.check_python())
    assert r["packages"].state == FAIL and r["packages"].fix == "pip install pyserial"

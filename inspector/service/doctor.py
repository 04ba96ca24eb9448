"""`inspector doctor`: what an installer needs to know before the line runs, as rows of pass / warn / fail.

Each check returns :class:`Check` rows with the fix for anything not passing. A row is ``needed`` when the
given configuration depends on it (the model it names, the camera it opens, the gate's serial port, the
GStreamer elements of its pipeline...): a needed failure makes the command exit 1. Without a configuration
only the runtime itself (Python and its packages) is needed.

Only read-only probes: files are opened, never written; the camera and the serial port are opened and closed
without configuring them; external tools (nvidia-smi, gst-inspect-1.0, timedatectl, chronyc) run with a
timeout, without a shell.
"""

from __future__ import annotations

import glob
import importlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ground.errors import UserError
from inspector.service.v4l2 import v4l2_formats

if TYPE_CHECKING:
    from inspector.config import InspectorConfig

log = logging.getLogger(__name__)

PASS, WARN, FAIL = "pass", "warn", "fail"
TOOL_TIMEOUT_S = 10.0
RUNTIME_PACKAGES = (
    "numpy",
    "opencv-python",
    "onnxruntime",
    "pyserial",
    "pydantic",
    "pyyaml",
    "rich",
    "prometheus_client",
)
# GStreamer elements -> where they come from, for the fix column.
GST_PACKAGES = {
    "nvarguscamerasrc": "JetPack (nvidia-l4t-gstreamer)",
    "nvvidconv": "JetPack (nvidia-l4t-gstreamer)",
    "nvv4l2decoder": "JetPack (nvidia-l4t-gstreamer)",
    "v4l2src": "gstreamer1.0-plugins-good",
    "jpegdec": "gstreamer1.0-plugins-good",
    "rtspsrc": "gstreamer1.0-plugins-good",
    "videoconvert": "gstreamer1.0-plugins-base",
    "y4menc": "gstreamer1.0-plugins-good",
    "avdec_h264": "gstreamer1.0-libav",
    "fdsink": "gstreamer1.0-tools (core elements)",
}


@dataclass
class Check:
    name: str
    state: str  # pass | warn | fail
    detail: str
    fix: str = ""
    needed: bool = False  # the configuration depends on it: a failure means exit 1

    def __post_init__(self) -> None:
        if self.state not in (PASS, WARN, FAIL):
            raise ValueError(f"check state must be pass, warn or fail, got {self.state!r}")


# --- helpers -----------------------------------------------------------------------------------------------
def _tool(argv: list[str], timeout_s: float = TOOL_TIMEOUT_S) -> tuple[int, str] | None:
    """(exit status, stdout+stderr) of a tool, or None when it is not installed or did not finish."""
    exe = shutil.which(argv[0])
    if exe is None:
        return None
    try:
        r = subprocess.run([exe, *argv[1:]], capture_output=True, text=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.debug("%s: %s", argv[0], exc)
        return None
    return r.returncode, (r.stdout + r.stderr).strip()


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


# --- Python and packages -----------------------------------------------------------------------------------
def check_python() -> list[Check]:
    v = sys.version_info
    rows = [
        Check(
            "python",
            PASS if v >= (3, 10) else FAIL,
            f"{sys.version.split()[0]} ({sys.executable})",
            "" if v >= (3, 10) else "install Python 3.10 or newer",
            needed=True,
        )
    ]
    versions, missing = [], []
    for dist in RUNTIME_PACKAGES:
        ver = _version(dist)
        if ver is not None:
            versions.append(f"{dist} {ver}")
        elif dist == "opencv-python" and (alt := _other_opencv()):
            versions.append(alt)  # a contrib/headless wheel or the system OpenCV (Jetson) counts too
        else:
            missing.append(dist)
    inspector_v = _version("inspector") or "not installed (run from a checkout?)"
    rows.append(
        Check(
            "packages",
            FAIL if missing else PASS,
            (f"missing: {', '.join(missing)}; " if missing else "")
            + f"inspector {inspector_v}; "
            + ", ".join(versions),
            f"pip install {' '.join(missing)}" if missing else "",
            needed=True,
        )
    )
    torch_v = _version("torch")
    rows.append(
        Check(
            "torch",
            PASS,
            f"{torch_v} (training and .pt models only)"
            if torch_v
            else "not installed: fine, the line runs .onnx and .engine models without it",
        )
    )
    return rows


def _other_opencv() -> str | None:
    for alt in ("opencv-contrib-python", "opencv-python-headless", "opencv-contrib-python-headless"):
        if _version(alt):
            return f"{alt} {_version(alt)}"
    spec = importlib.util.find_spec("cv2")
    return f"cv2 from {spec.origin} (no pip distribution: a system OpenCV)" if spec is not None else None


# --- OpenCV ------------------------------------------------------------------------------------------------
def opencv_build(info: str) -> dict[str, str]:
    """From cv2.getBuildInformation(): the GUI backend and whether GStreamer and FFmpeg are built in."""

    def find(pattern: str) -> str:
        m = re.search(pattern, info, re.MULTILINE)
        return m.group(1).strip() if m else "?"

    return {
        "gui": find(r"^\s*GUI:\s*(.+)$"),
        "gstreamer": find(r"^\s*GStreamer:\s*(\w+)"),
        "ffmpeg": find(r"^\s*FFMPEG:\s*(\w+)"),
    }


def check_opencv(cfg: InspectorConfig | None) -> list[Check]:
    try:
        import cv2
    except ImportError as exc:
        return [
            Check(
                "opencv",
                FAIL,
                f"cv2 does not import ({exc})",
                "pip install opencv-python (or use the system OpenCV: docs/jetson.md)",
                needed=True,
            )
        ]
    b = opencv_build(cv2.getBuildInformation())
    display_on = cfg is not None and cfg.display.enabled == "on"
    gui_ok = b["gui"] not in ("NONE", "?")
    src = cfg.source.uri if cfg is not None else "demo"
    wants_ffmpeg = cfg is not None and (src.startswith("rtsp://") or ("://" not in src and Path(src).is_file()))
    gst_yes = b["gstreamer"] == "YES"
    return [
        Check("opencv", PASS, f"{cv2.__version__} ({cv2.__file__})"),
        Check(
            "opencv GUI",
            PASS if gui_ok else (FAIL if display_on else WARN),
            f"GUI: {b['gui']}",
            "" if gui_ok else "no overlay window: run with --no-display, or install an OpenCV with GTK/Qt",
            needed=display_on,
        ),
        Check(
            "opencv GStreamer",
            PASS if gst_yes else WARN,
            f"GStreamer: {b['gstreamer']}",
            ""
            if gst_yes
            else "gst: pipelines run through gst-launch-1.0 instead (a pipe); for in-process "
            "capture use an OpenCV built with GStreamer (on a Jetson the system one: docs/jetson.md)",
        ),
        Check(
            "opencv FFmpeg",
            PASS if b["ffmpeg"] == "YES" else (FAIL if wants_ffmpeg else WARN),
            f"FFMPEG: {b['ffmpeg']}",
            ""
            if b["ffmpeg"] == "YES"
            else "video files and rtsp:// need an OpenCV with FFmpeg (pip's opencv-python has it)",
            needed=wants_ffmpeg,
        ),
    ]


# --- inference runtimes and the GPU ------------------------------------------------------------------------
def check_onnxruntime(cfg: InspectorConfig | None) -> list[Check]:
    needed = cfg is not None and Path(cfg.model.path).suffix.lower() == ".onnx"
    try:
        import onnxruntime as ort
    except ImportError as exc:
        return [
            Check(
                "onnxruntime",
                FAIL if needed else WARN,
                f"does not import ({exc})",
                "pip install onnxruntime (onnxruntime-gpu on a CUDA machine)",
                needed=needed,
            )
        ]
    providers = ort.get_available_providers()
    gpu = [p for p in providers if p in ("CUDAExecutionProvider", "TensorrtExecutionProvider")]
    return [
        Check(
            "onnxruntime",
            PASS,
            f"{ort.__version__}; providers: {', '.join(providers)}",
            "" if gpu else "CPU only; for GPU inference install onnxruntime-gpu or use a TensorRT .engine",
            needed=needed,
        )
    ]


def check_tensorrt(cfg: InspectorConfig | None) -> list[Check]:
    needed = cfg is not None and Path(cfg.model.path).suffix.lower() == ".engine"
    rows = []
    for mod, label, fix in (
        ("tensorrt", "tensorrt", "comes with JetPack / the NVIDIA TensorRT wheels (pip install 'inspector[jetson]')"),
        ("pycuda", "pycuda", "pip install 'inspector[jetson]' (builds against the CUDA toolkit)"),
    ):
        try:
            m = importlib.import_module(mod)
        except ImportError:
            rows.append(
                Check(
                    label,
                    FAIL if needed else WARN,
                    "not installed",
                    fix + ("" if needed else "; only needed for .engine models"),
                    needed=needed,
                )
            )
            continue
        ver = getattr(m, "__version__", None) or getattr(m, "VERSION_TEXT", "?")
        rows.append(Check(label, PASS, str(ver), needed=needed))
    return rows


def gpu_names() -> tuple[list[str], str]:
    """CUDA GPUs by name and how they were found: nvidia-smi, else pycuda, else torch (only if installed)."""
    r = _tool(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"])
    if r is not None and r[0] == 0 and r[1]:
        return [line.split(",")[0].strip() for line in r[1].splitlines() if line.strip()], f"nvidia-smi: {r[1]}"
    if importlib.util.find_spec("pycuda") is not None:
        try:
            import pycuda.driver as cuda

            cuda.init()
            names = [str(cuda.Device(i).name()) for i in range(cuda.Device.count())]
            if names:
                return names, "pycuda"
        except Exception as exc:  # noqa: BLE001 - pycuda raises its own types
            log.debug("pycuda: %s", exc)
    if importlib.util.find_spec("torch") is not None:
        try:
            import torch

            if torch.cuda.is_available():
                return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())], "torch"
        except Exception as exc:  # noqa: BLE001
            log.debug("torch: %s", exc)
    return [], "no nvidia-smi answer, pycuda and torch see no CUDA device"


def check_gpu(cfg: InspectorConfig | None) -> list[Check]:
    needed = cfg is not None and Path(cfg.model.path).suffix.lower() == ".engine"
    rows = []
    jetson = _jetson_model()
    if jetson:
        rows.append(Check("platform", PASS, jetson))
    names, how = gpu_names()
    if names:
        rows.append(Check("CUDA device", PASS, f"{', '.join(names)} ({how})", needed=needed))
    else:
        rows.append(
            Check(
                "CUDA device",
                FAIL if needed else WARN,
                how,
                "a .engine needs an NVIDIA GPU and driver; run the .onnx on CPU instead"
                if needed
                else "none: inference runs on the CPU (fine for the .onnx models)",
                needed=needed,
            )
        )
    return rows


def _jetson_model() -> str | None:
    model, release = Path("/proc/device-tree/model"), Path("/etc/nv_tegra_release")
    parts = []
    if model.is_file():
        parts.append(model.read_bytes().rstrip(b"\0").decode(errors="replace"))
    if release.is_file():
        parts.append(release.read_text().splitlines()[0][:60])
    return "; ".join(parts) if parts and (release.is_file() or "jetson" in parts[0].lower()) else None


# --- the model ---------------------------------------------------------------------------------------------
def check_model(cfg: InspectorConfig | None) -> list[Check]:
    """The model file, its sidecar, the checksum recorded at export/build time, and an engine's target."""
    from engines.meta import read_sidecar, sidecar_path
    from engines.tensorrt_backend import build_info
    from ground.files import file_sha256

    path = Path(cfg.model.path)
    if not path.is_file():
        return [
            Check(
                "model file",
                FAIL,
                f"{path}: not found",
                "fix model.path in the configuration, or copy the model there",
                needed=True,
            )
        ]
    rows = [Check("model file", PASS, f"{path} ({path.stat().st_size / 1e6:.1f} MB)", needed=True)]
    if path.suffix.lower() == ".pt":
        rows.append(
            Check(
                "model sidecar",
                WARN,
                "a .pt checkpoint carries its metadata inside and needs torch",
                "export it: inspector build-engine --checkpoint MODEL.pt --out DIR",
                needed=True,
            )
        )
        return rows
    try:
        meta = read_sidecar(path)
    except UserError as exc:
        rows.append(Check("model sidecar", FAIL, str(exc), "re-export the model with its sidecar", needed=True))
        return rows
    rows.append(
        Check(
            "model sidecar",
            PASS,
            f"{sidecar_path(path).name}: {meta.arch}, {meta.input_size} px, classes {', '.join(meta.classes)}",
            needed=True,
        )
    )
    extra = meta.extra or {}
    if path.suffix.lower() == ".engine":
        info = build_info(path, extra)
        want = info.get("engine_sha256")
    else:
        info, want = {}, extra.get("onnx_sha256")
    if not want:
        rows.append(
            Check(
                "model checksum",
                WARN,
                "the sidecar records no checksum for this file",
                "re-export or rebuild to record one",
                needed=True,
            )
        )
    else:
        got = file_sha256(path)
        ok = got == want
        rows.append(
            Check(
                "model checksum",
                PASS if ok else FAIL,
                f"sha256 {got[:12]}... {'matches' if ok else 'differs from'} the sidecar's {want[:12]}...",
                ""
                if ok
                else "the file was replaced or corrupted after export: copy it again with its "
                "sidecar, or re-export / rebuild it",
                needed=True,
            )
        )
    if path.suffix.lower() == ".engine":
        rows.append(_engine_target(path, info))
    return rows


def _engine_target(path: Path, info: dict) -> Check:
    from engines.trt_common import check_compatible, rebuild_command

    built = f"built with TensorRT {info.get('tensorrt_version', '?')} on {info.get('gpu', '?')}"
    try:
        import tensorrt as trt
    except ImportError:
        return Check(
            "engine target",
            FAIL,
            f"{built}; TensorRT is not installed here",
            f"install TensorRT, or run the .onnx; to rebuild: {rebuild_command(info, path)}",
            needed=True,
        )
    names, _ = gpu_names()
    if not names:
        return Check(
            "engine target", FAIL, f"{built}; no CUDA device here", "run the .onnx on this machine", needed=True
        )
    try:
        check_compatible(path, info, trt.__version__, names[0])
    except UserError as exc:
        return Check("engine target", FAIL, str(exc), rebuild_command(info, path), needed=True)
    return Check("engine target", PASS, f"{built}; this machine: TensorRT {trt.__version__}, {names[0]}", needed=True)


# --- cameras -----------------------------------------------------------------------------------------------
def _camera_needed(cfg: InspectorConfig | None) -> str | None:
    """The /dev/video* node the configured source opens, if it opens one."""
    if cfg is None:
        return None
    uri = cfg.source.uri.strip()
    if uri.isdigit():
        return f"/dev/video{int(uri)}"
    if uri.startswith("gst:") and "v4l2src" in uri:
        m = re.search(r"v4l2src\b[^!]*?\bdevice=(\S+)", uri)
        return m.group(1) if m else "/dev/video0"
    return None


def check_cameras(cfg: InspectorConfig | None, devices: Iterable[str] | None = None) -> list[Check]:
    want = _camera_needed(cfg)
    nodes = sorted(devices if devices is not None else glob.glob("/dev/video*"), key=_natural)
    rows = []
    if not nodes:
        rows.append(
            Check(
                "cameras",
                FAIL if want else WARN,
                "no /dev/video* device",
                "plug in the camera; check `dmesg` for it (CSI cameras on a Jetson use nvarguscamerasrc, "
                "not /dev/video*)",
                needed=bool(want),
            )
        )
    for node in nodes:
        rows.append(_camera_row(node, cfg, needed=node == want))
    if want and want not in nodes and nodes:
        rows.append(
            Check(
                f"camera {want}",
                FAIL,
                "the configured camera is not there",
                f"plug it in, or set source.uri to one of {', '.join(nodes)}",
                needed=True,
            )
        )
    return rows


def _camera_row(node: str, cfg, needed: bool) -> Check:
    try:
        fd = os.open(node, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except PermissionError:
        return Check(
            f"camera {node}",
            FAIL if needed else WARN,
            "permission denied",
            f"add the user to group video: sudo usermod -aG video {_user()} (then log in again)",
            needed=needed,
        )
    except OSError as exc:
        return Check(
            f"camera {node}",
            FAIL if needed else WARN,
            f"cannot open ({exc.strerror})",
            "check `dmesg`; the camera may be in use or unplugged",
            needed=needed,
        )
    try:
        card, formats = v4l2_formats(fd)
    except OSError as exc:
        return Check(f"camera {node}", WARN, f"not a V4L2 device ({exc.strerror})", needed=needed)
    finally:
        os.close(fd)
    if not formats:
        return Check(
            f"camera {node}",
            PASS if not needed else FAIL,
            f"{card}: not a capture node (metadata)",
            "" if not needed else "use the camera's other /dev/video* node",
            needed=needed,
        )
    detail = f"{card}: " + "; ".join(
        f"{f} {', '.join(s[:6])}{' ...' if len(s) > 6 else ''}" for f, s in formats.items()
    )
    state, fix = PASS, ""
    if needed and cfg.source.fourcc and cfg.source.uri.strip().isdigit():
        sizes = formats.get(cfg.source.fourcc)
        size = f"{cfg.source.width}x{cfg.source.height}" if cfg.source.width and cfg.source.height else None
        if sizes is None:
            state, fix = WARN, f"source.fourcc {cfg.source.fourcc} is not offered; use one of {', '.join(formats)}"
        elif size and sizes and ".." not in sizes[0] and size not in sizes:
            state, fix = WARN, f"{size} is not offered in {cfg.source.fourcc}; the camera will pick another size"
    return Check(f"camera {node}", state, detail, fix, needed=needed)


def _natural(s: str) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s))


def _user() -> str:
    import pwd

    return pwd.getpwuid(os.geteuid()).pw_name


# --- the gate's serial port --------------------------------------------------------------------------------
def check_serial(cfg: InspectorConfig | None) -> list[Check]:
    rows = []
    try:
        from serial.tools import list_ports

        ports = [p.device for p in list_ports.comports()]
    except ImportError:
        ports = []
    port = cfg.gate.port if cfg is not None else None
    rows.append(
        Check(
            "serial ports",
            PASS if ports else WARN,
            ", ".join(ports) or "none found",
            "" if ports else "plug in the gate controller's USB serial adapter (if there is one)",
        )
    )
    if not port:
        if cfg is not None:
            rows.append(
                Check(
                    "gate port",
                    WARN,
                    "gate.port is not set: no reject gate is driven",
                    "set gate.port (e.g. /dev/inspector-gate, see docs/jetson.md for the udev rule)",
                )
            )
        return rows
    if port == "sim" or "://" in port:
        rows.append(Check("gate port", PASS, f"{port}: simulated / URL port, nothing to open here", needed=True))
        return rows
    rows.append(serial_open_check(port))
    return rows


def serial_open_check(port: str) -> Check:
    """Open the port the way pyserial does (read-write, no controlling tty) and close it again."""
    path = Path(port)
    if not path.exists():
        return Check(
            "gate port",
            FAIL,
            f"{port}: no such device",
            "plug in the adapter; with the udev rule it appears as /dev/inspector-gate "
            "(docs/jetson.md); list ports with `python -m serial.tools.list_ports`",
            needed=True,
        )
    try:
        fd = os.open(port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC)
    except PermissionError:
        return Check(
            "gate port",
            FAIL,
            f"{port}: permission denied for user {_user()}",
            f"sudo usermod -aG dialout {_user()} (then log in again); the service gets the group "
            "from SupplementaryGroups=",
            needed=True,
        )
    except OSError as exc:
        return Check(
            "gate port",
            FAIL,
            f"{port}: cannot open ({exc.strerror})",
            "is another program holding it (a terminal, ModemManager)?",
            needed=True,
        )
    try:
        is_tty = os.isatty(fd)
    finally:
        os.close(fd)
    if not is_tty:
        return Check(
            "gate port",
            FAIL,
            f"{port}: opens, but is not a serial port (not a tty)",
            "point gate.port at the adapter's tty",
            needed=True,
        )
    return Check("gate port", PASS, f"{port}: opens read-write", needed=True)


# --- GStreamer ---------------------------------------------------------------------------------------------
def pipeline_elements(pipeline: str) -> list[str]:
    """Element names of a gst-launch description: the first word of each '!' segment that is not caps."""
    names = []
    for seg in pipeline.split("!"):
        words = seg.split()
        if not words:
            continue
        first = words[0]
        if "/" in first or "," in first or "=" in first or first.startswith(("(", '"', "'")):
            continue  # caps (video/x-raw,...) or a property
        names.append(first.rstrip(","))
    return list(dict.fromkeys(names))


def check_gstreamer(cfg: InspectorConfig | None, opencv_gst: bool | None = None) -> list[Check]:
    uri = cfg.source.uri if cfg is not None else ""
    uses_gst = uri.startswith("gst:")
    launch = shutil.which("gst-launch-1.0")
    if opencv_gst is None:
        try:
            import cv2

            opencv_gst = opencv_build(cv2.getBuildInformation())["gstreamer"] == "YES"
        except ImportError:
            opencv_gst = False
    needs_launch = uses_gst and not opencv_gst
    from inspector.capture.gst import GST_INSTALL

    rows = [
        Check(
            "gst-launch-1.0",
            PASS if launch else (FAIL if needs_launch else WARN),
            launch or "not installed",
            "" if launch else GST_INSTALL,
            needed=needs_launch,
        )
    ]
    if not uses_gst:
        return rows
    if shutil.which("gst-inspect-1.0") is None:
        rows.append(
            Check(
                "gst elements",
                FAIL,
                "gst-inspect-1.0 not installed: cannot check the pipeline",
                GST_INSTALL,
                needed=True,
            )
        )
        return rows
    from inspector.capture.gst import TAIL

    wanted = pipeline_elements(uri[4:]) + ([] if opencv_gst else pipeline_elements(" ".join(TAIL)))
    missing = []
    for name in dict.fromkeys(wanted):
        r = _tool(["gst-inspect-1.0", "--exists", name])
        if r is None or r[0] != 0:
            missing.append(name)
    if missing:
        where = sorted({GST_PACKAGES.get(m, "the GStreamer plugin package that provides it") for m in missing})
        rows.append(
            Check(
                "gst elements",
                FAIL,
                f"missing: {', '.join(missing)}",
                f"install {'; '.join(where)}; check with gst-inspect-1.0 {missing[0]}",
                needed=True,
            )
        )
    else:
        rows.append(Check("gst elements", PASS, ", ".join(dict.fromkeys(wanted)), needed=True))
    return rows


# --- disk and clock ----------------------------------------------------------------------------------------
def check_disk(cfg: InspectorConfig | None) -> list[Check]:
    db = cfg.log.db if cfg is not None else None
    folder = Path(db).parent if db else Path.cwd()
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free_mb = shutil.disk_usage(probe).free / 1e6
    min_mb = cfg.log.min_free_mb if cfg is not None else 200.0
    needed = bool(db)
    rows = []
    if needed and not os.access(probe, os.W_OK):
        rows.append(
            Check(
                "log folder",
                FAIL,
                f"{folder}: not writable by {_user()}",
                f"create it and give it to the service user: sudo install -d -o {_user()} {folder}",
                needed=True,
            )
        )
    state = PASS if free_mb >= 10 * min_mb else (WARN if free_mb >= min_mb else (FAIL if needed else WARN))
    rows.append(
        Check(
            "free disk",
            state,
            f"{free_mb / 1e3:.1f} GB free at {probe} (images stop below log.min_free_mb {min_mb:g} MB)",
            "" if state == PASS else "free space or lower log.max_size_mb / log.retention_days",
            needed=needed,
        )
    )
    return rows


def check_clock() -> list[Check]:
    r = _tool(["timedatectl", "show", "-p", "NTPSynchronized", "--value"])
    if r is not None and r[0] == 0 and r[1] in ("yes", "no"):
        return [
            Check(
                "clock sync",
                PASS if r[1] == "yes" else WARN,
                f"timedatectl: NTPSynchronized={r[1]}",
                "" if r[1] == "yes" else "enable time sync: sudo timedatectl set-ntp true (or chrony)",
            )
        ]
    r = _tool(["chronyc", "-n", "tracking"])
    if r is not None and r[0] == 0:
        m = re.search(r"Leap status\s*:\s*(.+)", r[1])
        status = m.group(1).strip() if m else "?"
        return [
            Check(
                "clock sync",
                PASS if status == "Normal" else WARN,
                f"chronyc: leap status {status}",
                "" if status == "Normal" else "chrony is not synchronised: check its sources (chronyc sources)",
            )
        ]
    return [
        Check(
            "clock sync",
            WARN,
            "cannot tell: no answer from timedatectl (no systemd running?) or chronyc",
            "install and enable chrony or systemd-timesyncd, so log timestamps match the plant's clocks",
        )
    ]


# --- all together ----------------------------------------------------------------------------------------------
def check_config_file(path: str) -> tuple[object | None, list[Check]]:
    """(validated config, rows); a bad file is one failing row per problem, and None."""
    from ground.yamlconf import all_errors
    from inspector.config import InspectorConfig, load_config

    if not Path(path).is_file():
        return None, [Check("config", FAIL, f"{path}: not found", "give --config an existing YAML file", needed=True)]
    try:
        errors = all_errors(InspectorConfig, path)
    except UserError as exc:
        errors = [str(exc)]
    if errors:
        return None, [
            Check("config", FAIL, e, "fix the file (inspector check-config FILE)", needed=True) for e in errors
        ]
    return load_config(path), [Check("config", PASS, f"{path}: valid", needed=True)]


def run_checks(config: str | None = None) -> list[Check]:
    rows: list[Check] = []
    cfg = None
    if config is not None:
        cfg, cfg_rows = check_config_file(config)
        rows += cfg_rows
    rows += check_python()
    rows += check_opencv(cfg)
    rows += check_onnxruntime(cfg)
    rows += check_tensorrt(cfg)
    rows += check_gpu(cfg)
    if cfg is not None:
        rows += check_model(cfg)
    rows += check_cameras(cfg)
    rows += check_serial(cfg)
    rows += check_gstreamer(cfg)
    rows += check_disk(cfg)
    rows += check_clock()
    return rows


def failed_needed(rows: Iterable[Check]) -> list[Check]:
    return [r for r in rows if r.state == FAIL and r.needed]


def to_json(rows: Iterable[Check]) -> str:
    return json.dumps([asdict(r) for r in rows], indent=1)

"""The systemd units that run a line at boot: one template, ``inspector@.service``, and one drop-in per line.

Several lines on one machine are instances of the template (``inspector@line1.service``,
``inspector@line2.service``). What differs between them (the config, the user, the folders it may write, the
watchdog period) lives in the instance's drop-in, ``inspector@NAME.service.d/inspector.conf``, because
settings such as ``ReadWritePaths=`` and ``User=`` cannot be derived from the instance name. The template holds
what every line shares: ``Type=notify``, the restart policy and the hardening.

Rendering is pure (:func:`plan` -> :class:`UnitPlan`); :func:`install` and :func:`uninstall` write and remove
files, so the CLI's ``--dry-run`` prints exactly what would be written.
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ground.errors import UserError

log = logging.getLogger(__name__)

TEMPLATE = "inspector@.service"
DROPIN = "inspector.conf"
UNIT_DIR = Path("/etc/systemd/system")
GROUPS = ("video", "dialout")  # cameras (and a Jetson's GPU nodes) are group video; USB serial is dialout
HOME_ROOTS = (Path("/home"), Path("/root"), Path("/run/user"))
TMP_ROOTS = (Path("/tmp"), Path("/var/tmp"))
NAME_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")

_TEMPLATE_TEXT = """\
# Written by `inspector service install`. One instance per line: inspector@NAME.service; each instance's own
# settings (config, user, writable folders, watchdog) are in inspector@NAME.service.d/{dropin}.
[Unit]
Description=Inspector line inspection (%i)
# 5 failed starts within 5 minutes (a camera that is gone, a model that does not load): stop retrying and
# stay failed, so the fault shows in `systemctl --failed`; `systemctl reset-failed inspector@%i` re-arms it.
StartLimitIntervalSec=300
StartLimitBurst=5

[Service]
# READY=1 is sent by inspector itself once the model is warmed up and the first frame has arrived.
Type=notify
NotifyAccess=main
ExecStart={exe} run --config ${{INSPECTOR_CONFIG}} --no-display
# WATCHDOG=1 comes only while frames arrive AND inspection progresses; a missed ping is a restart.
WatchdogSec=10
# `systemctl reload` sends SIGHUP: the line re-reads what can change without a restart (threshold, ROI, log
# retention), validating first; a bad file is refused with one error line and the running settings stay.
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure
RestartSec=2
# Loading a TensorRT engine and starting a CSI camera can take a while on a Jetson.
TimeoutStartSec=300
TimeoutStopSec=20
Environment=PYTHONUNBUFFERED=1
CacheDirectory=inspector/%i
Environment=XDG_CACHE_HOME=%C/inspector/%i
Environment=GST_REGISTRY=%C/inspector/%i/gstreamer-registry.bin
StandardOutput=journal
StandardError=journal
SyslogIdentifier=inspector-%i
UMask=0027

# Hardening that still lets it open the camera (/dev/video*, group video), the gate's serial port (group
# dialout) and the GPU: device nodes stay visible (no PrivateDevices=, no DeviceAllow=, no ProtectClock=,
# which would close the device policy), the file system is read-only except the log folders in the drop-in.
NoNewPrivileges=yes
ProtectSystem=strict
PrivateTmp=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectHostname=yes
RestrictSUIDSGID=yes
RestrictNamespaces=yes
RestrictRealtime=yes
LockPersonality=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK

[Install]
WantedBy=multi-user.target
"""


@dataclass
class UnitPlan:
    """What `service install` writes: the shared template and this line's drop-in."""

    name: str
    unit_dir: Path
    template: str
    dropin: str
    config: Path
    user: str
    write_paths: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def unit(self) -> str:
        return f"inspector@{self.name}.service"

    @property
    def template_path(self) -> Path:
        return self.unit_dir / TEMPLATE

    @property
    def dropin_path(self) -> Path:
        return self.unit_dir / f"{self.unit}.d" / DROPIN

    def next_steps(self) -> list[str]:
        return [
            "systemctl daemon-reload",
            f"systemctl enable --now {self.unit}",
            f"journalctl -u {self.unit} -f",
        ]


def default_user() -> str:
    """The person who ran `sudo inspector service install`, else whoever runs it."""
    return os.environ.get("SUDO_USER") or pwd.getpwuid(os.getuid()).pw_name


def inspector_exe() -> Path:
    """The `inspector` script of the environment this runs in (a venv's own, not whichever is first on PATH)."""
    beside = Path(sys.executable).parent / "inspector"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside.absolute()
    found = shutil.which("inspector")
    if found is None:
        raise UserError(
            "cannot find the `inspector` command to put in ExecStart=; install the package (pip install -e .) "
            "into the environment you run this from"
        )
    return Path(found).absolute()


def _esc(path: Path | str) -> str:
    """A path in a unit file: specifiers (%) doubled; spaces make it a quoted word."""
    s = str(path).replace("%", "%%")
    if any(c.isspace() for c in s) or '"' in s:
        raise UserError(f"{path}: a path with spaces or quotes cannot go into a systemd unit here; move or link it")
    return s


def _under(path: Path, roots: tuple[Path, ...]) -> bool:
    return any(path == root or root in path.parents for root in roots)


def _log_dirs(cfg) -> list[Path]:
    dirs = []
    if cfg.log.db:
        dirs.append(Path(cfg.log.db).parent)
        if cfg.log.images_dir:
            dirs.append(Path(cfg.log.images_dir))
    return sorted({d.resolve() for d in dirs})


def _uses_network(cfg) -> bool:
    uri = cfg.source.uri
    return "://" in uri or cfg.mqtt.enabled or (cfg.metrics.enabled and cfg.metrics.host not in ("127.0.0.1", "::1"))


def plan(
    config: str | Path,
    *,
    name: str | None = None,
    user: str | None = None,
    unit_dir: Path = UNIT_DIR,
    watchdog_s: float = 10.0,
    exe: Path | None = None,
) -> UnitPlan:
    """Resolve and check everything the units name, then render them. Bad input: one-line :class:`UserError`."""
    from inspector.config import load_config

    cfg_path = Path(config).expanduser()
    if not cfg_path.is_file():
        raise UserError(f"{cfg_path}: configuration not found; give --config the YAML file this line runs with")
    cfg_path = cfg_path.resolve()
    cfg = load_config(cfg_path)  # a bad file is refused here, not at boot
    name = name or cfg_path.stem
    if not NAME_RE.match(name):
        raise UserError(
            f"service name {name!r}: use letters, digits and _ . : - only (it becomes inspector@NAME.service); "
            "pass --name"
        )
    user = user or default_user()
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        raise UserError(f"user {user!r} does not exist; create it (useradd --system {user}) or pass --user") from None
    if not watchdog_s > 0:
        raise UserError(f"--watchdog-sec must be > 0, got {watchdog_s:g}")
    exe = (exe or inspector_exe()).absolute()
    warnings = []
    if pw.pw_uid == 0:
        warnings.append(
            "the service will run as root; pass --user with an unprivileged account in groups video and dialout"
        )
    groups = [g for g in GROUPS if _group_exists(g)]
    for g in GROUPS:
        if g not in groups:
            warnings.append(f"group {g!r} does not exist here; left out of SupplementaryGroups=")

    write_paths = _log_dirs(cfg)
    read_paths = [exe, cfg_path, Path(cfg.model.path).absolute(), *write_paths]
    if cfg.source.uri.startswith("/"):
        read_paths.append(Path(cfg.source.uri))
    protect_home = "read-only" if any(_under(p, HOME_ROOTS) for p in read_paths) else "yes"

    lines = [f"# inspector@{name}: written by `inspector service install --config {_esc(cfg_path)}`."]
    if _uses_network(cfg):  # a camera stream or broker on the network: start once the network is up
        lines += ["[Unit]", "Wants=network-online.target", "After=network-online.target", ""]
    lines += [
        "[Service]",
        f"User={user}",
        f"Environment=INSPECTOR_CONFIG={_esc(cfg_path)}",
        f"WorkingDirectory={_esc(cfg_path.parent)}",
        f"WatchdogSec={watchdog_s:g}",
        f"ProtectHome={protect_home}",
    ]
    if "nvarguscamerasrc" in cfg.source.uri:
        # libargus reaches nvargus-daemon through the socket /tmp/argus_socket: a private /tmp hides it
        lines += ["# CSI camera: nvarguscamerasrc talks to nvargus-daemon over /tmp/argus_socket", "PrivateTmp=no"]
    elif any(_under(d, TMP_ROOTS) for d in write_paths):
        warnings.append(
            "the log folder is under /tmp: PrivateTmp= would give the service its own empty /tmp, so "
            "it is off for this line; keep logs elsewhere (e.g. /var/lib/inspector)"
        )
        lines.append("PrivateTmp=no")
    if groups:
        lines.append(f"SupplementaryGroups={' '.join(groups)}")
    for d in write_paths:
        lines.append(f"ReadWritePaths={_esc(d)}")
    if cfg.gate.port and cfg.gate.port.startswith("/dev/"):
        lines.append(f"# gate serial port: {_esc(cfg.gate.port)} (opened through group dialout)")
    dropin = "\n".join(lines) + "\n"
    template = _TEMPLATE_TEXT.format(exe=_esc(exe), dropin=DROPIN)
    return UnitPlan(
        name=name,
        unit_dir=Path(unit_dir),
        template=template,
        dropin=dropin,
        config=cfg_path,
        user=user,
        write_paths=write_paths,
        warnings=warnings,
    )


def _group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


def install(p: UnitPlan) -> list[Path]:
    """Write the template (shared; rewritten, it only names the `inspector` binary) and this line's drop-in, and
    create the log folders owned by the service's user. Returns the files written."""
    try:
        p.dropin_path.parent.mkdir(parents=True, exist_ok=True)
        if p.template_path.is_file() and p.template_path.read_text() != p.template:
            log.warning("%s: replacing the existing template (other inspector@ instances use it too)", p.template_path)
        p.template_path.write_text(p.template)
        p.dropin_path.write_text(p.dropin)
    except OSError as exc:
        raise UserError(
            f"cannot write the unit into {p.unit_dir} ({exc.strerror}); run with sudo for "
            "/etc/systemd/system, or give --unit-dir an existing folder you may write"
        ) from None
    pw = pwd.getpwnam(p.user)
    for d in p.write_paths:
        try:
            d.mkdir(parents=True, exist_ok=True)
            if os.getuid() == 0:
                os.chown(d, pw.pw_uid, pw.pw_gid)
        except OSError as exc:
            raise UserError(f"log folder {d}: {exc.strerror}; create it writable for user {p.user}") from None
    return [p.template_path, p.dropin_path]


def uninstall(name: str, unit_dir: Path = UNIT_DIR) -> list[Path]:
    """Remove the instance's drop-in, and the template when no other instance is left. Returns what was removed."""
    if not NAME_RE.match(name):
        raise UserError(f"service name {name!r}: use letters, digits and _ . : - only")
    unit_dir = Path(unit_dir)
    dropin_dir = unit_dir / f"inspector@{name}.service.d"
    if not (dropin_dir / DROPIN).is_file():
        raise UserError(f"inspector@{name}.service is not installed in {unit_dir} (no {dropin_dir / DROPIN})")
    removed = [dropin_dir / DROPIN]
    try:
        (dropin_dir / DROPIN).unlink()
        if not any(dropin_dir.iterdir()):
            dropin_dir.rmdir()
        others = [d for d in unit_dir.glob("inspector@*.service.d") if (d / DROPIN).is_file()]
        if not others and (unit_dir / TEMPLATE).is_file():
            (unit_dir / TEMPLATE).unlink()
            removed.append(unit_dir / TEMPLATE)
    except OSError as exc:
        raise UserError(f"cannot remove the unit from {unit_dir}: {exc.strerror}; run with sudo") from None
    return removed

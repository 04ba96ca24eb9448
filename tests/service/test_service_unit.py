"""`inspector service install|uninstall`: every unit written passes `systemd-analyze verify` (Debian's systemd)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ground.errors import UserError
from inspector.cli import main
from inspector.service.unit import inspector_exe, install, plan, uninstall

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "casting_seedcnn.onnx"


def verify(unit_dir: Path, unit: str) -> subprocess.CompletedProcess:
    """systemd-analyze verify with the unit dir searched first; it needs no running systemd."""
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.skip("systemd-analyze not installed (apt-get install systemd)")
    env = {**os.environ, "SYSTEMD_UNIT_PATH": f"{unit_dir}:", "SYSTEMD_LOG_COLOR": "0"}
    return subprocess.run(
        [exe, "verify", "--man=no", unit],
        capture_output=True,
        text=True,
        env=env,
        cwd=unit_dir,
        timeout=60,
        check=False,
    )


def assert_verifies(unit_dir: Path, unit: str) -> None:
    r = verify(unit_dir, unit)
    out = (r.stdout + r.stderr).strip()
    assert r.returncode == 0 and out == "", f"systemd-analyze verify {unit}: rc {r.returncode}\n{out}"


def write_config(d: Path, name: str = "line1", log_dir: Path | None = None, extra: str = "") -> Path:
    log_dir = log_dir or d / f"{name}-log"
    cfg = d / f"{name}.yaml"
    cfg.write_text(
        f'source:\n  uri: "0"\nmodel:\n  path: {MODEL}\ngate:\n  port: /dev/ttyS0\n'
        f"log:\n  db: {log_dir}/defects.sqlite\n{extra}"
    )
    return cfg


def test_install_writes_units_that_verify(tmp_path: Path) -> None:
    units = tmp_path / "units"
    cfg = write_config(tmp_path)
    p = plan(cfg, unit_dir=units, watchdog_s=8)
    written = install(p)
    assert written == [units / "inspector@.service", units / "inspector@line1.service.d" / "inspector.conf"]
    assert (tmp_path / "line1-log").is_dir()  # created for the service user, as ReadWritePaths= needs it to exist
    assert_verifies(units, "inspector@line1.service")
    t, d = written[0].read_text(), written[1].read_text()
    for line in (
        "Type=notify",
        "NotifyAccess=main",
        "Restart=on-failure",
        "StartLimitIntervalSec=300",
        "StartLimitBurst=5",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
        "StandardOutput=journal",
        "ExecReload=/bin/kill -HUP $MAINPID",
        f"ExecStart={inspector_exe()} run --config ${{INSPECTOR_CONFIG}} --no-display",
    ):
        assert line in t.splitlines(), line
    for line in (
        "WatchdogSec=8",
        f"Environment=INSPECTOR_CONFIG={cfg}",
        f"ReadWritePaths={tmp_path}/line1-log",
        "SupplementaryGroups=video dialout",
        "PrivateTmp=no",
    ):  # the log is under /tmp in this test
        assert line in d.splitlines(), line
    assert Path(inspector_exe()).is_file()


def test_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    """The check above can fail: a wrong key and a missing ExecStart binary are reported."""
    units = tmp_path / "units"
    install(plan(write_config(tmp_path), unit_dir=units))
    t = units / "inspector@.service"
    t.write_text(t.read_text().replace("Type=notify", "Type=notifi"))
    r = verify(units, "inspector@line1.service")
    assert "Failed to parse service type" in r.stdout + r.stderr
    install(plan(write_config(tmp_path), unit_dir=units, exe=tmp_path / "no" / "inspector"))
    r = verify(units, "inspector@line1.service")
    assert r.returncode != 0 and "is not executable" in r.stdout + r.stderr


def test_two_lines_are_two_instances_and_uninstall(tmp_path: Path) -> None:
    units = tmp_path / "units"
    for name in ("line1", "line2"):
        install(plan(write_config(tmp_path, name), unit_dir=units))
        assert_verifies(units, f"inspector@{name}.service")
    assert "line2.yaml" in (units / "inspector@line2.service.d" / "inspector.conf").read_text()
    assert uninstall("line1", units) == [units / "inspector@line1.service.d" / "inspector.conf"]
    assert (units / "inspector@.service").is_file()  # line2 still uses the template
    assert_verifies(units, "inspector@line2.service")
    assert uninstall("line2", units) == [
        units / "inspector@line2.service.d" / "inspector.conf",
        units / "inspector@.service",
    ]
    assert list(units.iterdir()) == []
    with pytest.raises(UserError, match="not installed"):
        uninstall("line2", units)


def test_network_source_and_home_paths(tmp_path: Path) -> None:
    cfg = tmp_path / "cam.yaml"
    cfg.write_text(
        f'source:\n  uri: "rtsp://10.0.0.5/stream"\nmodel:\n  path: {MODEL}\n'
        "log:\n  db: /var/lib/inspector-cam/defects.sqlite\n"
    )
    p = plan(cfg, unit_dir=tmp_path / "units", exe=Path("/home/op/venv/bin/inspector"))
    lines = p.dropin.splitlines()
    assert "After=network-online.target" in lines and "Wants=network-online.target" in lines
    assert "ProtectHome=read-only" in lines  # the venv is under /home: hidden with ProtectHome=yes
    assert "PrivateTmp=no" not in lines and "ReadWritePaths=/var/lib/inspector-cam" in lines
    assert "[Unit]" not in plan(write_config(tmp_path), unit_dir=tmp_path).dropin  # no network: no ordering


def test_jetson_csi_preset_keeps_the_argus_socket_reachable(tmp_path: Path) -> None:
    """configs/jetson_csi.yaml as shipped: nvarguscamerasrc needs the real /tmp (nvargus-daemon's socket)."""
    units = tmp_path / "units"
    p = plan(ROOT / "configs" / "jetson_csi.yaml", unit_dir=units, name="csi")
    assert "PrivateTmp=no" in p.dropin.splitlines() and "argus_socket" in p.dropin
    assert p.write_paths == []  # the preset keeps no defect log: nothing writable
    install(p)
    assert_verifies(units, "inspector@csi.service")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"config": "missing.yaml"}, "configuration not found"),
        ({"name": "line 1"}, "service name 'line 1'"),
        ({"user": "no-such-user-xyz"}, "user 'no-such-user-xyz' does not exist"),
        ({"watchdog_s": 0}, "--watchdog-sec must be > 0"),
    ],
)
def test_bad_input_is_one_line(tmp_path: Path, kwargs: dict, message: str) -> None:
    args = {"config": write_config(tmp_path), "unit_dir": tmp_path / "units", **kwargs}
    if args["config"] == "missing.yaml":
        args["config"] = tmp_path / "missing.yaml"
    with pytest.raises(UserError, match=message) as exc:
        plan(**args)
    assert "\n" not in str(exc.value)
    assert not (tmp_path / "units").exists()


def test_cli_dry_run_prints_and_writes_nothing(tmp_path: Path, capsys) -> None:
    units = tmp_path / "units"
    rc = main(
        [
            "service",
            "install",
            "--config",
            str(write_config(tmp_path)),
            "--unit-dir",
            str(units),
            "--name",
            "belt-a",
            "--dry-run",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0 and not units.exists()
    assert f"# {units}/inspector@.service\n" in out and f"# {units}/inspector@belt-a.service.d/inspector.conf" in out
    assert "Type=notify" in out and "WatchdogSec=10" in out


def test_cli_errors_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  path: [unclosed\n")
    for cfg, want in ((tmp_path / "nope.yaml", "configuration not found"), (bad, "malformed YAML")):
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "inspector",
                "service",
                "install",
                "--config",
                str(cfg),
                "--unit-dir",
                str(tmp_path / "u"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert r.returncode == 1 and want in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_exec_start_is_a_run_the_cli_accepts(tmp_path: Path) -> None:
    """ExecStart's words, with ${INSPECTOR_CONFIG} as systemd expands it, parse with the real `inspector` parser
    as a run of that configuration with no window (so a renamed flag cannot leave the unit starting nothing)."""
    from inspector.cli import build_parser
    from inspector.commands.lineargs import build_config

    cfg = write_config(tmp_path)
    p = plan(cfg, unit_dir=tmp_path / "units")
    exec_start = next(ln for ln in p.template.splitlines() if ln.startswith("ExecStart="))
    exe, *words = exec_start.removeprefix("ExecStart=").split()
    assert exe == str(inspector_exe())
    args = build_parser().parse_args([w.replace("${INSPECTOR_CONFIG}", str(p.config)) for w in words])
    assert args.command == "run" and args.config == str(p.config) and args.no_display
    built = build_config(args)
    assert built.display.enabled == "off" and built.source.uri == "0"  # the file's source, no window

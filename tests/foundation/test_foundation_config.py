"""Configuration validation: every error names file, line, field and what was expected."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from engines.errors import UserError
from ground.yamlconf import all_errors
from inspector.config import InspectorConfig, load_config

CASES = [
    # (yaml text, expected fragments of the first error)
    ("source:\n  uri: demo\ngate:\n  baudrate: fast\n", [":4:", "gate.baudrate", "integer", "'fast'"]),
    ("roi:\n  x: 0\n  direction: sideways\n", [":3:", "roi.direction", "'left'", "'sideways'"]),
    ("gate:\n  port: sim\n  prot: 3\n", [":3:", "unknown key 'gate.prot'"]),
    ("sauce:\n  uri: demo\n", [":1:", "unknown key 'sauce'"]),
    ("source:\n  uri: [demo\n", [":3:", "malformed YAML"]),
    ("- just\n- a list\n", [":1:", "expected a mapping"]),
    # a cross-field error at the line of the field it names first (issue 13: it pointed at line 1, the section)
    (
        "detection:\n  min_area: 500\n  max_area: 100\n",
        [":3:", "detection.max_area", "max_area (100) must be >= min_area (500)"],
    ),
    ("roi:\n  trigger: 1.5\n", [":2:", "roi.trigger", "less than 1"]),
]


@pytest.mark.parametrize("text,fragments", CASES)
def test_config_error_names_line_and_field(tmp_path: Path, text: str, fragments: list[str]) -> None:
    path = tmp_path / "line.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(path))
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_shipped_configs_are_valid(root: Path) -> None:
    for path in sorted((root / "configs").glob("**/*.yaml")):
        assert all_errors(InspectorConfig, path) == [], path


def test_relative_paths_resolve_against_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "line.yaml"
    path.write_text("model:\n  path: ../models/m.onnx\nlog:\n  db: defects.db\n")
    cfg = load_config(path)
    assert Path(cfg.model.path) == tmp_path / "sub" / ".." / "models" / "m.onnx"
    assert Path(cfg.log.db) == tmp_path / "sub" / "defects.db"


def test_check_config_exit_codes(tmp_path: Path, root: Path) -> None:
    good = subprocess.run(
        [sys.executable, "-m", "inspector", "check-config", str(root / "configs" / "default.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert good.returncode == 0, good.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("gate:\n  baudrate: fast\n  prot: 3\n")
    res = subprocess.run(
        [sys.executable, "-m", "inspector", "check-config", str(bad)], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("error: ") for line in lines)
    assert "Traceback" not in res.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "inspector", "check-config", str(tmp_path / "nope.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 1 and "file not found" in missing.stderr


@pytest.mark.parametrize(
    "argv,expected",
    [
        ([], ["run"]),
        (["-v", "--no-display"], ["-v", "run", "--no-display"]),
        (["--source", "demo"], ["run", "--source", "demo"]),  # an option value that names a command
        (["-vv", "train", "--epochs", "2"], ["-vv", "train", "--epochs", "2"]),
        (["--help"], ["--help"]),
    ],
)
def test_no_subcommand_means_run(argv: list[str], expected: list[str]) -> None:
    from inspector.cli import _default_to_run

    assert _default_to_run(argv, {"run", "demo", "train"}) == expected


def test_stall_timeout_against_the_belt_to_the_gate(tmp_path: Path) -> None:
    """Parts pass a frozen camera unseen: with a live camera the gate must be held before they can reach it.
    `inspector run` warns (live sources only) with this message."""
    from inspector.config import stall_gate_problem

    path = tmp_path / "line.yaml"
    path.write_text(
        "source:\n  stall_timeout_s: 2.0\ngate:\n  port: sim\n  camera_to_gate_mm: 300\n  belt_speed_mm_s: 200\n"
    )
    problem = stall_gate_problem(load_config(path))
    assert problem and "source.stall_timeout_s 2 s" in problem and "1500 ms of belt travel" in problem
    path.write_text("source:\n  stall_timeout_s: 1.0\ngate:\n  port: sim\n")
    assert stall_gate_problem(load_config(path)) is None
    path.write_text("source:\n  stall_timeout_s: 2.0\n")  # no gate: nothing to protect
    assert stall_gate_problem(load_config(path)) is None

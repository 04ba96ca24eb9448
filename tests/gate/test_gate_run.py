"""`inspector run --serial sim --log-db`: the gate and the log wired into the real runtime (demo line)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from inspector.defectlog.query import open_db

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_run_with_simulated_gate_and_log(tmp_path: Path) -> None:
    if not (ROOT / "models" / "casting_seedcnn.onnx").is_file():
        pytest.skip("the shipped model models/casting_seedcnn.onnx is not in this checkout")
    db, events = tmp_path / "log.db", tmp_path / "events.jsonl"
    env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "inspector",
            "run",
            "--no-display",
            "--serial",
            "sim",
            "--log-db",
            str(db),
            "--events",
            str(events),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    parts = [json.loads(x) for x in events.read_text().splitlines()]
    con = open_db(db)
    rows = {row["part_id"]: dict(row) for row in con.execute("SELECT * FROM parts")}
    assert parts and len(rows) == len(parts)
    for ev in parts:
        row = rows[ev["part_id"]]
        assert row["verdict"] == ev["verdict"] and row["model_hash"] and row["config_hash"]
        if ev["verdict"] == "ok":
            assert row["gate_status"] == "passed" and not row["reject_sent"], row
        else:  # every defect and every part without a verdict was diverted, on record
            assert row["gate_status"] == "fired" and row["reject_sent"] == row["reject_acked"] == 1, row
            assert row["image"] and (tmp_path / "log_images" / row["image"]).is_file()

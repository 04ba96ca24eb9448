"""min_sharpness from the line's own parts: the rules by hand, then the command on rendered lines of the bundled
demo photos (sharp, and motion-blurred) with the shipped model, and the value it suggests used by a real run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from calibration.sharpness import suggest_min_sharpness
from engines.errors import UserError
from inspector.cli import main
from inspector.events import read_events
from inspector.simulate import render_line

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "casting_seedcnn.onnx"


def test_rules_by_hand():
    sharp = np.linspace(300.0, 1300.0, 101)  # 1st percentile 310, 5th 350, median 800
    c = suggest_min_sharpness(sharp)
    assert c.value == pytest.approx(0.8 * 310.0) and c.sharp_rejected == 0.0 and c.separable is None
    assert (c.n_sharp, c.sharp_min, c.sharp_p5, c.sharp_p50) == (101, 300.0, 350.0, 800.0)
    c = suggest_min_sharpness(sharp, [40.0, 90.0, 210.0])
    assert c.value == pytest.approx((210.0 + 310.0) / 2) and c.separable is True
    assert c.blurred_passed == 0.0 and c.sharp_rejected == 0.0 and c.n_blurred == 3
    c = suggest_min_sharpness(sharp, [40.0, 305.0, 400.0, 500.0])  # overlaps: keep 99% of the sharp parts
    assert c.value == pytest.approx(310.0) and c.separable is False
    assert c.blurred_passed == pytest.approx(0.5) and c.sharp_rejected == pytest.approx(1 / 101)
    with pytest.raises(UserError, match="only 19 part"):
        suggest_min_sharpness(sharp[:19])
    with pytest.raises(UserError, match="no part was measured in the blurred recording"):
        suggest_min_sharpness(sharp, [])


@pytest.fixture(scope="module")
def lines(tmp_path_factory):
    if not MODEL.is_file():
        pytest.skip("the shipped model is not in this checkout")
    held = [(p, p.parent.name) for p in sorted((ROOT / "demo").glob("*/*.jp*g"))]
    assert len(held) >= 20, "the bundled demo sample is missing"
    d = tmp_path_factory.mktemp("sharpness")
    out = {}
    for name, kw in (("sharp", dict(parts=30, seed=3)), ("blur", dict(parts=15, seed=4, blur=True))):
        spec = render_line(
            held,
            d / f"{name}.mp4",
            d / f"{name}.csv",
            fps=30,
            size=(640, 480),
            speed_px_s=750,
            min_gap_px=30,
            max_gap_px=100,
            **kw,
        )
        out[name] = (d / f"{name}.mp4", Path(spec.write_config(d / f"{name}.yaml", model=str(MODEL))))
    return out


def test_the_suggested_value_rejects_the_blurred_line_and_passes_the_sharp_one(lines, tmp_path, capsys):
    (sharp_video, cfg), (blur_video, _) = lines["sharp"], lines["blur"]
    figures = tmp_path / "c.json"
    assert (
        main(
            [
                "calibrate",
                "sharpness",
                "--config",
                str(cfg),
                "--source",
                str(sharp_video),
                "--blurred",
                str(blur_video),
                "--json",
                str(figures),
            ]
        )
        == 0
    )
    out = " ".join(capsys.readouterr().out.split())
    c = json.loads(figures.read_text())
    assert c["n_sharp"] == 30 and c["n_blurred"] == 15 and c["separable"] is True
    assert c["blurred_max"] < c["value"] < c["sharp_min"]
    assert f"set `model: {{min_sharpness: {c['value']:g}}}`" in out
    # the value in use: a run of each line with it
    cfg_text = cfg.read_text() + f"  min_sharpness: {c['value']}\n"  # the rendered config ends in its model: section
    (tmp_path / "line.yaml").write_text(cfg_text)
    for video, want_blurred in ((sharp_video, 0), (blur_video, 15)):
        ev = tmp_path / f"{video.stem}.jsonl"
        assert (
            main(
                [
                    "run",
                    "--config",
                    str(tmp_path / "line.yaml"),
                    "--source",
                    str(video),
                    "--no-display",
                    "--events",
                    str(ev),
                ]
            )
            == 0
        )
        events = read_events(ev)
        blurred = [e for e in events if (e["reason"] or "").startswith("blurred")]
        assert len(blurred) == want_blurred and all(e["verdict"] == "no_verdict" for e in blurred)
    # without a blurred recording: 80% of the sharp parts' 1st percentile, still above the blurred line here
    assert (
        main(["calibrate", "sharpness", "--config", str(cfg), "--source", str(sharp_video), "--json", str(figures)])
        == 0
    )
    c2 = json.loads(figures.read_text())
    assert c2["value"] == pytest.approx(round(0.8 * c["sharp_p1"], 1)) and c2["value"] > c["blurred_max"]


def test_a_recording_without_parts_is_one_clear_error(lines, tmp_path):
    _, cfg = lines["sharp"]
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "inspector",
            "calibrate",
            "sharpness",
            "--config",
            str(cfg),
            "--source",
            str(lines["sharp"][0]),
            "--max-frames",
            "3",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert r.returncode == 1 and "Traceback" not in r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "part(s) measured in the sharp recording" in errors[0], r.stderr

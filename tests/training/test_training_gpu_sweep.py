"""bench/gpu_sweep.py's parts that need no GPU: packing (lossless in gray), one CPU training, the figures, the table."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest

from tests.conftest import load_bench, make_part_image


@pytest.fixture(scope="module")
def sweep():
    module = load_bench("gpu_sweep")
    module.dev = "cpu"
    return module


@pytest.fixture
def photos(tmp_path):
    """12 good and 12 defect colour JPEGs in casting's folder names."""
    rng = np.random.default_rng(0)
    src = tmp_path / "src"
    for name, defect in (("ok_front", False), ("def_front", True)):
        (src / name).mkdir(parents=True)
        for i in range(12):
            cv2.imwrite(str(src / name / f"{name}_{i:02d}.jpeg"), make_part_image(defect, rng, 48))
    return src


@pytest.mark.parametrize("with_jpegtran", [True, False])
def test_pack_keeps_the_split_and_the_gray_pixels(sweep, photos, tmp_path, monkeypatch, with_jpegtran):
    if with_jpegtran and shutil.which("jpegtran") is None:
        pytest.skip("jpegtran absent (apt-get install libjpeg-turbo-progs); the plain-copy case still runs")
    if not with_jpegtran:
        monkeypatch.setattr(sweep.shutil, "which", lambda name: None)
    val, test = ["ok_front/ok_front_00.jpeg", "def_front/def_front_00.jpeg"], ["def_front/def_front_01.jpeg"]
    where = sweep.pack_photos(photos, val, test, tmp_path / "pack")
    assert json.loads((tmp_path / "pack" / "split.json").read_text()) == where
    assert len(where) == 24 and sorted(k for k, s in where.items() if s != "train") == sorted(val + test)
    for key in where:
        a = cv2.imread(str(photos / key), cv2.IMREAD_GRAYSCALE)
        b = cv2.imread(str(tmp_path / "pack" / "data" / key), cv2.IMREAD_GRAYSCALE)
        assert b is not None and np.array_equal(a, b), key
    assert list(sweep.split_labels(where, "val")) == [True, False]  # sorted keys: def_front first


def test_summary_figures_by_hand(sweep):
    yv = np.array([True, True, True, False, False, False])
    pv = np.array([0.9, 0.8, 0.3, 0.4, 0.1, 0.2])
    yt = np.array([True, True, False, False])
    pt = np.array([0.7, 0.2, 0.3, 0.1])
    s = sweep.summarize(pv, yv, pt, yt)
    assert s["val_auc"] == pytest.approx(8 / 9) and s["test_auc"] == pytest.approx(3 / 4)
    assert s["val_oks_above_lowest6"] == [1, 0, 0] and s["test_oks_above_lowest6"] == [1, 0]
    # at most 0 misses allowed with 3 or 2 defects: the threshold must sit at the lowest defect
    assert s["val_oracle995"] == {"acc": 5 / 6, "miss": 0, "fr": 1, "thr": pytest.approx(0.3)}
    assert s["test_oracle995"]["miss"] == 0 and s["test_oracle995"]["fr"] == 1
    # recall 100% on validation: between 0.3 (lowest defect) and 0.2 (the next score below) -> 0.25
    t = s["valthr1.0"]
    assert t["thr"] == pytest.approx(0.25)
    assert t["val"] == {"acc": 5 / 6, "miss": 0, "fr": 1} and t["test"] == {"acc": 0.5, "miss": 1, "fr": 1}


def test_one_cpu_training_and_the_report(sweep, photos, tmp_path, capsys):
    where = sweep.pack_photos(
        photos,
        [f"{c}/{c}_0{i}.jpeg" for c in ("ok_front", "def_front") for i in range(3)],
        [f"{c}/{c}_1{i}.jpeg" for c in ("ok_front", "def_front") for i in range(2)],
        tmp_path / "pack",
    )
    cfg = dict(sweep.DEFAULT, res=32, epochs=1, bs=4, widths="4-8")
    results = tmp_path / "res.jsonl"
    cache: dict = {}
    for name, loss in (("a", "bce"), ("b", "focal")):
        r = sweep.train_one(name, dict(cfg, loss=loss), cache, tmp_path / "pack" / "data", where)
        assert r["name"] == name and r["params"] > 0 and len(r["pv"]) == 6 and len(r["pt"]) == 4
        assert 0.0 <= r["val_auc"] <= 1.0 and len(r["test_oks_above_lowest6"]) == 2
        results.open("a").write(json.dumps(r) + "\n")
    capsys.readouterr()
    sweep.report([results], tmp_path / "pack")
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split()[0] for ln in lines[1:]] == ["a", "b", "all"] and "all 2 (mean)" in lines[3]

"""Label conflicts (the same picture under two labels): found by image alone, reported by training, left out by
`inspector evaluate --exclude-conflicts` from the judged split and the threshold choice."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from engines.checkpoint import load_checkpoint
from tests.conftest import make_part_image
from training.conflicts import MIN_CORR, conflict_report, label_conflicts, small_gray
from training.evaluate import evaluate
from training.train import TrainOptions, train


def _parts(n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [make_part_image(bool(i % 2), rng, 96) for i in range(n)]


def test_a_rotated_flipped_copy_under_another_label_is_found():
    imgs = _parts(6, 0)
    twin = cv2.flip(cv2.rotate(imgs[0], cv2.ROTATE_90_CLOCKWISE), 1)  # what dataset augmentation makes
    same_label_copy = cv2.rotate(imgs[1], cv2.ROTATE_180)
    images = [*imgs, twin, same_label_copy]
    labels = [0, 1, 0, 1, 0, 1, 1, 1]  # twin: label 1 like nothing it copies; the copy of #1 keeps label 1
    pairs = label_conflicts(images, labels)
    assert [(i, j) for i, j, _ in pairs] == [(0, 6)] and pairs[0][2] > 0.999
    # three classes: any two different labels conflict; the same picture thrice gives every cross-class pair
    pairs = label_conflicts([imgs[2], cv2.rotate(imgs[2], cv2.ROTATE_90_COUNTERCLOCKWISE), imgs[2][::-1]], [0, 1, 2])
    assert [(i, j) for i, j, _ in pairs] == [(0, 1), (0, 2), (1, 2)]
    assert label_conflicts([], []) == []


def test_different_parts_and_a_small_defect_are_not_conflicts():
    rng = np.random.default_rng(3)
    ok = make_part_image(False, rng, 96)
    defect = ok.copy()
    cv2.rectangle(defect, (40, 40), (50, 50), (20, 20, 20), -1)  # the same part with a clear defect added
    a, b = small_gray(ok), small_gray(defect)
    corr = float(np.corrcoef(a.ravel(), b.ravel())[0, 1])
    assert corr < MIN_CORR  # a defect this size is a different picture
    assert label_conflicts([ok, defect], [0, 1]) == []
    assert label_conflicts(_parts(20, 4), [i % 2 for i in range(20)]) == []


def test_report():
    pairs = [(0, 2, 0.99), (1, 2, 0.98)]
    r = conflict_report(
        ["a/1", "b/2", "c/3"], ["ok", "def", "ok"], pairs, {"a/1": "train", "b/2": "test", "c/3": "test"}.get
    )
    assert r["n_pairs"] == 2 and r["n_images"] == 3 and r["images_by_split"] == {"train": 1, "test": 2}
    assert r["pairs"][0] == ["a/1", "ok", "c/3", "ok", 0.99] and r["min_corr"] == MIN_CORR


def test_training_reports_and_evaluate_leaves_them_out(tiny_dataset, tmp_path):
    torch.set_num_threads(1)
    data = tiny_dataset({"ok": 30, "defect": 30})
    run = tmp_path / "run"
    model = train(
        TrainOptions(data=data, out=run, img_size=32, epochs=1, batch_size=16, seed=0, threads=1, dup_distance=6)
    )
    meta, _, _ = load_checkpoint(model)
    assert meta.extra["split"]["label_conflicts"]["n_pairs"] == 0  # the synthetic parts all differ
    # plant twins: a held-out good part (given a look of its own: the synthetic parts are all alike) and a
    # rotated copy filed as a defect (after training: the copy is in no split)
    test_ok = next(k for k in meta.extra["split"]["test"] if k.startswith("ok/"))
    val_ok = next(k for k in meta.extra["split"]["val"] if k.startswith("ok/"))
    rng = np.random.default_rng(7)
    for k, name in ((test_ok, "twin_test.png"), (val_ok, "twin_val.png")):
        img = cv2.resize(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8), (64, 64), interpolation=cv2.INTER_NEAREST)
        cv2.imwrite(str(data / k), img)
        cv2.imwrite(str(data / "defect" / name), cv2.rotate(img, cv2.ROTATE_90_CLOCKWISE))
    plain = evaluate(model, data, tmp_path / "plain", gradcam=False)
    assert "label_conflicts" not in plain
    m = evaluate(model, data, tmp_path / "clean", gradcam=False, target_recall=1.0, exclude_conflicts=True)
    c = m["label_conflicts"]
    assert c["n_pairs"] == 2 and c["excluded"] == [test_ok]
    assert {frozenset((p[0], p[2])) for p in c["pairs"]} == {
        frozenset(("defect/twin_test.png", test_ok)),
        frozenset(("defect/twin_val.png", val_ok)),
    }
    assert m["n_images"] == plain["n_images"] - 1
    assert m["threshold_choice"]["chosen_on"] == "val (1 label-conflict images left out)"
    assert m["threshold_choice"]["n_ok"] == len([k for k in meta.extra["split"]["val"] if k.startswith("ok/")]) - 1


def test_cli_flag(tiny_dataset, tmp_path, capsys):
    from inspector.cli import main

    torch.set_num_threads(1)
    data = tiny_dataset({"ok": 20, "defect": 20})
    model = train(
        TrainOptions(
            data=data, out=tmp_path / "run", img_size=32, epochs=1, batch_size=16, seed=0, threads=1, dup_distance=6
        )
    )
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(model),
                "--data",
                str(data),
                "--out",
                str(tmp_path / "ev"),
                "--exclude-conflicts",
                "--no-gradcam",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "label conflicts: 0 near-identical pair(s)" in out and "0 image(s) of this split left out" in out


def test_drop_conflicts_leaves_them_out_of_training_only(tiny_dataset, tmp_path):
    torch.set_num_threads(1)
    data = tiny_dataset({"ok": 30, "defect": 30})
    rng = np.random.default_rng(11)
    for i in range(4):  # four parts filed twice: as they are under ok/, turned under defect/
        img = cv2.resize(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8), (64, 64), interpolation=cv2.INTER_NEAREST)
        cv2.imwrite(str(data / "ok" / f"ok_{i:03d}.png"), img)
        cv2.imwrite(str(data / "defect" / f"defect_{i:03d}.png"), cv2.rotate(img, cv2.ROTATE_180))
    opts = dict(data=data, img_size=32, epochs=1, batch_size=16, seed=0, threads=1, dup_distance=6)
    kept = load_checkpoint(train(TrainOptions(out=tmp_path / "kept", **opts)))[0].extra["split"]
    dropped = load_checkpoint(train(TrainOptions(out=tmp_path / "dropped", drop_conflicts=True, **opts)))[0]
    d = dropped.extra["split"]
    c = kept["label_conflicts"]
    assert c["n_pairs"] == 4 and c["n_images"] == 8 and "dropped_from_train" not in c
    in_train = c["images_by_split"].get("train", 0)
    assert in_train > 0, c["images_by_split"]  # seed 0 deals some of the planted pairs to training
    assert d["label_conflicts"]["dropped_from_train"] == in_train
    assert d["counts"] == kept["counts"] and d["val"] == kept["val"] and d["test"] == kept["test"]  # same split
    assert d["digest"]["train"] != kept["digest"]["train"]


def _tile(seed: int, h: int = 240, w: int = 320) -> np.ndarray:
    """A textured surface photo (smooth noise), gray, like a tile or a sheet."""
    rng = np.random.default_rng(seed)
    base = cv2.resize(rng.normal(128, 40, (h // 8, w // 8)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    fine = rng.normal(0, 6, (h, w)).astype(np.float32)
    return np.clip(base + fine, 0, 255).astype(np.uint8)


def _jpeg(img: np.ndarray, q: int = 85) -> np.ndarray:
    return cv2.imdecode(cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, q])[1], cv2.IMREAD_UNCHANGED)


def test_a_planted_duplicate_is_a_conflict_and_a_planted_small_defect_is_not(tmp_path):
    from training.conflicts import candidate_pairs, difference

    dup_src, spot_src = _tile(10), _tile(11)
    dup_twin = _jpeg(cv2.rotate(dup_src, cv2.ROTATE_180), 80)  # the same photo re-saved, turned: differs nowhere
    spot_twin = spot_src.copy()
    cv2.circle(spot_twin, (290, 30), 7, 20, -1)  # a small dark defect in one corner: a real defect
    images = [dup_src, dup_twin, spot_src, spot_twin, _tile(12), _tile(13)]
    labels = [0, 1, 0, 1, 0, 1]
    cands = candidate_pairs(images, labels)
    assert {(i, j) for i, j, _ in cands} == {(0, 1), (2, 3)}  # at 64x64 both pairs look like the same picture
    assert difference(dup_src, dup_twin)["kind"] == "duplicate"
    d = difference(spot_src, spot_twin)
    assert d["kind"] == "small_difference" and d["peak"] > 40 and d["spot_fraction"] < 0.01
    details: list = []
    paths = []
    for k, im in enumerate(images):
        paths.append(tmp_path / f"{k}.png")
        cv2.imwrite(str(paths[-1]), im)
    pairs = label_conflicts(paths, labels, details=details)
    assert [(i, j) for i, j, _ in pairs] == [(0, 1)]
    r = conflict_report([p.name for p in paths], ["ok", "def"] * 3, pairs, details=details)
    assert r["n_pairs"] == 1 and r["n_candidates"] == 2
    assert r["not_conflicts"]["n_small_difference"] == 1 and r["not_conflicts"]["pairs"][0][0] == "2.png"


def _cell(seed: int, h: int = 300, w: int = 300) -> np.ndarray:
    """A low-contrast electroluminescence-like cell: a flat bright field, faint grain, dark busbars."""
    rng = np.random.default_rng(seed)
    img = np.full((h, w), 170.0, np.float32)
    img += cv2.GaussianBlur(rng.normal(0, 4, (h, w)).astype(np.float32), (0, 0), 1.5)
    for y in (h // 4, h // 2, 3 * h // 4):
        img[y - 3 : y + 3, 10 : w - 10] = 60.0
    return np.clip(img, 0, 255).astype(np.uint8)


def test_a_faint_crack_on_a_low_contrast_photo_is_a_difference_not_a_duplicate():
    """An absolute 16-gray-level cut called a faint crack on a flat EL cell "the same picture": the cut now
    follows the photo's own fine contrast, and the same cell re-saved is still a duplicate."""
    from training.conflicts import DUP_LEVEL, difference

    cell = _cell(3)
    cracked = cell.copy()
    cv2.line(cracked, (120, 20), (135, 140), 158, 2)  # a thin crack 12 gray levels darker than the field
    d = difference(cell, cracked)
    assert d["peak"] < DUP_LEVEL, d  # below the old absolute cut: the old check called this pair a duplicate
    assert d["kind"] == "small_difference", d
    assert d["contrast"] < 4.0, d  # the photo's own fine contrast is a few gray levels
    assert difference(cell, _jpeg(cv2.flip(cell, 1), 85))["kind"] == "duplicate"


def test_the_copy_bench_finds_a_rotated_copy_in_training_and_not_a_different_part():
    """bench/anomaly_copies.py's measure: a held-out image's best 64x64 correlation with any training image
    under the 8 rotations/flips (near 1 for a rotated, mirrored copy; lower for a different random surface)."""
    from tests.conftest import load_bench

    rng = np.random.default_rng(4)

    def surface() -> np.ndarray:
        f = cv2.GaussianBlur(rng.normal(0, 1, (96, 96)).astype(np.float32), (0, 0), 5)
        return cv2.normalize(f, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)

    train = [surface() for _ in range(5)]
    held = [cv2.flip(cv2.rotate(train[3], cv2.ROTATE_90_COUNTERCLOCKWISE), 1), surface()]
    from training.conflicts import dihedral_vectors

    _, variants = dihedral_vectors(np.stack([small_gray(t) for t in train]))
    corr = load_bench("anomaly_copies").best_copy(np.stack([small_gray(h) for h in held]), variants, chunk=1)
    assert corr[0] > 0.999 and corr[1] < 0.9, corr

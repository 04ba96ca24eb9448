"""Group-aware split: deterministic under a seed, near-duplicates (also rotated/flipped) kept together."""

from __future__ import annotations

import cv2
import numpy as np

from training.data import index_dataset, load_images
from training.split import group_split, near_duplicate_pairs, union_find_groups


def test_union_find_groups_chain():
    g = union_find_groups(6, np.array([[0, 1], [1, 2], [4, 5]]))
    assert g[0] == g[1] == g[2] and g[4] == g[5] and len({g[0], g[3], g[4]}) == 3


def test_split_is_deterministic_and_stratified(tiny_dataset):
    d = load_images(index_dataset(tiny_dataset({"ok": 40, "defect": 40}, seed=3)), 32)
    # the synthetic parts all look alike: a tight duplicate distance keeps the groups small here
    a = group_split(d.labels, d.hashes, seed=7, max_distance=6)
    b = group_split(d.labels, d.hashes, seed=7, max_distance=6)
    c = group_split(d.labels, d.hashes, seed=8, max_distance=6)
    assert np.array_equal(a.assignment, b.assignment)
    assert not np.array_equal(a.assignment, c.assignment)
    for s in ("train", "val", "test"):
        assert set(d.labels[a.indices(s)]) == {0, 1}
    assert sum(a.report["counts"].values()) == 80


def test_near_duplicates_stay_in_one_split(tmp_path):
    rng = np.random.default_rng(1)
    for cls in ("ok", "bad"):
        (tmp_path / cls).mkdir()
        for i in range(30):
            img = cv2.GaussianBlur(rng.integers(0, 255, (64, 64), dtype=np.uint8), (9, 9), 3)
            cv2.imwrite(str(tmp_path / cls / f"{i:02d}.png"), img)
            if i < 6:  # an augmented copy: rotated by 90 degrees, flipped, slightly brighter
                cv2.imwrite(str(tmp_path / cls / f"{i:02d}_copy.png"), cv2.add(np.rot90(img)[:, ::-1], 3))
    d = load_images(index_dataset(tmp_path), 64)
    keys = [it.key for it in d.items]
    pairs = {tuple(sorted((keys[i], keys[j]))) for i, j in near_duplicate_pairs(d.hashes, 20)}
    expected = {tuple(sorted((f"{c}/{i:02d}.png", f"{c}/{i:02d}_copy.png"))) for c in ("ok", "bad") for i in range(6)}
    assert expected <= pairs
    split = group_split(d.labels, d.hashes, seed=0, max_distance=20)
    where = dict(zip(keys, split.assignment, strict=True))
    assert all(where[a] == where[b] for a, b in expected)
    assert split.report["pairs_across_this_split"] == 0
    assert split.report["near_duplicate_pairs"] >= 12
    # a naive random split of these 72 images would, with this seed, separate some copies
    assert split.report["pairs_across_naive_random_split"] > 0

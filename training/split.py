"""Group-aware stratified train/validation/test split.

The casting set was published with augmentation, so some images are near-copies of each other. A plain random
split puts copies on both sides and flatters the test score. Here near-duplicates (perceptual-hash Hamming
distance <= a threshold) are joined into groups with union-find, and whole groups go to one split, stratified
by class with a fixed seed. The report says how many near-duplicate pairs exist, how many a naive random split
would have put across splits, and how many cross this split (0 by construction).
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bit distance between hash rows: a (M, W), b (K, W) uint64 -> (M, K)."""
    out = np.zeros((len(a), len(b)), np.int32)
    for w in range(a.shape[1]):
        out += np.bitwise_count(a[:, None, w] ^ b[None, :, w])
    return out


def near_duplicate_pairs(hashes: np.ndarray, max_distance: int, chunk: int = 256) -> np.ndarray:
    """(P, 2) index pairs i < j within ``max_distance`` bits under any rotation/flip.

    ``hashes`` is (N, V, W) uint64 (V variants of W words; variant 0 the image as it is) or (N,) / (N, W).
    """
    h = np.asarray(hashes, dtype=np.uint64)
    if h.ndim == 1:
        h = h[:, None, None]
    elif h.ndim == 2:
        h = h[:, None, :]
    n, v, w = h.shape
    variants = h.reshape(n * v, w)
    out: list[np.ndarray] = []
    for start in range(0, n, chunk):
        block = h[start : start + chunk, 0, :]
        dist = hamming(block, variants).reshape(len(block), n, v).min(axis=2)
        ii, jj = np.nonzero(dist <= max_distance)
        ii = ii + start
        keep = ii < jj
        out.append(np.stack([ii[keep], jj[keep]], axis=1))
    return np.concatenate(out) if out else np.zeros((0, 2), np.int64)


def union_find_groups(n: int, pairs: np.ndarray) -> np.ndarray:
    """Group id per item: connected components of the near-duplicate graph."""
    parent = np.arange(n)

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a, b in pairs:
        ra, rb = find(int(a)), find(int(b))
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return np.array([find(i) for i in range(n)])


@dataclass
class Split:
    assignment: np.ndarray  # (N,) int: 0 train, 1 val, 2 test
    report: dict

    def indices(self, name: str) -> np.ndarray:
        return np.nonzero(self.assignment == SPLITS.index(name))[0]


def group_split(
    labels: np.ndarray,
    hashes: np.ndarray,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    max_distance: int = 20,
) -> Split:
    """Stratified split of whole near-duplicate groups; deterministic for (data, fractions, seed)."""
    labels = np.asarray(labels)
    n = len(labels)
    pairs = near_duplicate_pairs(hashes, max_distance)
    groups = union_find_groups(n, pairs)
    rng = np.random.default_rng(seed)
    # Each group is stratified under its majority label; mixed-label groups are counted in the report.
    members: dict[int, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(int(g), []).append(i)
    by_class: dict[int, list[int]] = {}
    mixed = 0
    for g, idx in members.items():
        labs = Counter(int(labels[i]) for i in idx)
        mixed += len(labs) > 1
        by_class.setdefault(labs.most_common(1)[0][0], []).append(g)
    assignment = np.zeros(n, dtype=np.int64)
    frac = np.asarray(fractions, dtype=np.float64) / sum(fractions)
    for cls in sorted(by_class):
        gs = sorted(by_class[cls])
        order = rng.permutation(len(gs))
        total = sum(len(members[g]) for g in gs)
        filled = np.zeros(3)
        # Largest groups first, then greedily to the split furthest below its target share.
        ordered = sorted((gs[k] for k in order), key=lambda g: -len(members[g]))
        for g in ordered:
            s = int(np.argmax(frac * total - filled))
            assignment[members[g]] = s
            filled[s] += len(members[g])
    naive = _naive_assignment(labels, frac, seed)
    report = {
        "method": "256-bit pHash (imagehash), Hamming distance, min over 8 rotations/flips; "
        "union-find groups kept in one split",
        "max_hamming_distance": int(max_distance),
        "seed": int(seed),
        "fractions": [float(f) for f in frac],
        "near_duplicate_pairs": int(len(pairs)),
        "images_in_groups": int(sum(len(v) for v in members.values() if len(v) > 1)),
        "groups_with_duplicates": int(sum(1 for v in members.values() if len(v) > 1)),
        "largest_group": int(max(len(v) for v in members.values())) if members else 0,
        "mixed_label_groups": int(mixed),
        "pairs_across_naive_random_split": _crossing(pairs, naive),
        "pairs_across_this_split": _crossing(pairs, assignment),
        "counts": {s: int((assignment == k).sum()) for k, s in enumerate(SPLITS)},
    }
    log.info("split: %s", report)
    return Split(assignment, report)


def _naive_assignment(labels: np.ndarray, frac: np.ndarray, seed: int) -> np.ndarray:
    """What a plain stratified random split (ignoring duplicates) would do, for the report only."""
    rng = np.random.default_rng(seed)
    out = np.zeros(len(labels), dtype=np.int64)
    for cls in np.unique(labels):
        idx = rng.permutation(np.nonzero(labels == cls)[0])
        n_test = int(round(frac[2] * len(idx)))
        n_val = int(round(frac[1] * len(idx)))
        out[idx[:n_test]] = 2
        out[idx[n_test : n_test + n_val]] = 1
    return out


def _crossing(pairs: np.ndarray, assignment: np.ndarray) -> int:
    if len(pairs) == 0:
        return 0
    return int((assignment[pairs[:, 0]] != assignment[pairs[:, 1]]).sum())


def split_digest(keys: list[str]) -> str:
    """Short fingerprint of a file list, to recognise the same split later."""
    return hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()[:16]

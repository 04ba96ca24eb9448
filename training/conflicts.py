"""Label conflicts: near-identical images that carry different labels.

A data set built by photographing parts and augmenting the photos (rotations, flips, small shifts) can hold the
same part twice, once under each label. No classifier can be right on both images of such a pair, and a
threshold chosen on them is pushed to where it rejects good parts. This module finds them: two images of
different classes whose gray 64x64 versions correlate (Pearson) at ``min_corr`` or more under the best of the 8
rotations/flips. Independent of any model.

The default cut-off, 0.975, sits above what different parts of one design reach: on casting/train the closest
good part of each defect correlates at 0.897 (median), 0.969 (99th percentile); the defects whose closest good
part exceeds 0.975 are the same part, marks and pose included (docs/model-casting.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from engines.meta import ModelMeta
from engines.preprocess import to_model_image

MIN_CORR = 0.975
SIZE = 64
METHOD = (f"Pearson correlation of gray {SIZE}x{SIZE} images (INTER_AREA), best of 8 rotations/flips, "
          "between images of different classes")


def _vectors(images: np.ndarray) -> np.ndarray:
    """(N, SIZE*SIZE) zero-mean unit-norm rows."""
    x = images.reshape(len(images), -1).astype(np.float32)
    x = x - x.mean(axis=1, keepdims=True)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(n, 1e-6)


_GRAY = ModelMeta("conflicts", ["a", "b"], "a", SIZE, 1, [0.0], [1.0])  # only its colour and size are used


def small_gray(image: np.ndarray) -> np.ndarray:
    """An OpenCV image (gray or BGR uint8) -> float32 (SIZE, SIZE), through THE preprocessing's colour + resize."""
    return to_model_image(np.asarray(image), _GRAY)[:, :, 0].astype(np.float32)


def label_conflicts(
    images: np.ndarray | Sequence[np.ndarray],
    labels: Sequence[int] | np.ndarray,
    min_corr: float = MIN_CORR,
    chunk: int = 1024,
) -> list[tuple[int, int, float]]:
    """Pairs (i, j, corr), i < j, of different labels with correlation >= ``min_corr``; highest first.

    ``images``: (N, SIZE, SIZE) float arrays from :func:`small_gray` (or anything :func:`small_gray` takes).
    """
    imgs = [im if np.shape(im) == (SIZE, SIZE) else small_gray(im) for im in images]
    if not imgs:
        return []
    stack = np.stack(imgs).astype(np.float32)
    labels = np.asarray(labels)
    base = _vectors(stack)
    variants = []
    for k in range(4):
        r = np.rot90(stack, k, axes=(1, 2))
        variants += [_vectors(np.ascontiguousarray(r)), _vectors(np.ascontiguousarray(r[:, :, ::-1]))]
    found: dict[tuple[int, int], float] = {}
    classes = sorted(set(labels.tolist()))
    for ai, a in enumerate(classes):
        ia = np.nonzero(labels == a)[0]
        ib = np.nonzero(np.isin(labels, classes[ai + 1:]))[0]
        if len(ia) == 0 or len(ib) == 0:
            continue
        target = base[ib].T
        for s in range(0, len(ia), chunk):
            rows = ia[s:s + chunk]
            best = np.full((len(rows), len(ib)), -1.0, np.float32)
            for v in variants:
                np.maximum(best, v[rows] @ target, out=best)
            r, c = np.nonzero(best >= min_corr)
            for x, y in zip(r.tolist(), c.tolist(), strict=True):
                i, j = int(rows[x]), int(ib[y])
                found[(min(i, j), max(i, j))] = float(best[x, y])
    return sorted(((i, j, c) for (i, j), c in found.items()), key=lambda t: -t[2])


def conflict_report(keys: Sequence[str], labels: Sequence[str], pairs: list[tuple[int, int, float]],
                    split_of: Callable[[str], str] | None = None, min_corr: float = MIN_CORR) -> dict:
    """JSON-able summary: the pairs by key and, given ``split_of``, how many images of each split are in one."""
    involved = sorted({keys[i] for i, j, _ in pairs} | {keys[j] for i, j, _ in pairs})
    report: dict = {"method": METHOD, "min_corr": float(min_corr), "n_pairs": len(pairs), "n_images": len(involved)}
    if split_of is not None:
        by_split: dict[str, int] = {}
        for k in involved:
            by_split[split_of(k)] = by_split.get(split_of(k), 0) + 1
        report["images_by_split"] = by_split
    report["pairs"] = [[keys[i], labels[i], keys[j], labels[j], round(c, 4)] for i, j, c in pairs[:500]]
    return report

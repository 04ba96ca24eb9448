"""Label conflicts: near-identical images that carry different labels.

A data set built by photographing parts and augmenting the photos (rotations, flips, small shifts) can hold the
same part twice, once under each label. No classifier can be right on both images of such a pair, and a
threshold chosen on them is pushed to where it rejects good parts. This module finds them: two images of
different classes whose gray 64x64 versions correlate (Pearson) at ``min_corr`` or more under the best of the 8
rotations/flips are candidates; a candidate is a conflict only when the two differ NOWHERE at full resolution
(aligned difference map). A defect photo whose defect is a small corner spot and a defect-free photo of the same
tile correlate just as well at 64x64, but their difference map has one strong spot: a real small defect, kept.
Independent of any model.

The default cut-off, 0.975, sits above what different parts of one design reach: on casting/train the closest
good part of each defect correlates at 0.897 (median), 0.969 (99th percentile); the defects whose closest good
part exceeds 0.975 are the same part, marks and pose included (docs/model-casting.md).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from engines.meta import ModelMeta
from engines.preprocess import to_model_image

log = logging.getLogger(__name__)

MIN_CORR = 0.975
SIZE = 64
DUP_LEVEL = 16.0  # gray levels: the strongest smoothed, misalignment-tolerant difference of the same picture
# ... and at most this multiple of the photo's own fine contrast (the median of its smoothed high-pass): on a
# low-contrast photo (electroluminescence cells: median fine contrast about 2 gray levels) a thin crack
# differs by less than 16 levels, and an absolute level alone would call it "the same picture". The same
# picture twice differs by up to 2.5x its fine contrast (casting's 108 duplicate pairs: 0.4-2.5x, the
# highest at the photo's border); ELPV's look-alike pairs, neighbouring cells of one module and not the same
# picture, differ by a median 6x (10th percentile 3x).
DUP_CONTRAST = 3.0
DUP_FLOOR = 4.0  # gray levels a re-saved JPEG of a flat photo differs by anyway: the relative cut's floor
MAX_CHECKED = 2000  # candidate pairs compared at full resolution
SPOT_FRACTION = 0.05  # a difference above half its peak on at most this share of the image is one local spot
METHOD = (
    f"candidates: Pearson correlation of gray {SIZE}x{SIZE} images (INTER_AREA), best of 8 rotations/flips, "
    f"between images of different classes, >= min_corr; conflict: the aligned full-resolution difference "
    f"(brightness matched, phase-correlation shift, smoothed) peaks at <= {DUP_CONTRAST:g}x the photo's own "
    f"fine contrast, within {DUP_FLOOR:g}-{DUP_LEVEL:g} gray levels (differs nowhere); a pair that differs in "
    "one spot is a small real defect, not a conflict"
)


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


def _load(image) -> np.ndarray:
    """A path or an OpenCV image -> the image (paths decoded on demand, so full resolution is never all held)."""
    if isinstance(image, (str, Path)):
        from training.data import read_image

        return read_image(Path(image))
    return np.asarray(image)


def _gray(image: np.ndarray) -> np.ndarray:
    img = image[:, :, 0] if image.ndim == 3 and image.shape[2] == 1 else image
    return (img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)).astype(np.float32)


def _variant(img: np.ndarray, v: int) -> np.ndarray:
    """The 8 rotations/flips in the order :func:`candidate_pairs` tries them."""
    r = np.rot90(img, v // 2)
    return np.ascontiguousarray(r[:, ::-1] if v % 2 else r)


def _align(ga: np.ndarray, gb: np.ndarray) -> np.ndarray:
    """Warp gb onto ga: a rotation + shift (ECC, from the phase-correlation shift); the shift alone if ECC fails."""
    (dx, dy), _ = cv2.phaseCorrelate(ga.astype(np.float64), gb.astype(np.float64))
    h, w = ga.shape
    near = abs(dx) < 0.1 * w and abs(dy) < 0.1 * h
    m = np.float32([[1, 0, dx], [0, 1, dy]]) if near else np.eye(2, 3, dtype=np.float32)
    try:
        crit = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 60, 1e-5)
        _, m = cv2.findTransformECC(ga, gb, m.astype(np.float32), cv2.MOTION_EUCLIDEAN, crit, None, 5)
    except cv2.error:
        pass  # no convergence: keep the phase-correlation shift
    return cv2.warpAffine(gb, m, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)


def _tolerant(a: np.ndarray, b: np.ndarray, r: int) -> np.ndarray:
    """|a - b| where b may be off by up to r pixels: an edge a pixel or two apart differs nowhere, a spot does."""
    k = np.ones((2 * r + 1, 2 * r + 1), np.uint8)
    lo_b, hi_b, lo_a, hi_a = cv2.erode(b, k), cv2.dilate(b, k), cv2.erode(a, k), cv2.dilate(a, k)
    d_ab = np.maximum(np.maximum(a - hi_b, lo_b - a), 0)
    d_ba = np.maximum(np.maximum(b - hi_a, lo_a - b), 0)
    return np.maximum(d_ab, d_ba)


def difference(a: np.ndarray, b: np.ndarray) -> dict:
    """Compare two images at full resolution after aligning b onto a: where, and how much, do they differ?

    b is turned by the best of the 8 rotations/flips, resized to a, matched in brightness/contrast and aligned
    (phase correlation, then ECC rotation + shift); the difference tolerates a misalignment of about 1% of the
    side (edges a pixel or two apart do not count) and is smoothed over a few pixels (JPEG noise). ``peak``:
    the strongest difference in gray levels; ``contrast``: the photo's own fine contrast (median of its
    smoothed high-pass, gray levels), which scales what "no difference" means; ``spot_fraction``: share of the
    image above half the peak; ``largest_share``: share of that area in the largest connected region (one
    spot: most of it).
    """
    ga, gb0 = _gray(a), _gray(b)
    small_a = cv2.resize(ga, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    best, v_best = -2.0, 0
    for v in range(8):
        sb = cv2.resize(_variant(gb0, v), (SIZE, SIZE), interpolation=cv2.INTER_AREA)
        c = float(_vectors(small_a[None])[0] @ _vectors(sb[None])[0])
        if c > best:
            best, v_best = c, v
    gb = _variant(gb0, v_best)
    if gb.shape != ga.shape:
        gb = cv2.resize(gb, (ga.shape[1], ga.shape[0]), interpolation=cv2.INTER_AREA)
    gb = ((gb - gb.mean()) / max(1e-3, float(gb.std())) * float(ga.std()) + float(ga.mean())).astype(np.float32)
    gb = _align(ga, gb)
    h, w = ga.shape
    r = max(1, round(min(h, w) / 100))
    mx, my = int(0.03 * w) + r, int(0.03 * h) + r
    diff = _tolerant(ga, gb, r)[my : h - my, mx : w - mx]
    sigma = max(1.0, min(h, w) / 150.0)
    smooth = cv2.GaussianBlur(diff, (0, 0), sigma)
    peak = float(smooth.max()) if smooth.size else 0.0
    fine = np.abs(ga - cv2.GaussianBlur(ga, (0, 0), 3 * sigma))[my : h - my, mx : w - mx]
    contrast = float(np.median(cv2.GaussianBlur(fine, (0, 0), sigma))) if fine.size else 0.0
    level = max(DUP_FLOOR, min(DUP_LEVEL, DUP_CONTRAST * contrast))  # "differs nowhere" on this photo
    mask = (smooth > max(level, peak / 2)).astype(np.uint8)
    spot = float(mask.mean())
    largest = 0.0
    if mask.any():
        n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        largest = float(stats[1:, cv2.CC_STAT_AREA].max() / mask.sum())
    if peak <= level:
        kind = "duplicate"
    elif spot <= SPOT_FRACTION and largest >= 0.5:
        kind = "small_difference"
    else:
        kind = "different"
    return {
        "kind": kind,
        "peak": round(peak, 1),
        "contrast": round(contrast, 2),
        "spot_fraction": round(spot, 4),
        "largest_share": round(largest, 3),
        "corr_64": round(best, 4),
    }


def dihedral_vectors(stack: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """(N, SIZE, SIZE) gray images -> their unit vectors as they are, and under each of the 8 rotations/flips."""
    stack = stack.astype(np.float32)
    variants = []
    for k in range(4):
        r = np.rot90(stack, k, axes=(1, 2))
        variants += [_vectors(np.ascontiguousarray(r)), _vectors(np.ascontiguousarray(r[:, :, ::-1]))]
    return variants[0], variants


def candidate_pairs(
    images: Sequence,
    labels: Sequence[int] | np.ndarray,
    min_corr: float = MIN_CORR,
    chunk: int = 1024,
) -> list[tuple[int, int, float]]:
    """Pairs (i, j, corr), i < j, of different labels whose gray 64x64 versions correlate >= ``min_corr``.

    ``images``: (N, SIZE, SIZE) arrays from :func:`small_gray`, OpenCV images or file paths.
    """
    imgs = [im if np.shape(im) == (SIZE, SIZE) else small_gray(_load(im)) for im in images]
    if not imgs:
        return []
    base, variants = dihedral_vectors(np.stack(imgs))
    labels = np.asarray(labels)
    found: dict[tuple[int, int], float] = {}
    classes = sorted(set(labels.tolist()))
    for ai, a in enumerate(classes):
        ia = np.nonzero(labels == a)[0]
        ib = np.nonzero(np.isin(labels, classes[ai + 1 :]))[0]
        if len(ia) == 0 or len(ib) == 0:
            continue
        target = base[ib].T
        for s in range(0, len(ia), chunk):
            rows = ia[s : s + chunk]
            best = np.full((len(rows), len(ib)), -1.0, np.float32)
            for v in variants:
                np.maximum(best, v[rows] @ target, out=best)
            r, c = np.nonzero(best >= min_corr)
            for x, y in zip(r.tolist(), c.tolist(), strict=True):
                i, j = int(rows[x]), int(ib[y])
                found[(min(i, j), max(i, j))] = float(best[x, y])
    return sorted(((i, j, c) for (i, j), c in found.items()), key=lambda t: -t[2])


def classify_pairs(images: Sequence, pairs: list[tuple[int, int, float]]) -> list[tuple[int, int, float, dict]]:
    """Each candidate pair with its full-resolution :func:`difference` (images: the full ones or paths)."""
    out = []
    for i, j, c in pairs:
        try:
            d = difference(_load(images[i]), _load(images[j]))
        except Exception as exc:  # noqa: BLE001 - an unreadable file: keep the pair as a candidate, say why
            d = {"kind": "unchecked", "error": str(exc)[:80]}
        out.append((i, j, c, d))
    return out


def label_conflicts(
    images: Sequence,
    labels: Sequence[int] | np.ndarray,
    min_corr: float = MIN_CORR,
    chunk: int = 1024,
    details: list | None = None,
    full: Sequence | None = None,
) -> list[tuple[int, int, float]]:
    """True conflicts: pairs of different labels that differ NOWHERE at full resolution (the same picture).

    Candidates come from :func:`candidate_pairs`; a pair whose aligned full-resolution difference is one
    local spot is the same part with a small real defect, not a conflict. ``details`` (a list) receives
    every candidate with its difference record, for the report. ``images``: full images, file paths or 64x64
    :func:`small_gray` ones; ``full``: the full images or paths for the check when ``images`` are small (without
    them 64x64 candidates are taken as they are).
    """
    cands = candidate_pairs(images, labels, min_corr, chunk)
    if not cands:
        return []
    full = images if full is None else full
    if len(cands) > MAX_CHECKED:  # the most alike first; the rest stay candidates, unchecked
        log.warning(
            "label conflicts: %d candidate pairs, the %d most alike checked at full resolution", len(cands), MAX_CHECKED
        )
    if all(np.shape(im) == (SIZE, SIZE) for im in (full[k] for p in cands for k in p[:2])):
        return cands
    checked = classify_pairs(full, cands[:MAX_CHECKED])
    checked += [(i, j, c, {"kind": "unchecked"}) for i, j, c in cands[MAX_CHECKED:]]
    if details is not None:
        details.extend(checked)
    return [(i, j, c) for i, j, c, d in checked if d["kind"] in ("duplicate", "unchecked")]


def conflict_report(
    keys: Sequence[str],
    labels: Sequence[str],
    pairs: list[tuple[int, int, float]],
    split_of: Callable[[str], str] | None = None,
    min_corr: float = MIN_CORR,
    details: list | None = None,
) -> dict:
    """JSON-able summary: the pairs by key and, given ``split_of``, how many images of each split are in one.

    ``details`` (from :func:`label_conflicts`) adds the candidates that were NOT conflicts: the same part
    with one local difference (a small real defect), or different pictures.
    """
    involved = sorted({keys[i] for i, j, _ in pairs} | {keys[j] for i, j, _ in pairs})
    report: dict = {"method": METHOD, "min_corr": float(min_corr), "n_pairs": len(pairs), "n_images": len(involved)}
    if split_of is not None:
        by_split: dict[str, int] = {}
        for k in involved:
            by_split[split_of(k)] = by_split.get(split_of(k), 0) + 1
        report["images_by_split"] = by_split
    report["pairs"] = [[keys[i], labels[i], keys[j], labels[j], round(c, 4)] for i, j, c in pairs[:500]]
    if details is not None:
        kept = [(i, j, c, d) for i, j, c, d in details if d.get("kind") not in ("duplicate", "unchecked")]
        report["n_candidates"] = len(details)
        report["not_conflicts"] = {
            "n_small_difference": sum(d["kind"] == "small_difference" for *_, d in kept),
            "n_different": sum(d["kind"] == "different" for *_, d in kept),
            "pairs": [[keys[i], labels[i], keys[j], labels[j], d] for i, j, _, d in kept[:200]],
        }
    return report

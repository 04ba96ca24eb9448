"""Anomaly mode: learn what a good part looks like from good images alone (PatchCore-style), no defect photos needed.

Steps (``inspector train --anomaly --data DIR --out RUN``):

1. The OK class folder of DIR (``--ok-class`` or the conventional names) is split by near-duplicate groups
   (the classifier's pHash grouping) into train / validation / test (70 / 15 / 15). Images of any other class
   folder are defects: they never train, half go to validation (at most ``max_val_defects``), the rest to test.
2. Patch features of the good training images (:mod:`engines.anomaly`); at most ``max_patches`` of them,
   sampled evenly over the images, then a greedy k-centre coreset of ``bank_size`` rows: the memory bank. In
   the same pass each training image's whole-image feature (the image bank, at most ``image_bank_size`` rows).
3. Calibration on held-out good images: a logistic in log-distance whose centre is their ``good_quantile``
   raw score and whose scale puts their median at 0.1, for the patch score (the mean of an image's
   ``score_fraction`` (3%) largest patch distances) and the whole-image distance alike. With defect images in
   validation, the score rule (``patch``, ``image`` or their ``mix``) with the best validation ROC AUC is kept
   (``score_rule`` fixes one instead) and the threshold is chosen for ``target_recall`` (default 0.95) as the
   classifier path does; without defect images the rule is ``patch`` and the threshold 0.5 (= the good
   quantile).
4. ``model.pt`` (backbone + bank + calibration) and ``model.onnx`` (+ sidecar), with a torch-vs-ONNX Runtime
   parity check on scores and maps; validation and test figures go into the metadata.
"""

from __future__ import annotations

import logging
import math
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from engines.anomaly import (
    ARCH,
    IMAGENET_MEAN,
    IMAGENET_STD,
    RULES,
    SCORE_FRACTION,
    Lite0Features,
    Lite0Tail,
    PatchCoreNet,
    lite0_weights_path,
    patch_features,
    pretrained_lite0,
    score_top_k,
)
from engines.checkpoint import save_checkpoint
from engines.errors import UserError
from engines.meta import ModelMeta, default_ok_class
from engines.preprocess import normalize, to_model_image
from training.data import IMAGE_SUFFIXES, BadImage, dihedral_phash, read_image
from training.metrics import compute_metrics
from training.split import group_split, near_duplicate_pairs, split_digest, union_find_groups
from training.threshold import choose_threshold, rates_at
from training.train import judge_quality

if TYPE_CHECKING:
    from rich.console import Console

    from training.evaluate import Scored

log = logging.getLogger(__name__)

MIN_GOOD = 10  # fewer good images cannot give a training, a validation and a test share
MIN_LOG_SCALE = math.log(3.0) / math.log(999.0)  # 3x the centre distance maps to 0.999 at most


@dataclass
class AnomalyOptions:
    data: Path
    out: Path
    img_size: int = 224
    bank_size: int = 4096  # memory-bank rows kept by the coreset (per-crop cost grows with it)
    score_fraction: float = SCORE_FRACTION  # the image score averages this top share of patch scores
    bank_flips: bool = False  # also learn the good images mirrored left-right and top-bottom (3x the patch pool)
    score_rule: str = "auto"  # patch, image, mix, or auto: the best on validation defects (patch without)
    image_bank_size: int = 4096  # whole-image bank rows (a coreset of the training images beyond that)
    max_patches: int = 200_000  # patches the coreset chooses from (sampled evenly over the training images)
    good_quantile: float = 0.99  # held-out good score that maps to 0.5
    target_recall: float | None = None  # with defect images: None means 0.95
    max_val_defects: int = 500
    min_auc: float = 0.9  # the weak-model guard (with defect images in validation): as the classifier's
    max_false_reject: float = 0.2
    max_test_defects: int | None = None  # None: every defect image not in validation is judged
    ok_class: str | None = None
    seed: int = 0
    threads: int | None = None
    batch_size: int = 16
    dup_distance: int = 20
    export: bool = True


@dataclass
class _Images:
    keys: list[str]
    labels: list[str]
    images: np.ndarray  # (N, S, S, 3) uint8 RGB through THE preprocessing
    hashes: np.ndarray


def index_folder(data: Path, ok_class: str | None) -> tuple[str, dict[str, list[Path]]]:
    """DIR/<class>/<image>: (the OK class, files per class). Every failure is one :class:`UserError`."""
    root = Path(data)
    if not root.is_dir():
        raise UserError(
            f"{root}: dataset folder not found; give a folder with a sub-folder of good images (e.g. DIR/ok/*.png)"
        )
    files = {
        d.name: sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        for d in sorted(root.iterdir())
        if d.is_dir() and not d.name.startswith(".")
    }
    files = {k: v for k, v in files.items() if v}
    if not files:
        raise UserError(
            f"{root}: no class sub-folder with images; anomaly mode needs DIR/<ok class>/<images> "
            "(good parts), optionally beside defect folders"
        )
    ok = ok_class or default_ok_class(list(files))
    if ok is None:
        raise UserError(
            f"{root}: no OK class among {sorted(files)}; name the good-part folder ok/good/normal "
            "or give --ok-class NAME"
        )
    if ok not in files:
        raise UserError(f"--ok-class {ok!r}: no such image folder in {root} (found {sorted(files)})")
    return ok, files


def _decode(root: Path, paths: list[Path], label: str, meta: ModelMeta, progress=None) -> _Images:
    keys, imgs, hashes, skipped = [], [], [], 0
    for p in paths:
        try:
            img = read_image(p)
        except BadImage as exc:
            log.warning("skipped %s: %s", p, exc)
            skipped += 1
            continue
        imgs.append(to_model_image(img, meta))
        hashes.append(dihedral_phash(img))
        keys.append(p.relative_to(root).as_posix())
        if progress:
            progress()
    if skipped:
        log.warning("%d unreadable image(s) of class %s skipped", skipped, label)
    shape = (0, meta.input_size, meta.input_size, 3)
    return _Images(
        keys,
        [label] * len(keys),
        np.stack(imgs) if imgs else np.zeros(shape, np.uint8),
        np.stack(hashes) if hashes else np.zeros((0, 8, 4), np.uint64),
    )


def _split_defects(hashes: np.ndarray, max_val: int, seed: int, max_distance: int) -> tuple[np.ndarray, np.ndarray]:
    """Near-duplicate groups of defect images, alternately to validation (up to ``max_val``) and test."""
    n = len(hashes)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    groups = union_find_groups(n, near_duplicate_pairs(hashes, max_distance))
    order = np.random.default_rng(seed).permutation(np.unique(groups))
    val: list[int] = []
    test: list[int] = []
    cap = min(max_val, n // 2)
    for g in order:
        members = np.nonzero(groups == g)[0].tolist()
        (val if len(val) + len(members) <= cap and len(val) <= len(test) else test).extend(members)
    return np.array(sorted(val), np.int64), np.array(sorted(test), np.int64)


def greedy_coreset(x: torch.Tensor, m: int, seed: int = 0, proj_dims: int = 32) -> torch.Tensor:
    """Indices of ``m`` rows chosen greedily, each the row furthest from those already chosen (k-centre).

    Distances are taken in a random Gaussian projection to ``proj_dims`` (as PatchCore does) for speed. One
    thread: each step is a memory-bound pass over the rows, where more threads only add synchronisation.
    """
    n = len(x)
    if m >= n:
        return torch.arange(n)
    g = torch.Generator().manual_seed(seed)
    z = x
    if x.shape[1] > proj_dims:
        proj = torch.randn(x.shape[1], proj_dims, generator=g) / math.sqrt(proj_dims)
        z = x @ proj
    z = z.contiguous()
    zsq = (z * z).sum(dim=1)
    chosen = torch.empty(m, dtype=torch.long)
    idx = int(torch.randint(n, (1,), generator=g))
    mind = torch.full((n,), float("inf"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for i in range(m):
            chosen[i] = idx
            # |z - c|^2 = |z|^2 - 2 z.c + |c|^2: one pass over z per step, no (N, D) temporary
            d = torch.addmv(zsq + zsq[idx], z, z[idx], alpha=-2.0)
            torch.minimum(mind, d, out=mind)
            idx = int(torch.argmax(mind))
    finally:
        torch.set_num_threads(threads)
    return chosen


def _batches(images: np.ndarray, meta: ModelMeta, size: int):
    for a in range(0, len(images), size):
        yield torch.from_numpy(normalize(images[a : a + size], meta))


def raw_scores(net: PatchCoreNet, images: np.ndarray, meta: ModelMeta, batch: int) -> np.ndarray:
    """(N, 2) raw image scores of uint8 model images: the patch score (the mean of the top-k patch distances,
    as the network's) and the whole-image distance (NaN when the network has no whole-image bank)."""
    out = []
    with torch.inference_mode():
        for x in _batches(images, meta, batch):
            patch, whole = net.raw(x)
            out.append(torch.cat([patch, whole if whole is not None else torch.full_like(patch, np.nan)], 1))
    return torch.cat(out).numpy() if out else np.zeros((0, 2), np.float32)


def _calibration(good_raw: np.ndarray, quantile: float) -> tuple[float, float]:
    """(ln centre, scale) of the logistic in log-distance: the held-out good ``quantile`` -> 0.5, median -> 0.1."""
    log_centre = math.log(max(float(np.quantile(good_raw, quantile)), 1e-6))
    # never steeper than 3x the centre distance -> 0.999, so strong defects keep a shaped map
    scale = max((log_centre - math.log(max(float(np.median(good_raw)), 1e-6))) / math.log(9.0), MIN_LOG_SCALE)
    return log_centre, scale


def _rule_scores(raw: np.ndarray, cal: dict[str, tuple[float, float]]) -> dict[str, np.ndarray]:
    """Calibrated scores of (N, 2) raw scores under each rule (as :class:`PatchCoreNet` computes them)."""

    def z(v: np.ndarray, c: tuple[float, float]) -> np.ndarray:
        return (np.log(np.maximum(v.astype(np.float64), 1e-6)) - c[0]) / c[1]

    out = {"patch": z(raw[:, 0], cal["patch"])}
    if "image" in cal:
        out["image"] = z(raw[:, 1], cal["image"])
        out["mix"] = 0.5 * (out["patch"] + out["image"])
    return {k: (1.0 / (1.0 + np.exp(-v))).astype(np.float32) for k, v in out.items()}


def _auc(scores: np.ndarray, is_defect: np.ndarray) -> float | None:
    if is_defect.all() or not is_defect.any():
        return None
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(is_defect, scores))


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


MIN_RULE_GAIN = 0.005  # validation ROC AUC another rule must add over patch to replace it


def choose_rule(asked: str, val_auc: dict[str, float | None]) -> tuple[str, str]:
    """(score rule, why): ``asked`` unless it is ``auto``; then the best validation ROC AUC, where a rule other
    than patch must beat patch by ``MIN_RULE_GAIN`` (patch's score is what the map shows, and a few validation
    defects make a noisy AUC); patch when validation has no defect images (no AUC to choose by)."""
    if asked != "auto":
        return asked, "--score-rule"
    if any(val_auc.get(r) is None for r in RULES):
        return "patch", "no defect images in validation to choose a rule on"
    best = max(RULES, key=lambda r: (val_auc[r], -RULES.index(r)))
    if val_auc[best] < val_auc["patch"] + MIN_RULE_GAIN:
        best = "patch"
    aucs = ", ".join(f"{r} {val_auc[r]:.4f}" for r in RULES)
    return best, f"best validation ROC AUC of {aucs} (another rule must beat patch by {MIN_RULE_GAIN})"


def train_anomaly(o: AnomalyOptions, console: Console | None = None) -> Path:
    """Fit, calibrate, save and export an anomaly model; returns the path of ``model.pt``."""
    from rich.console import Console
    from rich.progress import Progress

    console = console or Console(stderr=True)
    t_start = time.perf_counter()
    torch.set_num_threads(o.threads or 2)
    if not 0.5 <= o.good_quantile <= 1.0:
        raise UserError(f"--good-quantile must be in [0.5, 1], got {o.good_quantile}")
    if o.bank_size < 1 or o.max_patches < o.bank_size:
        raise UserError(f"--bank-size must be >= 1 and <= --max-patches ({o.max_patches}), got {o.bank_size}")
    if not 0.0 <= o.score_fraction <= 1.0:
        raise UserError(f"--score-fraction must be in [0, 1] (0: the largest patch alone), got {o.score_fraction}")
    if o.score_rule not in ("auto", *RULES):
        raise UserError(f"--score-rule {o.score_rule!r}: one of auto, {', '.join(RULES)}")
    if o.image_bank_size < 1:
        raise UserError(f"--image-bank-size must be >= 1, got {o.image_bank_size}")
    if o.img_size < 32 or o.img_size % 16:
        raise UserError(f"--img-size {o.img_size}: anomaly mode needs a multiple of 16, at least 32 (e.g. 224)")
    root = Path(o.data)
    ok, files = index_folder(root, o.ok_class)
    defect_classes = [c for c in files if c != ok]
    if len(files[ok]) < MIN_GOOD:
        raise UserError(
            f"{root / ok}: {len(files[ok])} good image(s); anomaly mode needs at least {MIN_GOOD} "
            "(a few hundred for a real line)"
        )
    defect_name = defect_classes[0] if len(defect_classes) == 1 else "defect"
    classes = sorted([ok, defect_name])
    meta = ModelMeta(ARCH, classes, ok, o.img_size, 3, list(IMAGENET_MEAN), list(IMAGENET_STD), 0.5, {}, kind="anomaly")
    weights = lite0_weights_path()
    n_files = sum(len(v) for v in files.values())
    with Progress(console=console, transient=True) as prog:
        task = prog.add_task("decoding images", total=n_files)
        good = _decode(root, files[ok], ok, meta, lambda: prog.advance(task))
        bad = [_decode(root, files[c], c, meta, lambda: prog.advance(task)) for c in defect_classes]
    if len(good.keys) < MIN_GOOD:
        raise UserError(f"{root / ok}: only {len(good.keys)} readable good image(s); need at least {MIN_GOOD}")
    defects = _Images(
        sum((b.keys for b in bad), []),
        sum((b.labels for b in bad), []),
        np.concatenate([b.images for b in bad]) if bad else good.images[:0],
        np.concatenate([b.hashes for b in bad]) if bad else good.hashes[:0],
    )
    split = group_split(np.zeros(len(good.keys), np.int64), good.hashes, seed=o.seed, max_distance=o.dup_distance)
    gi = {s: split.indices(s) for s in ("train", "val", "test")}
    if any(len(v) == 0 for v in gi.values()):
        raise UserError(
            f"{root / ok}: too few distinct good images to split into train/validation/test "
            f"({ {k: len(v) for k, v in gi.items()} }); add images"
        )
    dv, dt = _split_defects(defects.hashes, o.max_val_defects, o.seed, o.dup_distance)
    if o.max_test_defects is not None and len(dt) > o.max_test_defects:  # a fixed-seed sample, said in the output
        dt = np.sort(np.random.default_rng(o.seed).choice(dt, size=o.max_test_defects, replace=False))
    console.print(
        f"data: {len(good.keys)} good ({ok}) -> train/val/test {[len(gi[s]) for s in gi]}; "
        f"{len(defects.keys)} defect images {defect_classes or '(none)'} -> val/test {len(dv)}/{len(dt)}"
    )

    # --- the memory bank ----------------------------------------------------------------------------------
    t_fit = time.perf_counter()
    trunk = pretrained_lite0(weights)
    feats, tail = Lite0Features(trunk).eval(), Lite0Tail(trunk).eval()
    train_imgs = good.images[gi["train"]]
    per_image = max(1, o.max_patches // len(train_imgs))  # per view: mirrored views add their own share
    views = (None, 3, 2) if o.bank_flips else (None,)  # as photographed; mirrored left-right; top-bottom (NCHW)
    rng = np.random.default_rng(o.seed)
    pool: list[torch.Tensor] = []
    whole: list[torch.Tensor] = []  # one whole-image feature per training image and view
    n_patches = 0
    with torch.inference_mode(), Progress(console=console, transient=True) as prog:
        task = prog.add_task("patch features", total=len(train_imgs) * len(views))
        for x0 in _batches(train_imgs, meta, o.batch_size):
            for flip in views:
                x = x0 if flip is None else torch.flip(x0, dims=(flip,))
                maps = feats(x)
                whole.append(tail(maps[-1]))
                f = patch_features(maps)  # (B, D, h, w)
                rows = f.flatten(2).transpose(1, 2)  # (B, h*w, D)
                n_patches += rows.shape[0] * rows.shape[1]
                for r in rows:
                    if per_image < len(r):
                        r = r[torch.from_numpy(np.sort(rng.choice(len(r), size=per_image, replace=False)))]
                    pool.append(r.clone())
                prog.advance(task, len(x))
    patches = torch.cat(pool)
    grid = int(round(math.sqrt(rows.shape[1])))
    t_feat = time.perf_counter() - t_fit
    m = min(o.bank_size, len(patches))
    t0 = time.perf_counter()
    with torch.inference_mode():
        chosen = greedy_coreset(patches, m, seed=o.seed)
    bank = patches[chosen].clone()
    images_bank = torch.cat(whole)
    if len(images_bank) > o.image_bank_size:
        with torch.inference_mode():
            images_bank = images_bank[greedy_coreset(images_bank, o.image_bank_size, seed=o.seed)].clone()
    t_coreset = time.perf_counter() - t0
    del pool, patches, whole
    console.print(
        f"memory bank: {m} x {bank.shape[1]} float32 ({bank.numel() * 4 / 1e6:.1f} MB) by greedy coreset "
        f"from {n_patches} patches ({grid}x{grid} per image{', mirrored views too' if o.bank_flips else ''}, "
        f"{min(per_image, grid * grid)} per image "
        f"sampled); image bank {len(images_bank)} x {images_bank.shape[1]} "
        f"({images_bank.numel() * 4 / 1e6:.1f} MB); features {t_feat:.0f} s, coreset {t_coreset:.0f} s"
    )
    top_k = score_top_k(grid * grid, o.score_fraction)
    # scored every way first (the whole-image tail and bank aboard); the rule kept decides what is saved
    net = PatchCoreNet(feats, bank, input_size=o.img_size, top_k=top_k, tail=tail, image_bank=images_bank).eval()

    # --- calibration and threshold -------------------------------------------------------------------------
    t0 = time.perf_counter()
    g_val = raw_scores(net, good.images[gi["val"]], meta, o.batch_size)
    d_val = raw_scores(net, defects.images[dv], meta, o.batch_size)
    cal = {"patch": _calibration(g_val[:, 0], o.good_quantile), "image": _calibration(g_val[:, 1], o.good_quantile)}
    val_true = [ok] * len(g_val) + [defect_name] * len(d_val)
    val_def = np.array([t != ok for t in val_true])
    val_all = _rule_scores(np.concatenate([g_val, d_val]), cal)
    g_test = raw_scores(net, good.images[gi["test"]], meta, o.batch_size)
    d_test = raw_scores(net, defects.images[dt], meta, o.batch_size)
    test_true = [ok] * len(g_test) + [defect_name] * len(d_test)
    test_all = _rule_scores(np.concatenate([g_test, d_test]), cal)
    test_def = np.array([t != ok for t in test_true])
    rules = {r: {"val_roc_auc": _auc(val_all[r], val_def), "test_roc_auc": _auc(test_all[r], test_def)} for r in RULES}
    rule, why = choose_rule(o.score_rule, {r: v["val_roc_auc"] for r, v in rules.items()})
    if rule == "patch":  # no whole-image tail or bank in the saved model: as models before the rule
        net = PatchCoreNet(feats, bank, input_size=o.img_size, top_k=top_k).eval()
    else:
        net.rule = rule
        net.image_log_centre.fill_(cal["image"][0])
        net.image_scale.fill_(cal["image"][1])
    net.log_centre.fill_(cal["patch"][0])
    net.scale.fill_(cal["patch"][1])
    log_centre, scale = cal["patch"]
    centre = math.exp(log_centre)
    val_scores, test_scores = val_all[rule], test_all[rule]
    recall = o.target_recall if o.target_recall is not None else 0.95
    if len(d_val):
        choice = choose_threshold(val_scores, val_def, recall)
        meta.threshold = choice.threshold
        how = {**choice.to_dict(), "chosen_on": "val", "rule": f"defect recall >= {recall} on validation"}
        quality = judge_quality(val_scores, val_def, recall, o.min_auc, o.max_false_reject)
    else:
        _, _, frr = rates_at(val_scores, val_def, 0.5)
        how = {
            "threshold": 0.5,
            "rule": f"good-image quantile {o.good_quantile} (no defect images)",
            "false_reject_rate": frr,
            "n_ok": len(g_val),
            "n_defect": 0,
            "chosen_on": "val",
        }
        quality = {"weak": False, "judged": False, "reasons": [], "note": "no defect images in validation to judge"}
    t_score = time.perf_counter() - t0
    metrics = {"val": _figures(meta, val_scores, val_true), "test": _figures(meta, test_scores, test_true)}
    train_s = time.perf_counter() - t_start
    meta.extra.update(
        anomaly={
            "method": "PatchCore-style: EfficientNet-Lite0 (ImageNet, timm tf_efficientnet_lite0) stages 2+4 "
            "(strides 8, 16), 3x3 average, upsampled to stride 8, concatenated; greedy k-centre "
            "coreset (random projection to 32 dims); nearest-neighbour L2 (MatMul + TopK k=1); "
            f"patch score = mean of the top {top_k} patch scores; whole-image score = L2 to the nearest good "
            "training image's pooled 1280-value feature (stages 5-6 + head); score rule patch, image, or mix "
            "(mean of both logistic arguments); sigmoid((ln d - ln centre) / scale)",
            "score_rule": rule,
            "score_rule_why": why,
            "rules": rules,
            "bank_shape": [int(m), int(bank.shape[1])],
            "bank_mb": round(bank.numel() * 4 / 1e6, 2),
            "patch_grid": [grid, grid],
            "score_top_k": int(top_k),
            "score_fraction": o.score_fraction,
            "bank_flips": o.bank_flips,
            "patches_seen": int(n_patches),
            "patches_per_image_sampled": int(min(per_image, grid * grid)),
            "centre": centre,
            "log_centre": log_centre,
            "scale": scale,
            **(
                {
                    "image_bank_shape": [int(images_bank.shape[0]), int(images_bank.shape[1])],
                    "image_bank_mb": round(images_bank.numel() * 4 / 1e6, 2),
                    "image_log_centre": cal["image"][0],
                    "image_scale": cal["image"][1],
                }
                if rule != "patch"
                else {}
            ),
            "test_defects": f"a fixed-seed sample of {len(dt)}"
            if o.max_test_defects is not None and len(dt) == o.max_test_defects
            else "all not in validation",
            "good_quantile": o.good_quantile,
            "weights": weights.name,
            "defect_classes": defect_classes,
        },
        threshold_choice=how,
        quality=quality,
        data={
            "root": str(root),
            "ok_class": ok,
            "counts": {ok: len(good.keys), **{b.labels[0]: len(b.keys) for b in bad if b.keys}},
        },
        split={
            **{k: v for k, v in split.report.items() if k != "counts"},
            "counts": {"train": len(gi["train"]), "val": len(gi["val"]) + len(dv), "test": len(gi["test"]) + len(dt)},
            "digest": {"train": split_digest([good.keys[i] for i in gi["train"]])},
            "val": sorted([good.keys[i] for i in gi["val"]] + [defects.keys[i] for i in dv]),
            "test": sorted([good.keys[i] for i in gi["test"]] + [defects.keys[i] for i in dt]),
        },
        metrics=metrics,
        training={
            "train_seconds": round(train_s, 1),
            "feature_seconds": round(t_feat, 1),
            "coreset_seconds": round(t_coreset, 1),
            "scoring_seconds": round(t_score, 1),
            "peak_rss_mb": round(_peak_rss_mb(), 1),
            "threads": torch.get_num_threads(),
            "seed": o.seed,
            "torch": torch.__version__,
        },
    )
    o.out.mkdir(parents=True, exist_ok=True)
    model_path = o.out / "model.pt"
    save_checkpoint(model_path, net.state_dict(), meta)
    v, t = metrics["val"], metrics["test"]
    console.print(f"score rule: {rule} ({why})")
    console.print(
        f"threshold {meta.threshold:.4f} ({how['rule']}); val: ROC AUC {v.get('roc_auc', float('nan')):.4f}"
        f", recall {v['recall']:.4f}, false rejects {v['false_reject_rate']:.4f}"
    )
    console.print(
        f"test ({t['n_images']} held-out images): ROC AUC {t.get('roc_auc', float('nan')):.4f} accuracy "
        f"{t['accuracy']:.4f} recall {t['recall']:.4f} false rejects {t['false_reject_rate']:.4f}; "
        f"trained in {train_s:.0f} s, peak memory {_peak_rss_mb():.0f} MB; wrote {model_path}"
    )
    if o.export:
        from engines.anomaly_export import export_anomaly_onnx

        onnx_path = export_anomaly_onnx(
            model_path, o.out / "model.onnx", net=net, meta=meta, check_images=good.images[gi["val"]][:16]
        )
        parity = meta.extra.get("parity", {})
        console.print(
            f"exported {onnx_path}: torch vs ONNX Runtime on {parity.get('n')} held-out good images, "
            f"largest score difference {parity.get('max_score_diff', float('nan')):.2e}, map "
            f"{parity.get('max_map_diff', float('nan')):.2e}, verdicts that differ {parity.get('flips')}"
        )
    return model_path


def _figures(meta: ModelMeta, scores: np.ndarray, true: list[str]) -> dict:
    m = compute_metrics(meta, scores[:, None], true)
    d = m.get("defect_vs_ok", {})
    out = {k: m[k] for k in ("n_images", "accuracy", "precision", "recall", "threshold") if k in m}
    out.update(
        {
            k: d[k]
            for k in ("roc_auc", "average_precision", "n_ok", "n_defect", "false_rejects", "missed_defects")
            if k in d
        }
    )
    out["false_reject_rate"] = d.get("false_rejects", 0) / max(1, d.get("n_ok", 0))
    return out


def maps_png(model: Path, meta: ModelMeta, scored: Scored, path: Path, per_group: int = 8) -> str:
    """Grid of anomaly maps over the judged images: the worst mistakes first, then correct parts of each class.

    ``evaluate`` shows this instead of Grad-CAM for anomaly models: the map is the model's own explanation.
    """
    import cv2

    from engines.base import load_engine
    from engines.heatmap import overlay_heatmap
    from engines.preprocess import preprocess

    scores = meta.defect_scores(scored.probs)
    pred = [meta.defect_class if s >= meta.threshold else meta.ok_class for s in scores]
    conf = np.abs(scores - meta.threshold)
    wrong = [i for i in np.argsort(-conf) if pred[i] != scored.true[i]][:per_group]
    right: list[int] = []
    for cls in meta.classes:
        right += [i for i in np.argsort(-scores) if pred[i] == scored.true[i] == cls][: max(1, per_group // 2)]
    picks = [(i, "wrong") for i in wrong] + [(i, "correct") for i in right[:per_group]]
    if not picks:
        return "skipped: nothing to show"
    engine = load_engine(model, warm_up=False)
    try:
        images = [read_image(scored.items[i].path) for i, _ in picks]
        engine.infer(preprocess(images, meta))
        maps = engine.last_maps
    finally:
        engine.close()
    if maps is None:
        return f"skipped: {model.name} returns no anomaly map"
    tiles = []
    side = 160
    for (i, kind), img, amap in zip(picks, images, maps, strict=True):
        view = cv2.resize(to_model_image(img, meta), (side, side))[:, :, ::-1]  # model view, back to BGR
        tile = np.hstack([view, overlay_heatmap(view, amap)])
        # "correct"/"wrong" (not "right"/"ok", which read like a class), on a dark band so it reads on any image
        label = f"{kind}: is {scored.true[i]}, P(defect) {scores[i]:.2f}"
        band = np.zeros((22, tile.shape[1], 3), np.uint8)
        colour = (80, 80, 255) if kind == "wrong" else (255, 255, 255)
        cv2.putText(band, label, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1, cv2.LINE_AA)
        tiles.append(np.vstack([band, tile]))
    cols = 2
    while len(tiles) % cols:
        tiles.append(np.zeros_like(tiles[0]))
    grid = np.vstack([np.hstack(tiles[r : r + cols]) for r in range(0, len(tiles), cols)])
    cv2.imwrite(str(path), grid)
    return str(path)

"""Evaluation figures: confusion matrix, ROC + precision-recall, and a Grad-CAM grid (pytorch-grad-cam)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from engines.meta import ModelMeta

log = logging.getLogger(__name__)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def confusion_png(metrics: dict, path: Path) -> None:
    plt = _plt()
    from sklearn.metrics import ConfusionMatrixDisplay

    cm = np.asarray(metrics.get("class_confusion_matrix", metrics["confusion_matrix"]))
    labels = metrics["classes"] if "class_confusion_matrix" in metrics else metrics["confusion_matrix_labels"]
    fig, ax = plt.subplots(figsize=(2 + 0.9 * len(labels), 1.6 + 0.9 * len(labels)))
    ConfusionMatrixDisplay(cm, display_labels=labels).plot(
        ax=ax, cmap="Blues", colorbar=False, xticks_rotation=45 if len(labels) > 2 else 0
    )
    ax.set_title(f"n={metrics['n_images']}  accuracy {metrics['accuracy']:.4f}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def roc_pr_png(meta: ModelMeta, probs: np.ndarray, is_defect: np.ndarray, path: Path) -> None:
    """ROC and precision-recall curves of P(defect), with the operating threshold marked."""
    plt = _plt()
    from sklearn.metrics import auc, precision_recall_curve, roc_curve

    s = meta.defect_scores(probs)
    fpr, tpr, _ = roc_curve(is_defect, s)
    prec, rec, _ = precision_recall_curve(is_defect, s)
    pred = s >= meta.threshold
    op_tpr = (pred & is_defect).sum() / max(1, is_defect.sum())
    op_fpr = (pred & ~is_defect).sum() / max(1, (~is_defect).sum())
    op_prec = (pred & is_defect).sum() / max(1, pred.sum())
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4.2))
    a.plot(fpr, tpr, label=f"AUC {auc(fpr, tpr):.4f}")
    a.plot([op_fpr], [op_tpr], "ro", label=f"threshold {meta.threshold:.3f}")
    a.set_xlabel("false-reject rate (OK parts rejected)")
    a.set_ylabel("defect recall")
    a.set_title("ROC")
    a.legend(loc="lower right")
    b.plot(rec, prec)
    b.plot([op_tpr], [op_prec], "ro", label=f"threshold {meta.threshold:.3f}")
    b.set_xlabel("defect recall")
    b.set_ylabel("precision")
    b.set_title("precision-recall")
    b.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _target_layer(net, arch: str):
    if arch == "seedcnn":
        return [m for m in net.features if m.__class__.__name__ == "ReLU"][-1]
    if arch == "resnet18":
        return net.layer4[-1]
    if arch == "efficientnet_lite0":
        return net.bn2  # timm: the head convolution's BatchNorm + ReLU6, the last spatial map
    return net.features[-1]


def _checkpoint_for(model: Path) -> Path | None:
    if model.suffix.lower() == ".pt":
        return model
    beside = model.with_suffix(".pt")
    return beside if beside.is_file() else None


#: caption size in the Grad-CAM grid: legible when the PNG is shown at its saved size (80 dpi)
CAPTION_PT = 9


def gradcam_caption(kind: str, true: str, pred: str, p_defect: float) -> str:
    """One tile's caption. "correct"/"wrong" say whether the model was right: "ok"/"true" read like class names."""
    return f"{kind}: is {true}\nmodel said {pred}\nP(defect) {p_defect:.2f}"


def gradcam_png(model: Path, meta: ModelMeta, scored, path: Path, per_group: int = 8) -> str:
    """Grid of Grad-CAM overlays: the most confident mistakes, then correct parts of each class."""
    ckpt = _checkpoint_for(model)
    if ckpt is None:
        log.warning("Grad-CAM skipped: needs the .pt checkpoint beside %s", model)
        return f"skipped: no checkpoint {model.with_suffix('.pt').name} beside {model.name}"
    import torch
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.image import show_cam_on_image
    from pytorch_grad_cam.utils.model_targets import BinaryClassifierOutputTarget, ClassifierOutputTarget

    from engines.archs import build_network, load_weights
    from engines.checkpoint import load_checkpoint
    from engines.preprocess import normalize, to_model_image
    from training.data import read_image

    _, state, _ = load_checkpoint(ckpt)
    net = load_weights(build_network(meta), state, meta, ckpt)
    net.eval()
    pred = meta.predicted_classes(scored.probs)
    conf = scored.probs.max(axis=1) if not meta.binary else np.abs(scored.probs[:, 0] - meta.threshold)
    wrong = [i for i in np.argsort(-conf) if pred[i] != scored.true[i]][:per_group]
    right: list[int] = []
    for cls in meta.classes:
        right += [i for i in range(len(pred)) if pred[i] == scored.true[i] == cls][: max(1, per_group // 2)]
    picks = [(i, "wrong") for i in wrong] + [(i, "correct") for i in right[:per_group]]
    if not picks:
        return "skipped: nothing to show"
    images = [to_model_image(read_image(scored.items[i].path), meta) for i, _ in picks]
    x = torch.from_numpy(normalize(np.stack(images), meta))
    if meta.binary:
        targets = [BinaryClassifierOutputTarget(int(pred[i] != meta.ok_class)) for i, _ in picks]
    else:
        targets = [ClassifierOutputTarget(meta.classes.index(pred[i])) for i, _ in picks]
    with GradCAM(model=net, target_layers=[_target_layer(net, meta.arch)]) as cam:
        masks = cam(input_tensor=x, targets=targets)
    plt = _plt()
    cols = min(8, len(picks))
    rows = (len(picks) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 3.1 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (i, kind), img, mask in zip(axes.ravel(), picks, images, masks, strict=False):
        rgb = np.repeat(img, 3, axis=2) if img.shape[2] == 1 else img
        ax.imshow(show_cam_on_image(rgb.astype(np.float32) / 255.0, mask, use_rgb=True))
        score = meta.defect_scores(scored.probs[i : i + 1])[0]
        ax.set_title(
            gradcam_caption(kind, scored.true[i], pred[i], float(score)),
            fontsize=CAPTION_PT,
            color="red" if kind == "wrong" else "black",
        )
    fig.suptitle(f"Grad-CAM: {len(wrong)} misclassified, {len(picks) - len(wrong)} correct")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return str(path)

"""Classification figures (scikit-learn), shared by training's final report and `inspector evaluate`.

"Positive" is a defect: precision = share of rejected parts that were defective, recall = share of defective
parts that were rejected (a missed defect is the costly error).
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    classification_report,
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
)

from engines.meta import ModelMeta


def compute_metrics(meta: ModelMeta, probs: np.ndarray, true: list[str], threshold: float | None = None) -> dict:
    """Metrics of model outputs ``probs`` against class names ``true`` (in the model's class names)."""
    thr = meta.threshold if threshold is None else float(threshold)
    pred = meta.predicted_classes(probs, thr)
    classes = list(meta.classes)
    out: dict = {
        "n_images": len(true),
        "accuracy": float(accuracy_score(true, pred)) if true else float("nan"),
        "threshold": thr,
        "classes": classes,
        "ok_class": meta.ok_class,
    }
    if meta.ok_class is not None:
        ok = meta.ok_class
        y = np.array([c != ok for c in true], dtype=bool)
        yp = np.array([c != ok for c in pred], dtype=bool)
        scores = meta.defect_scores(probs)
        p, r, f, _ = precision_recall_fscore_support(y, yp, average="binary", zero_division=0)
        cm = confusion_matrix(y, yp, labels=[False, True])
        dvo = {
            "precision": float(p),
            "recall": float(r),
            "f1": float(f),
            "confusion_matrix": cm.tolist(),
            "confusion_matrix_labels": ["ok", "defect"],
            "missed_defects": int(cm[1, 0]),
            "false_rejects": int(cm[0, 1]),
            "n_defect": int(y.sum()),
            "n_ok": int((~y).sum()),
        }
        if 0 < y.sum() < len(y):
            dvo["roc_auc"] = float(roc_auc_score(y, scores))
            dvo["average_precision"] = float(average_precision_score(y, scores))
        out["defect_vs_ok"] = dvo
        out.update({k: dvo[k] for k in ("precision", "recall", "f1", "confusion_matrix")})
        out["confusion_matrix_labels"] = dvo["confusion_matrix_labels"]
    if not meta.binary:
        p, r, f, s = precision_recall_fscore_support(true, pred, labels=classes, zero_division=0)
        out["per_class"] = {
            c: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i, c in enumerate(classes)
        }
        mp, mr, mf, _ = precision_recall_fscore_support(true, pred, labels=classes, average="macro", zero_division=0)
        out["macro"] = {"precision": float(mp), "recall": float(mr), "f1": float(mf)}
        out["class_confusion_matrix"] = confusion_matrix(true, pred, labels=classes).tolist()
        if meta.ok_class is None:  # no OK class: the headline figures are the macro averages
            out.update({"precision": float(mp), "recall": float(mr), "f1": float(mf)})
            out["confusion_matrix"] = out["class_confusion_matrix"]
            out["confusion_matrix_labels"] = classes
    out["report"] = classification_report(true, pred, labels=classes, digits=4, zero_division=0)
    return out

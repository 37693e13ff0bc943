"""Final metrics on the test split: accuracy, confusion matrix, per-class precision, recall and F1."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support


def classification_report(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> dict:
    labels = list(range(num_classes))
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels,
                                                                     zero_division=0)
    return {
        "test_accuracy": float((y_true == y_pred).mean()) if len(y_true) else 0.0,
        "test_macro_f1": float(f1.mean()),
        "test_samples": int(len(y_true)),
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "per_class": [{"class": c, "precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                      for c, p, r, f, s in zip(labels, precision, recall, f1, support)],
    }


CHANCE_MARGIN = 0.02  # how far above chance a classifier's test accuracy must be to count as having learned


def chance_accuracy(report: dict) -> float | None:
    """The test accuracy of always answering the most common test label, from a report's confusion matrix;
    None without one."""
    matrix = report.get("confusion_matrix")
    total = sum(map(sum, matrix)) if matrix else 0
    return max(map(sum, matrix)) / total if total else None

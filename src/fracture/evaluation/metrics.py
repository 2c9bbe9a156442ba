"""Pure numpy metrics for evaluation (no Keras): easy to check against hand-computed cases.

Conventions: `y_true`/`y_pred` are integer class ids, `probs` is `(N, C)`. A class with no
true instances has no recall, F1 or AUC: it is listed under `no_support` and left out of
every average, never averaged in as 0 or 1.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

Z_95 = 1.959963984540054


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95% by default); NaNs when n = 0."""
    if n == 0:
        return (math.nan, math.nan)
    p = successes / n
    denominator = 1 + z**2 / n
    centre = (p + z**2 / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> np.ndarray:
    """Counts, rows = true class, columns = predicted class."""
    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)), 1)
    return matrix


def classification_report(y_true: Sequence[int], y_pred: Sequence[int], class_names: Sequence[str]) -> dict:
    """Per-class precision/recall/F1/support (recall with a Wilson CI), macro and weighted
    averages over classes with support, accuracy with a Wilson CI."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    matrix = confusion_matrix(y_true, y_pred, len(class_names))
    per_class, no_support = {}, []
    for c, name in enumerate(class_names):
        tp, support, predicted = int(matrix[c, c]), int(matrix[c].sum()), int(matrix[:, c].sum())
        if support == 0:
            no_support.append(name)
            continue
        precision = tp / predicted if predicted else 0.0
        recall = tp / support
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {
            "precision": precision,
            "recall": recall,
            "recall_ci95": wilson_interval(tp, support),
            "f1": f1,
            "support": support,
            "predicted": predicted,
        }
    supports = np.array([m["support"] for m in per_class.values()], float)

    def average(key):
        values = np.array([m[key] for m in per_class.values()], float)
        if not len(values):
            return {"macro": math.nan, "weighted": math.nan}
        return {"macro": float(values.mean()), "weighted": float((values * supports).sum() / supports.sum())}

    correct = int((y_true == y_pred).sum())
    return {
        "images": int(len(y_true)),
        "accuracy": correct / len(y_true) if len(y_true) else math.nan,
        "accuracy_ci95": wilson_interval(correct, len(y_true)),
        "per_class": per_class,
        "no_support": no_support,
        "precision": average("precision"),
        "recall": average("recall"),
        "f1": average("f1"),
        "confusion_matrix": matrix.tolist(),
    }


def roc_curve(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate, thresholds), thresholds descending."""
    order = np.argsort(-scores, kind="mergesort")
    scores, positive = scores[order], positive[order].astype(bool)
    distinct = np.r_[np.nonzero(np.diff(scores))[0], len(scores) - 1]
    tps = np.cumsum(positive)[distinct]
    fps = (distinct + 1) - tps
    tpr = np.r_[0.0, tps / max(positive.sum(), 1)]
    fpr = np.r_[0.0, fps / max((~positive).sum(), 1)]
    return fpr, tpr, np.r_[np.inf, scores[distinct]]


def roc_auc(scores: Sequence[float], positive: Sequence[bool]) -> float:
    """Area under the ROC curve (ties count half); NaN without both positives and negatives."""
    scores, positive = np.asarray(scores, float), np.asarray(positive, bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = _average_ranks(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), float)
    sorted_values = values[order]
    start = 0
    for end in range(1, len(values) + 1):
        if end == len(values) or sorted_values[end] != sorted_values[start]:
            ranks[order[start:end]] = (start + end + 1) / 2  # 1-based average rank of the tie block
            start = end
    return ranks


def one_vs_rest_auc(y_true: Sequence[int], probs: np.ndarray, class_names: Sequence[str]) -> dict:
    """Per-class one-vs-rest ROC-AUC and their macro mean over classes where it is defined."""
    y_true = np.asarray(y_true)
    per_class = {name: roc_auc(probs[:, c], y_true == c) for c, name in enumerate(class_names)}
    defined = [v for v in per_class.values() if not math.isnan(v)]
    return {"per_class": per_class, "macro": float(np.mean(defined)) if defined else math.nan}


def expected_calibration_error(confidence: Sequence[float], correct: Sequence[bool], bins: int = 15) -> dict:
    """ECE over equal-width confidence bins: sum_b |acc_b - conf_b| * n_b / N, with the bins."""
    confidence, correct = np.asarray(confidence, float), np.asarray(correct, float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    table, ece = [], 0.0
    for b in range(bins):
        mask = which == b
        n = int(mask.sum())
        if n:
            accuracy, mean_confidence = float(correct[mask].mean()), float(confidence[mask].mean())
            ece += abs(accuracy - mean_confidence) * n / len(confidence)
            table.append({"low": edges[b], "high": edges[b + 1], "count": n, "accuracy": accuracy, "confidence": mean_confidence})
    return {"ece": float(ece), "bins": table}


def threshold_for_sensitivity(scores: Sequence[float], positive: Sequence[bool], target: float) -> float:
    """The highest threshold (score >= t is positive) whose sensitivity reaches `target`.

    Chosen on the validation split and then applied unchanged to test.
    """
    scores, positive = np.asarray(scores, float), np.asarray(positive, bool)
    if not positive.any():
        raise ValueError("No positive images to choose a screening threshold on.")
    positives = np.sort(scores[positive])[::-1]
    needed = max(1, math.ceil(target * len(positives) - 1e-9))
    return float(positives[needed - 1])


def screening_metrics(scores: Sequence[float], positive: Sequence[bool], threshold: float) -> dict:
    """Sensitivity, specificity, PPV and NPV (each with a Wilson CI) at `threshold`."""
    scores, positive = np.asarray(scores, float), np.asarray(positive, bool)
    flagged = scores >= threshold
    tp, fn = int((flagged & positive).sum()), int((~flagged & positive).sum())
    tn, fp = int((~flagged & ~positive).sum()), int((flagged & ~positive).sum())

    def rate(k, n):
        return {"value": k / n if n else math.nan, "ci95": wilson_interval(k, n), "k": k, "n": n}

    return {
        "threshold": float(threshold),
        "tp": tp, "fn": fn, "tn": tn, "fp": fp,
        "sensitivity": rate(tp, tp + fn),
        "specificity": rate(tn, tn + fp),
        "ppv": rate(tp, tp + fp),
        "npv": rate(tn, tn + fn),
    }


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise IoU of two `(N, 4)` normalized xyxy arrays."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    lt, rb = np.maximum(a[:, :2], b[:, :2]), np.minimum(a[:, 2:], b[:, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
    area = lambda x: np.prod(np.clip(x[:, 2:] - x[:, :2], 0, None), axis=1)  # noqa: E731
    union = area(a) + area(b) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def critical_errors(
    y_true: Sequence[int], y_pred: Sequence[int], confidence: Sequence[float], pairs: Sequence[Sequence[str]], class_names: Sequence[str]
) -> dict:
    """Count configured clinically important (true, predicted) confusions and list the cases,
    most confident first. `"*"` as the true class means every other class (so
    `["*", "no finding"]` counts missed fractures per class). Pairs naming an unknown class
    are reported, not ignored."""
    names = list(class_names)
    y_true, y_pred, confidence = np.asarray(y_true), np.asarray(y_pred), np.asarray(confidence)
    out, unknown = [], []
    expanded = []
    for true_name, predicted_name in pairs:
        if true_name == "*":
            expanded += [(n, predicted_name) for n in names if n != predicted_name] if predicted_name in names else [(true_name, predicted_name)]
        else:
            expanded.append((true_name, predicted_name))
    for true_name, predicted_name in expanded:
        if true_name not in names or predicted_name not in names:
            unknown.append([true_name, predicted_name])
            continue
        idx = np.nonzero((y_true == names.index(true_name)) & (y_pred == names.index(predicted_name)))[0]
        idx = idx[np.argsort(-confidence[idx])]
        out.append({"true": true_name, "predicted": predicted_name, "count": int(len(idx)), "indices": idx.tolist()})
    return {"pairs": out, "total": int(sum(p["count"] for p in out)), "unknown_pairs": unknown}

"""Pure numpy metrics for evaluation (no Keras): easy to check against hand-computed cases.

Conventions: `y_true`/`y_pred` are integer class ids, `probs` is `(N, C)`. A class with no
true instances has no recall, F1 or AUC: it is listed under `no_support` and left out of
every average, never averaged in as 0 or 1.

Undefined values. A metric that has no value on the data at hand (precision of a class
never predicted, AUC with one class present, a rate or a Wilson CI with n = 0, ECE of no
images) is NaN, never 0.0 or 1.0, and the dict that holds it says why: every metrics
block returned here has an `undefined` dict mapping the path of each NaN value inside
that block (keys joined by "/", e.g. `"per_class/elbow/precision"`, `"macro"`,
`"sensitivity/ci95"`) to the reason in words. `undefined` is always present (empty when
everything is defined), and `nan_paths(block)` lists exactly its keys, which the tests
check. metrics.json writes NaN as null, so a reader finds null with its reason beside it.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

Z_95 = 1.959963984540054
UNDEFINED = "undefined"
NO_IMAGES = "no images"
PATH_SEPARATOR = "/"


def nan_paths(block, prefix: str = "") -> list[str]:
    """Paths (keys joined by "/") of the NaN values in a metrics block, `undefined` skipped.

    A sequence holding a NaN (a confidence interval) is one path, not one per element.
    """
    if isinstance(block, dict):
        found = []
        for key, value in block.items():
            if key != UNDEFINED:
                found += nan_paths(value, f"{prefix}{PATH_SEPARATOR}{key}" if prefix else str(key))
        return found
    if isinstance(block, (list, tuple)):
        return [prefix] if any(_is_nan(v) for v in block) else []
    return [prefix] if _is_nan(block) else []


def _is_nan(value) -> bool:
    return isinstance(value, (float, np.floating)) and math.isnan(value)


def metric_path(*keys) -> str:
    """The key of a value in a block's `undefined` dict: its keys joined by "/"."""
    return PATH_SEPARATOR.join(str(k) for k in keys)


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
    averages over classes with support, accuracy with a Wilson CI.

    A class with support that is never predicted has no precision (NaN, listed under
    `never_predicted`) and is left out of the precision averages; its F1 is 0, which is
    defined (F1 = 2TP / (2TP + FP + FN) and FN > 0): every one of its images was missed.
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    matrix = confusion_matrix(y_true, y_pred, len(class_names))
    undefined: dict[str, str] = {}
    per_class, no_support, never_predicted = {}, [], []
    for c, name in enumerate(class_names):
        tp, support, predicted = int(matrix[c, c]), int(matrix[c].sum()), int(matrix[:, c].sum())
        if support == 0:
            no_support.append(name)
            continue
        if not predicted:
            never_predicted.append(name)
            undefined[metric_path("per_class", name, "precision")] = f"no image was predicted as {name}"
        per_class[name] = {
            "precision": tp / predicted if predicted else math.nan,
            "recall": tp / support,
            "recall_ci95": wilson_interval(tp, support),
            "f1": 2 * tp / (support + predicted),  # 2TP / (2TP + FN + FP)
            "support": support,
            "predicted": predicted,
        }
    averages = {key: _class_average(per_class, key, undefined) for key in ("precision", "recall", "f1")}
    correct = int((y_true == y_pred).sum())
    if not len(y_true):
        undefined.update({"accuracy": NO_IMAGES, "accuracy_ci95": NO_IMAGES})
    return {
        "images": int(len(y_true)),
        "accuracy": correct / len(y_true) if len(y_true) else math.nan,
        "accuracy_ci95": wilson_interval(correct, len(y_true)),
        "per_class": per_class,
        "no_support": no_support,
        "never_predicted": never_predicted,
        **averages,
        "confusion_matrix": matrix.tolist(),
        UNDEFINED: undefined,
    }


def _class_average(per_class: dict, key: str, undefined: dict) -> dict:
    """Macro and support-weighted mean of `key` over the classes where it is defined."""
    rows = [(m[key], m["support"]) for m in per_class.values() if not math.isnan(m[key])]
    if not rows:
        reason = "no class has instances in this split" if not per_class else f"no class has a {key}"
        undefined.update({metric_path(key, "macro"): reason, metric_path(key, "weighted"): reason})
        return {"macro": math.nan, "weighted": math.nan}
    values, supports = np.array(rows, float).T
    return {"macro": float(values.mean()), "weighted": float((values * supports).sum() / supports.sum())}


def roc_curve(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate, thresholds), thresholds descending.

    Only meaningful with both positives and negatives (`auc_undefined_reason` is None).
    """
    order = np.argsort(-scores, kind="mergesort")
    scores, positive = scores[order], positive[order].astype(bool)
    distinct = np.r_[np.nonzero(np.diff(scores))[0], len(scores) - 1]
    tps = np.cumsum(positive)[distinct]
    fps = (distinct + 1) - tps
    tpr = np.r_[0.0, tps / max(positive.sum(), 1)]
    fpr = np.r_[0.0, fps / max((~positive).sum(), 1)]
    return fpr, tpr, np.r_[np.inf, scores[distinct]]


def auc_undefined_reason(positive: Sequence[bool], what: str = "positive") -> str | None:
    """Why a ROC-AUC cannot be computed on these labels, or None when it can."""
    positive = np.asarray(positive, bool)
    if not positive.size:
        return NO_IMAGES
    if not positive.any():
        return f"no {what} image (AUC needs both positives and negatives)"
    if positive.all():
        return f"every image is {what} (AUC needs both positives and negatives)"
    return None


def roc_auc(scores: Sequence[float], positive: Sequence[bool]) -> float:
    """Area under the ROC curve (ties count half); NaN without both positives and negatives
    (`auc_undefined_reason` says which is missing)."""
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
    per_class, undefined = {}, {}
    for c, name in enumerate(class_names):
        per_class[name] = roc_auc(probs[:, c], y_true == c)
        reason = auc_undefined_reason(y_true == c, name)
        if reason:
            undefined[metric_path("per_class", name)] = reason
    defined = [v for v in per_class.values() if not math.isnan(v)]
    if not defined:
        undefined["macro"] = "no class has both positive and negative images"
    return {
        "per_class": per_class,
        "macro": float(np.mean(defined)) if defined else math.nan,
        UNDEFINED: undefined,
    }


def expected_calibration_error(confidence: Sequence[float], correct: Sequence[bool], bins: int = 15) -> dict:
    """ECE over equal-width confidence bins: sum_b |acc_b - conf_b| * n_b / N, with the bins.

    `bins` lists the non-empty bins only (an empty bin has no accuracy, not accuracy 0),
    each with its edges, count, accuracy and mean confidence; ECE of no images is NaN.
    """
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
    if not len(confidence):
        return {"ece": math.nan, "images": 0, "bins": [], UNDEFINED: {"ece": NO_IMAGES}}
    return {"ece": float(ece), "images": int(len(confidence)), "bins": table, UNDEFINED: {}}


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
    """Sensitivity, specificity, PPV and NPV (each with a Wilson CI) at `threshold`.

    A rate whose denominator is 0 (no positives, no negatives, nothing flagged, nothing
    below the threshold) is NaN with its reason in `undefined`.
    """
    scores, positive = np.asarray(scores, float), np.asarray(positive, bool)
    flagged = scores >= threshold
    tp, fn = int((flagged & positive).sum()), int((~flagged & positive).sum())
    tn, fp = int((~flagged & ~positive).sum()), int((flagged & ~positive).sum())
    rates = {
        "sensitivity": (tp, tp + fn, "no positive image"),
        "specificity": (tn, tn + fp, "no negative image"),
        "ppv": (tp, tp + fp, "no image flagged at this threshold"),
        "npv": (tn, tn + fn, "no image below this threshold"),
    }
    result: dict = {"threshold": float(threshold), "tp": tp, "fn": fn, "tn": tn, "fp": fp}
    undefined = {}
    for name, (k, n, reason) in rates.items():
        result[name] = {"value": k / n if n else math.nan, "ci95": wilson_interval(k, n), "k": k, "n": n}
        if not n:
            undefined.update({metric_path(name, "value"): reason, metric_path(name, "ci95"): reason})
    result[UNDEFINED] = undefined
    return result


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise IoU of two `(N, 4)` normalized xyxy arrays; NaN where both boxes are empty
    (zero union: no overlap to measure). An empty box against a real one scores 0."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    lt, rb = np.maximum(a[:, :2], b[:, :2]), np.minimum(a[:, 2:], b[:, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
    area = lambda x: np.prod(np.clip(x[:, 2:] - x[:, :2], 0, None), axis=1)  # noqa: E731
    union = area(a) + area(b) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), math.nan)


def critical_errors(
    y_true: Sequence[int], y_pred: Sequence[int], confidence: Sequence[float], pairs: Sequence[Sequence[str]], class_names: Sequence[str]
) -> dict:
    """Count configured clinically important (true, predicted) confusions and list the cases,
    most confident first. `"*"` as the true class means every other class (so
    `["*", "no finding"]` counts missed fractures per class); `["*", "*"]` means every
    confusion (the S2 seed's "critical-error pairs"): only the pairs that occur, the most
    frequent first (then the most confident). Pairs naming an unknown class are reported, not ignored."""
    names = list(class_names)
    y_true, y_pred, confidence = np.asarray(y_true), np.asarray(y_pred), np.asarray(confidence)
    out, unknown = [], []
    for true_name, predicted_name in pairs:
        found = []
        for t, p in _expand_pair(true_name, predicted_name, names):
            if t not in names or p not in names:
                unknown.append([t, p])
                continue
            idx = np.nonzero((y_true == names.index(t)) & (y_pred == names.index(p)))[0]
            idx = idx[np.argsort(-confidence[idx])]
            found.append({"true": t, "predicted": p, "count": int(len(idx)), "indices": idx.tolist()})
        if predicted_name == "*":
            # most frequent first; ties: the pair with the most confident mistake
            found = sorted((f for f in found if f["count"]), key=lambda f: (-f["count"], -confidence[f["indices"][0]]))
        out += found
    return {"pairs": out, "total": int(sum(p["count"] for p in out)), "unknown_pairs": unknown}


def _expand_pair(true_name: str, predicted_name: str, names: list[str]) -> list[tuple[str, str]]:
    """The concrete (true, predicted) pairs one configured pair stands for ("*" = any class
    but the other one). A pair naming an unknown class stays as written, to be reported."""
    named = [n for n in (true_name, predicted_name) if n != "*"]
    if len(named) == 2 or any(n not in names for n in named):
        return [(true_name, predicted_name)]
    trues = names if true_name == "*" else [true_name]
    predicted = names if predicted_name == "*" else [predicted_name]
    return [(t, p) for p in predicted for t in trues if t != p]


def interleave(groups: Sequence[Sequence[int]]) -> list[int]:
    """The first item of every group, then every second, ...: a capped list still shows
    each group (Grad-CAM panels for critical-error pairs, each pair's most confident first)."""
    longest = max((len(g) for g in groups), default=0)
    return [g[i] for i in range(longest) for g in groups if i < len(g)]

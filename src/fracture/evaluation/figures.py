"""Evaluation figures (matplotlib, Agg): confusion matrices, ROC, reliability, Grad-CAM
panels, and a detector's PR curves, FROC curve and worst misses."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from fracture.evaluation.metrics import roc_curve  # noqa: E402


def confusion_figure(matrix: np.ndarray, class_names: Sequence[str], path: Path) -> Path:
    """Counts and row-normalized (recall) matrices side by side."""
    matrix = np.asarray(matrix)
    rows = matrix.sum(axis=1, keepdims=True)
    normalized = np.divide(matrix, rows, out=np.zeros_like(matrix, float), where=rows > 0)
    n = len(class_names)
    fig, axes = plt.subplots(1, 2, figsize=(2 * max(5, 0.8 * n + 2), max(4, 0.7 * n + 1.5)))
    for ax, data, title, fmt in ((axes[0], matrix, "counts", "d"), (axes[1], normalized, "row-normalized (recall)", ".2f")):
        ax.imshow(data, cmap="Blues")
        ax.set_xticks(range(n), class_names, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(n), class_names, fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(title)
        top = data.max() if data.size else 1
        for i in range(n):
            for j in range(n):
                ax.text(j, i, format(data[i, j], fmt), ha="center", va="center", fontsize=7,
                        color="white" if data[i, j] > top / 2 else "black")
    fig.tight_layout()
    return _save(fig, path)


def roc_figure(y_true: np.ndarray, probs: np.ndarray, class_names: Sequence[str], auc: dict, path: Path) -> Path:
    """One-vs-rest ROC curves for classes with both positives and negatives."""
    fig, ax = plt.subplots(figsize=(6, 5))
    for c, name in enumerate(class_names):
        positive = np.asarray(y_true) == c
        if positive.any() and (~positive).any():
            fpr, tpr, _ = roc_curve(probs[:, c], positive)
            ax.plot(fpr, tpr, label=f"{name} (AUC {_value(auc['per_class'].get(name), 2)})")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(f"one-vs-rest ROC, macro AUC {_value(auc.get('macro'))}")
    if any(not label.startswith("_") for label in ax.get_legend_handles_labels()[1]):
        ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


BINS_GID = "reliability-bins"
COUNT_GID = "reliability-count"
DIAGONAL_GID = "reliability-diagonal"


def reliability_plot(calibration: dict):
    """The reliability diagram of an `expected_calibration_error` result, as a Figure.

    Each non-empty bin is a point at (mean confidence, accuracy), labelled with its count;
    the vertical gap from the diagonal is |accuracy - confidence|, the term ECE weights by
    count / N, so the plot and the ECE in its title say the same thing. Empty bins have no
    accuracy and are not drawn (not as 0). A lower panel shows how many images each bin
    holds. The artists carry gids (`BINS_GID`, `COUNT_GID`, `DIAGONAL_GID`) for tests.
    """
    bins = [b for b in calibration["bins"] if b["count"]]
    confidence = [b["confidence"] for b in bins]
    accuracy = [b["accuracy"] for b in bins]
    fig, (ax, counts) = plt.subplots(
        2, 1, figsize=(5, 6.2), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    diagonal, = ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="perfect calibration")
    diagonal.set_gid(DIAGONAL_GID)
    ax.vlines(confidence, confidence, accuracy, colors="tab:red", lw=1.5, alpha=0.6, label="gap (weighted into ECE)")
    points, = ax.plot(confidence, accuracy, "o-", color="tab:blue", ms=5, label="bin: mean confidence, accuracy")
    points.set_gid(BINS_GID)
    for b in bins:
        text = ax.annotate(str(b["count"]), (b["confidence"], b["accuracy"]), textcoords="offset points",
                           xytext=(0, 6), ha="center", fontsize=6)
        text.set_gid(COUNT_GID)
    if not bins:
        ax.text(0.5, 0.5, "no images", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy")
    ax.set_title(f"reliability, ECE {_value(calibration.get('ece'))}")
    ax.legend(fontsize=7, loc="upper left")
    counts.bar([b["low"] for b in bins], [b["count"] for b in bins], width=[b["high"] - b["low"] for b in bins],
               align="edge", color="tab:gray", edgecolor="k")
    counts.set_xlabel("confidence (top-class probability)")
    counts.set_ylabel("images")
    fig.tight_layout()
    return fig


def reliability_figure(calibration: dict, path: Path) -> Path:
    """`reliability_plot`, saved to `path`."""
    return _save(reliability_plot(calibration), path)


def explanation_panel(
    image: np.ndarray,
    true_box: np.ndarray | None,
    pred_box: np.ndarray,
    heatmap: np.ndarray,
    attention: np.ndarray | None,
    title: str,
    path: Path,
) -> Path:
    """Original with true (green) and predicted (red) boxes | Grad-CAM | attention map."""
    columns = 3 if attention is not None else 2
    fig, axes = plt.subplots(1, columns, figsize=(4 * columns, 4.4))
    rgb = np.clip(image, 0, 255).astype(np.uint8)
    size = rgb.shape[0]
    axes[0].imshow(rgb)
    if true_box is not None:
        _draw_box(axes[0], true_box * size, "lime", "true")
    _draw_box(axes[0], pred_box * size, "red", "predicted")
    axes[0].legend(fontsize=7, loc="lower right")
    axes[0].set_title("image")
    axes[1].imshow(rgb)
    axes[1].imshow(heatmap, cmap="jet", alpha=0.45, vmin=0, vmax=1)
    axes[1].set_title("Grad-CAM")
    if attention is not None:
        axes[2].imshow(rgb)
        axes[2].imshow(attention, cmap="viridis", alpha=0.5, vmin=0, vmax=1)
        axes[2].set_title("attention gate")
    for ax in axes:
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def precision_recall_figure(curves: dict, ap50: dict, path: Path) -> Path:
    """Precision-recall at IoU 0.5 per class (and "one class"), each labelled with its AP50.

    Args:
        curves: name -> (recall, precision) after each ranked detection.
        ap50: name -> AP50 (NaN: no true box).
    """
    fig, ax = plt.subplots(figsize=(6.5, 5))
    for name, (recall, precision) in curves.items():
        if len(recall):
            style = {"color": "black", "linewidth": 2.5} if name == "one class" else {"linewidth": 1.2}
            ax.step(recall, precision, where="post", label=f"{name} (AP50 {_value(ap50.get(name))})", **style)
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision", title="Precision-recall at IoU 0.5")
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    return _save(fig, path)


def froc_figure(fp_per_image: np.ndarray, sensitivity: np.ndarray, points: dict, path: Path) -> Path:
    """Sensitivity against false positives per image (log x), the reported points marked."""
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    if len(fp_per_image):
        ax.step(np.maximum(fp_per_image, 1e-3), sensitivity, where="post", color="tab:blue")
    rates = [float(r) for r in points]
    ax.plot(rates, [points[r] if points[r] is not None else math.nan for r in points], "o", color="tab:red")
    for rate, value in zip(rates, points.values()):
        ax.annotate(_value(value, 2), (rate, value if value is not None and not math.isnan(value) else 0), fontsize=7,
                    textcoords="offset points", xytext=(0, 6), ha="center")
    ax.set(xscale="log", xlim=(0.1, 10), ylim=(0, 1.05), xlabel="false positives per image",
           ylabel="sensitivity (IoU >= 0.5)", title="FROC (class-agnostic)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def detection_overlay(image: np.ndarray, true_boxes, boxes, scores, title: str, path: Path, top: int = 5) -> Path:
    """An image with its true boxes (green) and its top detections (red, with scores), pixels."""
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.imshow(np.asarray(image).astype(np.uint8))
    for box in np.asarray(true_boxes).reshape(-1, 4):
        _draw_box(ax, box, "lime", None)
    for box, score in list(zip(np.asarray(boxes).reshape(-1, 4), scores))[:top]:
        _draw_box(ax, box, "red", None)
        ax.text(box[0], box[1], f"{score:.2f}", color="red", fontsize=7, va="bottom")
    ax.set_title(title, fontsize=8)
    ax.axis("off")
    fig.tight_layout()
    return _save(fig, path)


def _value(value, digits: int = 3) -> str:
    """A metric for a title or label: "n/a" when undefined (NaN, or None from metrics.json)."""
    if value is None or (isinstance(value, (float, np.floating)) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def _draw_box(ax, box, color, label):
    x1, y1, x2, y2 = box
    ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=color, lw=2, label=label))


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path

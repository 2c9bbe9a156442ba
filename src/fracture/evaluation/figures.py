"""Evaluation figures (matplotlib, Agg): confusion matrices, ROC, reliability, Grad-CAM panels."""

from __future__ import annotations

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
            ax.plot(fpr, tpr, label=f"{name} (AUC {auc['per_class'][name]:.2f})")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(f"one-vs-rest ROC, macro AUC {auc['macro']:.3f}")
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def reliability_figure(calibration: dict, path: Path) -> Path:
    """Accuracy against confidence per bin, with bin counts."""
    fig, ax = plt.subplots(figsize=(5, 5))
    bins = calibration["bins"]
    centres = [(b["low"] + b["high"]) / 2 for b in bins]
    widths = [b["high"] - b["low"] for b in bins]
    ax.bar(centres, [b["accuracy"] for b in bins], width=widths, edgecolor="k", alpha=0.7, label="accuracy")
    ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], "ro", ms=3, label="mean confidence")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="perfect calibration")
    for c, b in zip(centres, bins):
        ax.text(c, 0.02, str(b["count"]), ha="center", fontsize=6, rotation=90)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top-class probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"reliability, ECE {calibration['ece']:.3f}")
    ax.legend(fontsize=7, loc="upper left")
    return _save(fig, path)


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


def _draw_box(ax, box, color, label):
    x1, y1, x2, y2 = box
    ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=color, lw=2, label=label))


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path

"""Evaluate a trained run on one split: metrics.json, report.md, predictions.csv, figures.

The run's own class mapping (classes.json) is applied to the split, so labels are remapped
exactly as in training; the screening threshold is chosen on the *valid* split, saved in
the run (`screening_threshold.json`) and applied unchanged to any other split.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np

from fracture.data.classes import ClassMapping
from fracture.data.config import DataConfig
from fracture.evaluation import figures
from fracture.evaluation import metrics as M
from fracture.evaluation.boxes import box_average_precision
from fracture.data.inspect import index_leakage
from fracture.evaluation.report import render_report
from fracture.models.classifier import load_fracture_model

THRESHOLD_FILE = "screening_threshold.json"


@dataclass
class EvalConfig:
    """`eval` section of conf/evaluate.yaml."""

    target_sensitivity: float = 0.90
    calibration_bins: int = 15
    critical_pairs: list = field(default_factory=list)
    gradcam_random: int = 8
    gradcam_worst_boxes: int = 4
    gradcam_max_critical: int = 8
    worst_cases: int = 10
    batch_size: int = 32


@dataclass
class LoadedRun:
    run_dir: Path
    model: keras.Model
    classes: ClassMapping
    data: DataConfig


@dataclass
class Predictions:
    """Model outputs for a split, in sample order.

    Attributes:
        boxes: predicted boxes on the model input (letterboxed square), as the model sees it.
        image_boxes: the same boxes in the original image's normalized coordinates, the
            frame of the true boxes (`Sample.box`); IoU and AP are computed in this frame.
    """

    samples: list
    probs: np.ndarray
    boxes: np.ndarray
    image_boxes: np.ndarray

    @property
    def y_true(self) -> np.ndarray:
        return np.array([s.class_id for s in self.samples])

    @property
    def y_pred(self) -> np.ndarray:
        return self.probs.argmax(axis=1)


def load_run(run_dir: str | Path, data_override: dict | None = None, model_file: str = "best.keras") -> LoadedRun:
    """The run's model, class mapping and data config (`data_override` keys replace the run's)."""
    from omegaconf import OmegaConf

    run_dir = Path(run_dir)
    for needed in ("config.yaml", "classes.json", model_file):
        if not (run_dir / needed).is_file():
            raise FileNotFoundError(f"{run_dir / needed} not found: is {run_dir} a finished training run folder?")
    run_cfg = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"), resolve=True)
    data = {**run_cfg["data"], **(data_override or {})}
    data.pop("synthetic", None)  # generated at training time; evaluation only reads it
    model = load_fracture_model(run_dir / model_file)
    return LoadedRun(run_dir, model, ClassMapping.load(run_dir / "classes.json"), DataConfig.from_mapping(data))


def predict(run: LoadedRun, samples: list, sizes: dict, batch_size: int) -> Predictions:
    """Predict `samples`; `sizes` maps image path -> (height, width) for the box frame change."""
    from fracture.data.pipeline import make_dataset, model_box_to_image

    ds = make_dataset(samples, run.classes.num_classes, run.data, False, cache=None, batch_size=batch_size)
    outputs = run.model.predict(ds.map(lambda x, y, w: x), verbose=0)
    boxes = np.asarray(outputs["box"], float)
    image_boxes = np.array(
        [model_box_to_image(b, *sizes[s.image_path], run.data.image_size, run.data.resize) for s, b in zip(samples, boxes)]
    ).reshape(-1, 4)
    return Predictions(samples, np.asarray(outputs["class"], float), boxes, image_boxes)


def index_splits(run: LoadedRun, splits: list[str], cache_dir):
    """Index `splits` of the run's dataset under the run's own class mapping."""
    from fracture.data.index import build_index

    return build_index(run.data, splits=splits, classes=run.classes, cache_dir=cache_dir)


def samples_of(index, split: str) -> tuple[list, dict]:
    """A split's samples and path -> (height, width) for the box frame change."""
    samples = index.split(split).samples
    if not samples:
        raise ValueError(f"Split {split!r} of {index.config.root} has no usable images.")
    return samples, {str(r.image_path): (r.probe.height, r.probe.width) for r in index.split(split).records}


def split_samples(run: LoadedRun, split: str, cache_dir) -> tuple[list, dict]:
    """`samples_of` one split, indexed on its own."""
    return samples_of(index_splits(run, [split], cache_dir), split)


def screening_threshold(run: LoadedRun, split: str, preds: Predictions, target: float, cache_dir, batch_size) -> dict:
    """Load the run's locked threshold, or choose it on valid (predicting valid if needed)."""
    negative = run.classes.negative_id
    path = run.run_dir / THRESHOLD_FILE
    if path.is_file():
        saved = json.loads(path.read_text())
        if math.isclose(saved["target_sensitivity"], target):
            return saved
    valid_split = run.data.val_split
    valid = preds if split == valid_split else predict(run, *split_samples(run, valid_split, cache_dir), batch_size)
    scores, positive = 1.0 - valid.probs[:, negative], valid.y_true != negative
    threshold = M.threshold_for_sensitivity(scores, positive, target)
    locked = {
        "threshold": threshold,
        "target_sensitivity": target,
        "chosen_on": valid_split,
        "valid_sensitivity": M.screening_metrics(scores, positive, threshold)["sensitivity"]["value"],
        "score": "1 - p(no finding)",
    }
    path.write_text(json.dumps(locked, indent=2) + "\n")
    return locked


def evaluate_run(
    run_dir: str | Path,
    split: str = "valid",
    out: str | Path | None = None,
    cfg: EvalConfig | None = None,
    data_override: dict | None = None,
    cache_dir: str | Path | None = None,
) -> dict:
    """Evaluate and write everything to `out` (default `<run>/eval/<split>/`); returns metrics."""
    cfg = cfg or EvalConfig()
    run = load_run(run_dir, data_override)
    out = Path(out) if out else run.run_dir / "eval" / split
    out.mkdir(parents=True, exist_ok=True)
    # one index for the split and, for the leakage check, train (probes are cached per file)
    with_train = split != run.data.train_split
    try:
        index = index_splits(run, [split, run.data.train_split] if with_train else [split], cache_dir)
        leakage = index_leakage(index) if with_train else None
    except Exception as exc:  # noqa: BLE001 - without a readable train split only the caveat is lost
        index, leakage = index_splits(run, [split], cache_dir), {"error": f"leakage check skipped: {exc}"}
    samples, sizes = samples_of(index, split)
    preds = predict(run, samples, sizes, cfg.batch_size)
    names = run.classes.class_names
    y_true, y_pred, probs = preds.y_true, preds.y_pred, preds.probs
    confidence = probs.max(axis=1)

    result: dict = {"run": str(run.run_dir), "split": split, "data_root": run.data.root, "images": len(samples)}
    result["classification"] = M.classification_report(y_true, y_pred, names)
    result["auc"] = M.one_vs_rest_auc(y_true, probs, names)
    result["calibration"] = M.expected_calibration_error(confidence, y_true == y_pred, cfg.calibration_bins)

    negative = run.classes.negative_id
    if negative is not None and (y_true == negative).any() and (y_true != negative).any():
        locked = screening_threshold(run, split, preds, cfg.target_sensitivity, cache_dir, cfg.batch_size)
        scores, positive = 1.0 - probs[:, negative], y_true != negative
        result["screening"] = {**M.screening_metrics(scores, positive, locked["threshold"]), "locked": locked,
                               "auc": M.roc_auc(scores, positive)}

    true_boxes = np.array([s.box for s in samples], float)
    has_box = np.array([s.has_box for s in samples], bool)
    ious = M.box_iou(true_boxes, preds.image_boxes)
    result["boxes"] = {
        "positives": int(has_box.sum()),
        "mean_iou": float(ious[has_box].mean()) if has_box.any() else math.nan,
        "iou_at_least_0_5": float((ious[has_box] >= 0.5).mean()) if has_box.any() else math.nan,
        **box_average_precision(y_true, true_boxes, has_box, probs, preds.image_boxes, names, negative),
    }
    result["critical_errors"] = M.critical_errors(y_true, y_pred, confidence, cfg.critical_pairs, names)
    result["leakage"] = leakage

    _write_predictions(out / "predictions.csv", preds, names, ious, has_box)
    figure_files = {
        "confusion": figures.confusion_figure(np.array(result["classification"]["confusion_matrix"]), names, out / "confusion_matrix.png"),
        "roc": figures.roc_figure(y_true, probs, names, result["auc"], out / "roc.png"),
        "reliability": figures.reliability_figure(result["calibration"], out / "reliability.png"),
    }
    result["explanations"] = _explanations(run, preds, ious, has_box, result["critical_errors"], cfg, out / "gradcam")
    result["figures"] = {k: v.name for k, v in figure_files.items()}
    (out / "metrics.json").write_text(json.dumps(_finite(result), indent=2, default=_json_default) + "\n")
    (out / "report.md").write_text(render_report(result, names, preds, cfg.worst_cases))
    return result


def _write_predictions(path: Path, preds: Predictions, names, ious, has_box) -> None:
    """One row per image; boxes in the original image's normalized xyxy."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["image", "true_class", "predicted_class", "confidence", *[f"p_{n}" for n in names],
             "true_x1", "true_y1", "true_x2", "true_y2", "pred_x1", "pred_y1", "pred_x2", "pred_y2", "iou"]
        )
        for i, s in enumerate(preds.samples):
            true_box = [f"{v:.4f}" for v in s.box] if s.has_box else [""] * 4
            writer.writerow(
                [s.image_path, names[s.class_id], names[preds.y_pred[i]], f"{preds.probs[i].max():.4f}",
                 *[f"{p:.4f}" for p in preds.probs[i]], *true_box, *[f"{v:.4f}" for v in preds.image_boxes[i]],
                 f"{ious[i]:.4f}" if has_box[i] else ""]
            )


def _explanations(run, preds: Predictions, ious, has_box, critical, cfg: EvalConfig, out: Path) -> dict:
    """Grad-CAM panels: random images, every critical error (up to a cap), worst box misses."""
    from fracture.data.pipeline import make_dataset
    from fracture.evaluation.gradcam import GradCam

    rng = np.random.default_rng(0)
    n = len(preds.samples)
    chosen: dict[str, list[int]] = {
        "random": rng.choice(n, size=min(cfg.gradcam_random, n), replace=False).tolist(),
        "critical": [i for p in critical["pairs"] for i in p["indices"]][: cfg.gradcam_max_critical],
        "worst_box": [int(i) for i in np.argsort(np.where(has_box, ious, np.inf))[: cfg.gradcam_worst_boxes] if has_box[i]],
    }
    cam = GradCam(run.model)
    names = run.classes.class_names
    written: dict[str, list[str]] = {}
    for group, indices in chosen.items():
        written[group] = []
        for start in range(0, len(indices), 8):
            batch_idx = indices[start : start + 8]
            samples = [preds.samples[i] for i in batch_idx]
            images, targets, _ = next(iter(make_dataset(samples, run.classes.num_classes, run.data, False, cache=None, batch_size=len(samples))))
            images = images.numpy()
            heatmaps, _ = cam(images, preds.y_pred[batch_idx])
            attention = cam.attention(images)
            for k, i in enumerate(batch_idx):
                s = preds.samples[i]
                title = (f"{Path(s.image_path).name}\ntrue {names[s.class_id]} | predicted {names[preds.y_pred[i]]} "
                         f"({preds.probs[i].max():.2f})" + (f" | IoU {ious[i]:.2f}" if has_box[i] else ""))
                path = figures.explanation_panel(
                    images[k], targets["box"].numpy()[k] if s.has_box else None, preds.boxes[i], heatmaps[k],
                    None if attention is None else attention[k], title, out / f"{group}_{len(written[group]):02d}.png",
                )
                written[group].append(str(path.relative_to(out.parent)))
    return written


def _finite(value):
    """NaN -> None, so metrics.json is strict JSON (n/a values read as null)."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, (float, np.floating)) and math.isnan(value):
        return None
    return value


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, tuple):
        return list(value)
    return str(value)

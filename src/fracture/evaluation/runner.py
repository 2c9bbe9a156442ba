"""Evaluate a trained run on one split: metrics.json, report.md, predictions.csv, figures.

The run's own class mapping (classes.json) is applied to the split, so labels are remapped
exactly as in training; the screening threshold is chosen on the *valid* split, saved in
the run (`screening_threshold.json`) and applied unchanged to any other split. best.keras
is evaluated unless `model_file` names another of the run's models (last.keras); that one
gets its own threshold and output folder (`fracture.runs.RunLayout`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fracture.data.accounting import check_shrink, data_accounting, format_accounting
from fracture.data.inspect import index_leakage
from fracture.evaluation import figures
from fracture.evaluation import metrics as M
from fracture.evaluation.boxes import ImageBoxes, box_metrics
from fracture.evaluation.report import render_report
from fracture.runs import BEST_MODEL, LoadedRun, RunLayout, load_run, write_csv, write_json, write_text

if TYPE_CHECKING:  # the config module is light, but its package imports Keras
    from fracture.models.detection.config import DecodeConfig


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
    bootstrap: int = 1000         # image resamples for the detection CIs
    detection_overlays: int = 8   # worst-missed images drawn with their boxes
    test_time_flip: bool | None = None  # detector runs: replaces the run's model.detection.decode.test_time_flip


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
    detections: list | None = None  # a detector's every box per image (inference.ImageDetections)
    decode: DecodeConfig | None = None  # the DecodeConfig that made `detections`: the metrics record what was used

    @property
    def y_true(self) -> np.ndarray:
        return np.array([s.class_id for s in self.samples])

    @property
    def y_pred(self) -> np.ndarray:
        return self.probs.argmax(axis=1)


def predict(run: LoadedRun, samples: list, sizes: dict, batch_size: int) -> Predictions:
    """Predict `samples`; `sizes` maps image path -> (height, width) for the box frame change."""
    from fracture.data.pipeline import make_dataset, model_box_to_image

    ds = make_dataset(samples, run.classes.num_classes, run.data, False, cache=None, batch_size=batch_size)
    images = ds.map(lambda x, y, w: x)
    if run.is_detector:
        return _predict_detector(run, samples, sizes, images)
    outputs = run.model.predict(images, verbose=0)
    boxes = np.asarray(outputs["box"], float)
    image_boxes = np.array(
        [model_box_to_image(b, *sizes[s.image_path], run.data.image_size, run.data.resize) for s, b in zip(samples, boxes)]
    ).reshape(-1, 4)
    return Predictions(samples, np.asarray(outputs["class"], float), boxes, image_boxes)


def _predict_detector(run: LoadedRun, samples: list, sizes: dict, images) -> Predictions:
    """Every box per image (evaluation's decoding: confidence 0.001, NMS IoU 0.7, 300 per
    image); `boxes`/`image_boxes` hold each image's top detection, so the image-level
    sections (predictions.csv, the top-box IoU, Grad-CAM panels) read a detector like the
    single-box model."""
    from fracture.data.pipeline import image_box_to_model
    from fracture.inference import decode_config, detections_in_image_frame, model_outputs

    decode = decode_config(run)
    probs, detections, start = [], [], 0
    for batch in images:  # batch by batch: the dense outputs of a whole split would be large
        outputs = model_outputs(run, batch, decode)
        probs.append(np.asarray(outputs["class"], float))
        chunk = samples[start : start + len(batch)]
        detections += detections_in_image_frame(run, outputs["detections"], [sizes[s.image_path] for s in chunk], decode)
        start += len(batch)
    image_boxes = np.array([
        d.boxes[0] / np.array([w, h, w, h]) if len(d.boxes) else np.zeros(4)
        for d, (h, w) in zip(detections, (sizes[s.image_path] for s in samples))
    ]).reshape(-1, 4)
    model_boxes = np.array([
        image_box_to_model(b, *sizes[s.image_path], run.data.image_size, run.data.resize) for s, b in zip(samples, image_boxes)
    ]).reshape(-1, 4)
    return Predictions(samples, np.concatenate(probs), model_boxes, image_boxes, detections, decode)


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
    path = run.screening_threshold
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
        "model_file": run.model_file,
    }
    write_json(path, locked)
    return locked


def output_dir(run_dir: str | Path, split: str, out: str | Path | None, model_file: str = BEST_MODEL) -> Path:
    """`out`, or the run's own folder for this split and model file (`RunLayout.eval_dir`)."""
    return Path(out) if out else RunLayout(run_dir).eval_dir(split, model_file)


def evaluate_run(
    run_dir: str | Path,
    split: str = "valid",
    out: str | Path | None = None,
    cfg: EvalConfig | None = None,
    data_override: dict | None = None,
    cache_dir: str | Path | None = None,
    model_file: str = BEST_MODEL,
) -> dict:
    """Evaluate and write everything to `out` (default `<run>/eval/<split>/` for best.keras,
    `<run>/eval/<split>.<stem>/` for another model file); returns metrics."""
    cfg = cfg or EvalConfig()
    run = load_run(run_dir, data_override, model_file, cfg.test_time_flip)
    out = output_dir(run_dir, split, out, model_file)
    out.mkdir(parents=True, exist_ok=True)
    # one index for the split and, for the leakage check, train (probes are cached per file)
    with_train = split != run.data.train_split
    try:
        index = index_splits(run, [split, run.data.train_split] if with_train else [split], cache_dir)
        leakage = index_leakage(index, cache_dir) if with_train else None
    except Exception as exc:  # noqa: BLE001 - without a readable train split only the caveat is lost
        index, leakage = index_splits(run, [split], cache_dir), {"error": f"leakage check skipped: {exc}"}
    accounting = data_accounting(index, splits=[split])
    print(format_accounting(accounting))
    check_shrink(accounting, run.data.allow_shrink)
    samples, sizes = samples_of(index, split)
    preds = predict(run, samples, sizes, cfg.batch_size)
    names = run.classes.class_names
    y_true, y_pred, probs = preds.y_true, preds.y_pred, preds.probs
    confidence = probs.max(axis=1)

    split_paths = index.layout.split(split)
    result: dict = {"run": str(run.run_dir), "model_file": model_file, "split": split, "data_root": run.data.root, "images": len(samples),
                    "split_source": {"declared_as": split_paths.declared_as, "images": str(split_paths.images_dir)},
                    "data": accounting}
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
    result["boxes"] = box_metrics(ImageBoxes(y_true, true_boxes, has_box, probs, preds.image_boxes), names, negative)
    result["critical_errors"] = M.critical_errors(y_true, y_pred, confidence, cfg.critical_pairs, names)
    result["leakage"] = leakage

    _write_predictions(out / "predictions.csv", preds, names, ious, has_box)
    figure_files = {
        "confusion": figures.confusion_figure(np.array(result["classification"]["confusion_matrix"]), names, out / "confusion_matrix.png"),
        "roc": figures.roc_figure(y_true, probs, names, result["auc"], out / "roc.png"),
        "reliability": figures.reliability_figure(result["calibration"], out / "reliability.png"),
    }
    if preds.detections is not None:
        result["detection"], detection_figures = _detection(run, preds, sizes, cfg, out)
        figure_files.update(detection_figures)
    result["explanations"] = _explanations(run, preds, ious, has_box, result["critical_errors"], cfg, out / "gradcam")
    result["figures"] = {k: v.name for k, v in figure_files.items() if isinstance(v, Path)}
    result["figures"]["worst_misses"] = [str(p.relative_to(out)) for p in figure_files.get("worst_misses", [])]
    write_json(out / "metrics.json", _finite(result))
    write_text(out / "report.md", render_report(result, names, preds, cfg.worst_cases))
    return result


def _detection(run: LoadedRun, preds: Predictions, sizes: dict, cfg: EvalConfig, out: Path) -> tuple[dict, dict]:
    """The detection block (fracture.evaluation.detection) and its figures."""
    from fracture.data.pipeline import decode_image
    from fracture.evaluation import detection as D

    images = []
    for s, d in zip(preds.samples, preds.detections):
        h, w = sizes[s.image_path]
        true = np.asarray(s.boxes, float).reshape(-1, 4) * [w, h, w, h]
        images.append(D.ImageEval(w, h, true, np.asarray(s.box_classes, int), d.boxes, d.scores, d.classes))
    decode = preds.decode
    settings = D.DetectionEvalSettings(cfg.bootstrap, 0, decode.confidence, decode.iou, decode.max_detections,
                                       decode.test_time_flip)
    names, negative = run.classes.class_names, run.classes.negative_id
    block = D.detection_metrics(images, names, negative, settings)
    curves = {names[c]: D.pr_curve(D.matches(images, c)) for c in D.detection_class_ids(len(names), negative)}
    merged = D.matches(images, None)
    curves["one class"] = D.pr_curve(merged)
    ap50 = {**{n: v["ap50"] for n, v in block["per_class"].items()}, "one class": block["one_class_ap50"]}
    files = {
        "detection_pr": figures.precision_recall_figure(curves, ap50, out / "detection_pr.png"),
        "froc": figures.froc_figure(*D.froc_curve(merged), block["froc"], out / "froc.png"),
        "worst_misses": [],
    }
    for k, i in enumerate(D.worst_misses(images, cfg.detection_overlays)):
        im, s = images[i], preds.samples[i]
        pixels = decode_image(s.image_path).numpy()
        files["worst_misses"].append(figures.detection_overlay(
            pixels, im.true_boxes, im.boxes, im.scores, Path(s.image_path).name, out / "worst_misses" / f"{k:02d}.png"))
    return block, files


def _write_predictions(path: Path, preds: Predictions, names, ious, has_box) -> None:
    """One row per image; boxes in the original image's normalized xyxy."""
    header = ["image", "true_class", "predicted_class", "confidence", *[f"p_{n}" for n in names],
              "true_x1", "true_y1", "true_x2", "true_y2", "pred_x1", "pred_y1", "pred_x2", "pred_y2", "iou"]
    rows = []
    for i, s in enumerate(preds.samples):
        true_box = [f"{v:.4f}" for v in s.box] if s.has_box else [""] * 4
        rows.append(
            [s.image_path, names[s.class_id], names[preds.y_pred[i]], f"{preds.probs[i].max():.4f}",
             *[f"{p:.4f}" for p in preds.probs[i]], *true_box, *[f"{v:.4f}" for v in preds.image_boxes[i]],
             f"{ious[i]:.4f}" if has_box[i] else ""]
        )
    write_csv(path, header, rows)


def _explanations(run, preds: Predictions, ious, has_box, critical, cfg: EvalConfig, out: Path) -> dict:
    """Grad-CAM panels: random images, every critical error (up to a cap), worst box misses."""
    from fracture.evaluation.gradcam import GradCam
    from fracture.inference import load_samples_batch

    rng = np.random.default_rng(0)
    n = len(preds.samples)
    chosen: dict[str, list[int]] = {
        "random": rng.choice(n, size=min(cfg.gradcam_random, n), replace=False).tolist(),
        "critical": M.interleave([p["indices"] for p in critical["pairs"]])[: cfg.gradcam_max_critical],
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
            images, true_boxes = load_samples_batch(samples, run.classes.num_classes, run.data)
            heatmaps, _ = cam(images, preds.y_pred[batch_idx])
            attention = cam.attention(images)
            for k, i in enumerate(batch_idx):
                s = preds.samples[i]
                title = (f"{Path(s.image_path).name}\ntrue {names[s.class_id]} | predicted {names[preds.y_pred[i]]} "
                         f"({preds.probs[i].max():.2f})" + (f" | IoU {ious[i]:.2f}" if has_box[i] else ""))
                path = figures.explanation_panel(
                    images[k], true_boxes[k] if s.has_box else None, preds.boxes[i], heatmaps[k],
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

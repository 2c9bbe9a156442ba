"""Prediction on image files with a trained run: class, probability and box in the
original image's coordinates, plus overlay PNGs. Used by scripts/predict.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from fracture.data.images import list_image_files, unsupported_reason
from fracture.runs import write_csv, write_json


@dataclass(frozen=True)
class Screening:
    """The fracture / no-finding decision rule: `1 - p(no finding) >= threshold` means fracture.

    Attributes:
        threshold: None when no threshold is known; the most probable class then decides.
        source: where the threshold came from, to print beside every prediction run.
        box_confidence: a detector's boxes at or above this score are listed and drawn
            (evaluation scores every box down to 0.001; predict needs an operating point).
    """

    threshold: float | None
    source: str
    box_confidence: float = 0.25

    def is_fracture(self, probs: np.ndarray, negative_id: int | None) -> bool:
        if negative_id is None:
            return True
        if self.threshold is None:
            return int(np.argmax(probs)) != negative_id
        return float(1.0 - probs[negative_id]) >= self.threshold


def screening_for(run, override: float | None = None, box_confidence: float = 0.25) -> Screening:
    """The threshold evaluate.py locked on valid for the run's model file
    (`screening_threshold.json` for best.keras), unless overridden; `box_confidence` is a
    detector's box operating point (see `Screening`)."""
    import json

    if override is not None:
        return Screening(float(override), f"threshold={override} given on the command line", box_confidence)
    path = run.screening_threshold
    if path.is_file():
        locked = json.loads(path.read_text())
        return Screening(
            float(locked["threshold"]),
            f"locked on {locked.get('chosen_on', 'valid')} for sensitivity {locked.get('target_sensitivity')} ({path.name})",
            box_confidence,
        )
    return Screening(None, "none locked (run scripts/evaluate.py split=valid first): the most probable class decides", box_confidence)


@dataclass
class PredictionResult:
    predictions: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)


def list_inputs(path: str | Path) -> tuple[list[Path], bool]:
    """(image files, is_folder). A folder is searched recursively for image suffixes
    (`fracture.data.images.IMAGE_SUFFIXES`; unsupported ones are listed, then skipped with
    their reason by `predict_files`)."""
    path = Path(path)
    if path.is_dir():
        return list_image_files(path, recursive=True), True
    if path.is_file():
        return [path], False
    raise FileNotFoundError(f"input {path} does not exist")


def output_name(input_path: str | Path) -> str:
    """A predictions folder name unique to the input: `<parent>_<name>_<hash of the absolute path>`,
    so `train/images` and `valid/images` of one dataset never share (and overwrite) a folder."""
    import hashlib

    path = Path(input_path).resolve()
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:6]
    parts = [p for p in (path.parent.name, path.stem) if p]
    return "_".join([*parts, digest])


def load_samples_batch(samples: list, num_classes: int, data_cfg) -> tuple[np.ndarray, np.ndarray]:
    """Indexed samples as one batch of model inputs, exactly as evaluation feeds them:
    `(images (N, S, S, 3) float raw 0-255, true boxes (N, 4) in the model's frame)`.
    With detection targets (`multi_object_rule=all`) the box is each image's largest (the
    rows come largest first), zeros for a negative, like the single-box target.

    The one loader for small fixed batches: Grad-CAM panels, export checks, the
    TensorBoard panel.
    """
    images, targets = load_samples_targets(samples, num_classes, data_cfg)
    if "box" in targets:
        return images, targets["box"]
    largest = targets["detections"][:, 0]
    return images, np.where(largest[:, 4:5] >= 0, largest[:, :4], 0.0)


def load_samples_targets(samples: list, num_classes: int, data_cfg) -> tuple[np.ndarray, dict]:
    """`load_samples_batch` with the pipeline's whole target dict (numpy): "class", and
    "box" or "detections" (`(N, max_boxes, 5)` rows [x1, y1, x2, y2, class], padding -1)."""
    from fracture.data.pipeline import make_dataset

    ds = make_dataset(samples, num_classes, data_cfg, False, cache=None, batch_size=len(samples))
    images, targets, _ = next(iter(ds))
    return images.numpy(), {name: value.numpy() for name, value in targets.items()}


def prepare_image(raw, size: int, mode: str) -> np.ndarray:
    """A decoded uint8 `(H, W, 3)` image -> the model input `(size, size, 3)` float32 raw 0-255,
    resized exactly as evaluation resizes it (`data.resize`: stretch or letterbox)."""
    import tensorflow as tf

    from fracture.data.pipeline import resize_with_boxes

    image, _ = resize_with_boxes(tf.convert_to_tensor(raw), tf.zeros(4), size, mode)
    return tf.clip_by_value(tf.round(image), 0, 255).numpy().astype(np.float32)


def decode_bytes(data: bytes, size: int, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Encoded image bytes -> `(raw uint8 (H, W, 3), model input (size, size, 3))`, with the
    decoder the training pipeline uses (grayscale, 16-bit, CMYK, alpha all become 8-bit RGB).

    The one decode path of prediction: `predict_files` (files) and the HTTP server (uploads).
    Raises TensorFlow's error for bytes it cannot decode (`decode_error_reason` says it in words).
    """
    import tensorflow as tf

    from fracture.data.pipeline import decode_image_bytes

    raw = decode_image_bytes(tf.constant(data)).numpy()
    return raw, prepare_image(raw, size, mode)


def _load(path: Path, size: int, mode: str):
    return decode_bytes(Path(path).read_bytes(), size, mode)


def predict_batch(run, inputs: list[np.ndarray], sizes: list[tuple[int, int]], screening: Screening,
                  pad_to: int | None = None) -> list[dict]:
    """Model inputs (from `decode_bytes`) -> one record per image: class probabilities, the
    screening decision, and boxes mapped back to each original `(height, width)` image.

    The one batch prediction path: `predict_files` and the HTTP server's batcher call it.

    Args:
        pad_to: pad the batch with zero images to this many (a fixed shape, no retracing);
            the padding's outputs are dropped.
    """
    batch = np.stack(inputs).astype(np.float32)
    if pad_to is not None and pad_to > len(batch):
        batch = np.concatenate([batch, np.zeros((pad_to - len(batch), *batch.shape[1:]), np.float32)])
    decode = decode_config(run, screening.box_confidence) if run.is_detector else None
    outputs = model_outputs(run, batch, decode)
    n = len(inputs)
    probs = np.asarray(outputs["class"])[:n]
    if decode is None:
        boxes = np.asarray(outputs["box"])[:n]
        return [_record(run, p, box, (h, w), screening) for p, box, (h, w) in zip(probs, boxes, sizes)]
    detections = detections_in_image_frame(run, np.asarray(outputs["detections"])[:n], list(sizes), decode)
    return [_detector_record(run, p, d, (h, w), screening) for p, d, (h, w) in zip(probs, detections, sizes)]


def _detector_record(run, p: np.ndarray, detections: ImageDetections, size: tuple[int, int], screening: Screening) -> dict:
    """A detector's record: every box at or above `screening.box_confidence`, whatever the
    image-level decision (the boxes are the detector's own evidence); `box` is the top one."""
    from fracture.data.pipeline import image_box_to_model

    h, w = size
    top = detections.boxes[0] / [w, h, w, h] if len(detections.boxes) else np.zeros(4)
    record = _record(run, p, image_box_to_model(top, h, w, run.data.image_size, run.data.resize), size, screening)
    names = run.classes.class_names
    record["boxes"] = [
        {"class": names[int(c)], "score": round(float(s), 5), "box": [round(float(v), 5) for v in b / [w, h, w, h]],
         "box_pixels": [round(float(v), 1) for v in b]}
        for b, s, c in zip(detections.boxes, detections.scores, detections.classes)
    ]
    return record


def _record(run, p: np.ndarray, box: np.ndarray, size: tuple[int, int], screening: Screening) -> dict:
    from fracture.data.pipeline import model_box_to_image

    names, negative = run.classes.class_names, run.classes.negative_id
    h, w = size
    cls = int(p.argmax())
    image_box = model_box_to_image(box, h, w, run.data.image_size, run.data.resize)
    record = {
        "predicted_class": names[cls],
        "probability": float(p[cls]),
        "probabilities": {n: float(v) for n, v in zip(names, p)},
        "box": [round(float(v), 5) for v in image_box],
        "box_pixels": [round(float(v), 1) for v in image_box * [w, h, w, h]],
        "model_box": [round(float(v), 5) for v in np.clip(box, 0.0, 1.0)],  # on the model input
        "width": w,
        "height": h,
        "no_finding": not screening.is_fracture(p, negative),
    }
    if negative is not None:
        record["screening"] = {"score": round(float(1.0 - p[negative]), 5), "threshold": screening.threshold}
    # Detections as a list (one box head today; a multi-box detector will return several).
    # No box when the decision is "no finding"; the box's class is the most probable
    # finding class (not "no finding" when the threshold, not the argmax, decided fracture).
    record["boxes"] = []
    if not record["no_finding"]:
        finding = p.copy()
        if negative is not None and len(p) > 1:
            finding[negative] = -1.0
        box_cls = int(finding.argmax())
        record["boxes"].append({"class": names[box_cls], "score": round(float(p[box_cls]), 5),
                                "box": record["box"], "box_pixels": record["box_pixels"]})
    return record


@dataclass(frozen=True)
class ImageDetections:
    """One image's decoded detections, best first, in the original image's pixels.

    Attributes:
        boxes: `(D, 4)` xyxy pixels.
        scores: `(D,)` sqrt(class probability x predicted IoU quality).
        classes: `(D,)` the run's class ids ("no finding" never appears).
    """

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray


def decode_config(run, confidence: float | None = None):
    """The run's decoding settings (`model.detection.decode`); `confidence` overrides the
    evaluation default (0.001: every box counts for AP) with an operating point."""
    from dataclasses import replace

    from fracture.config import typed
    from fracture.models.detection.config import DecodeConfig

    decode = typed(DecodeConfig, run.model_config.get("detection", {}).get("decode", {}), "model.detection.decode")
    return decode if confidence is None else replace(decode, confidence=float(confidence))


def model_outputs(run, batch, decode=None) -> dict:
    """The model's outputs for one batch of model inputs `(B, H, W, C)`, as numpy arrays.

    With `decode.test_time_flip` a detector also predicts the mirror images and its dense
    "detections" become the per-location average of both passes (`detection.flip`); the
    other outputs (the image-level class head) are the plain pass's.
    """
    outputs = {name: np.asarray(value) for name, value in run.model.predict_on_batch(batch).items()}
    if decode is None or not decode.test_time_flip:
        return outputs
    from fracture.models.detection.flip import merge_flip

    mirror = np.ascontiguousarray(np.asarray(batch)[:, :, ::-1, :])
    mirror_dense = np.asarray(run.model.predict_on_batch(mirror)["detections"])
    outputs["detections"] = merge_flip(outputs["detections"], mirror_dense, run.data.image_size)
    return outputs


def detections_in_image_frame(run, dense: np.ndarray, sizes: list[tuple[int, int]], decode) -> list[ImageDetections]:
    """Dense head outputs of a batch -> each image's detections after class-wise NMS, mapped
    back through the letterbox to its original `(height, width)` in pixels."""
    from fracture.data.pipeline import model_box_to_image
    from fracture.models.detection.decode import decode_detections

    size = run.data.image_size
    boxes, scores, classes, valid = (
        np.asarray(t) for t in decode_detections(
            dense, size, conf=decode.confidence, iou=decode.iou, max_det=decode.max_detections,
            ignore_class=run.classes.negative_id,
        )
    )
    out = []
    for i, (h, w) in enumerate(sizes):
        n = int(valid[i])
        pixels = model_box_to_image(boxes[i, :n], h, w, size, run.data.resize).reshape(-1, 4) * [w, h, w, h]
        out.append(ImageDetections(pixels, scores[i, :n].astype(float), classes[i, :n].astype(int)))
    return out


def predict_files(
    run, files: Iterable[Path], overlay_dir: Path | None, batch_size: int = 16, screening: Screening | None = None
) -> PredictionResult:
    """Predict every file; unsupported and undecodable files are skipped and listed with the reason.

    Args:
        run: a `fracture.runs.LoadedRun`.
        files: image paths.
        overlay_dir: write `<stem>_pred.png` overlays here (None: no overlays).
        screening: the fracture / no-finding rule (default: `screening_for(run)`).
    """
    from tqdm import tqdm

    files = list(files)
    size, mode = run.data.image_size, run.data.resize
    result = PredictionResult()
    screening = screening or screening_for(run)
    bar = tqdm(total=len(files), unit="img", disable=len(files) < 2)
    for start in range(0, len(files), batch_size):
        loaded = []
        for path in files[start : start + batch_size]:
            unsupported = unsupported_reason(path)
            if unsupported:
                result.skipped.append({"image": str(path), "reason": unsupported})
                continue
            try:
                raw, model_input = _load(path, size, mode)
            except Exception as exc:  # noqa: BLE001 - any decode failure skips the file, listed
                result.skipped.append({"image": str(path), "reason": decode_error_reason(exc)})
                continue
            loaded.append((path, raw, model_input))
        bar.update(len(files[start : start + batch_size]))
        if not loaded:
            continue
        records = predict_batch(run, [m for _, _, m in loaded], [raw.shape[:2] for _, raw, _ in loaded], screening)
        for (path, raw, _), record in zip(loaded, records):
            record = {"image": str(path), **record}
            if overlay_dir is not None:
                record["overlay"] = str(draw_overlay(raw, record, Path(overlay_dir) / f"{path.stem}_pred.png"))
            result.predictions.append(record)
    bar.close()
    return result


def decode_error_reason(exc: Exception) -> str:
    """TF's decode error without its op-name noise."""
    import re

    text = re.sub(r"\{\{.*?\}\}\s*", "", str(exc)).split(" [Op:")[0].strip()
    return text[:200] or type(exc).__name__


def draw_overlay(image: np.ndarray, record: dict, path: Path) -> Path:
    """Save `render_overlay(image, record)` as a PNG at `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    render_overlay(image, record).save(path)
    return path


def render_overlay(image: np.ndarray, record: dict):
    """The image (PIL, RGB) with every listed box ("class score") and the image-level
    "class probability" label in the corner."""
    from PIL import Image, ImageDraw

    canvas = Image.fromarray(np.asarray(image, np.uint8)).convert("RGB")
    draw = ImageDraw.Draw(canvas)
    width = max(2, round(max(canvas.size) / 300))
    for box in record["boxes"]:
        draw.rectangle(box["box_pixels"], outline=(255, 40, 40), width=width)
        x, y = box["box_pixels"][:2]
        _label(draw, (x, max(0, y - 14)), f"{box['class']} {box['score']:.2f}")
    _label(draw, (4, 4), f"{record['predicted_class']} {record['probability']:.2f}")
    return canvas


def _label(draw, xy, text: str) -> None:
    draw.rectangle(draw.textbbox(xy, text), fill=(0, 0, 0))
    draw.text(xy, text, fill=(255, 255, 0))


def write_predictions(result: PredictionResult, out: Path, folder: bool) -> Path:
    """predictions.json (one image) or predictions.csv (a folder), plus skipped.json when any."""
    out.mkdir(parents=True, exist_ok=True)
    if result.skipped:
        write_json(out / "skipped.json", result.skipped)
    else:
        (out / "skipped.json").unlink(missing_ok=True)  # never a stale list from an earlier run
    if not folder:
        path = out / "predictions.json"
        write_json(path, result.predictions[0] if result.predictions else {"skipped": result.skipped})
        return path
    path = out / "predictions.csv"
    names = list(result.predictions[0]["probabilities"]) if result.predictions else []
    header = ["image", "predicted_class", "probability", *[f"p_{n}" for n in names], "box_class", "box_score",
              "x1", "y1", "x2", "y2", "width", "height", "no_finding", "screening_score", "screening_threshold"]
    rows = []
    for r in result.predictions:
        screening = r.get("screening", {})
        image = [r["image"], r["predicted_class"], f"{r['probability']:.4f}", *[f"{r['probabilities'][n]:.4f}" for n in names]]
        after = [r["width"], r["height"], r["no_finding"], screening.get("score", ""),
                 "" if screening.get("threshold") is None else screening["threshold"]]
        # one row per box (normalized xyxy in the original image); an image without one keeps a row
        for box in r["boxes"] or [None]:
            rows.append([*image, *([box["class"], f"{box['score']:.4f}", *box["box"]] if box else [""] * 6), *after])
    write_csv(path, header, rows)
    return path

"""Export a trained run: SavedModel, TFLite (fp32, fp16, dynamic-range int8), ONNX.

Every exported model takes raw 0-255 RGB float32 images of the run's input size
`(N, S, S, 3)` (resized as in training: data.resize), and returns `class_probabilities`
`(N, C)` and either `box` `(N, 4)` (normalized xyxy on the model input) or, for a detector,
`detections` `(N, A, 4 + 1 + K)`: the dense head before decoding. Decoding and class-wise
NMS run outside the graph (`fracture.models.detection.decode.decode_detections`), because
TFLite and ONNX converters cannot all take `combined_non_max_suppression`.

Each export is reloaded and compared with the Keras model on a few images. The compared
values all lie in [0, 1]: probabilities, and for a detector every location's decoded box
and score before NMS (so NMS, run on both, keeps the same boxes but for near-ties). The max
abs difference must stay within the format's tolerance. Each check also times batch-1
inference, decoding included (`latency_ms`, median of `LATENCY_RUNS`).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fracture.runs import write_json

FORMATS = ("saved_model", "tflite", "onnx")
TFLITE_VARIANTS = ("fp32", "fp16", "int8")
# Max abs difference from the Keras model, on probabilities, box coordinates and box scores (all in [0, 1]).
TOLERANCE = {"saved_model": 1e-5, "onnx": 1e-4, "tflite_fp32": 1e-4, "tflite_fp16": 2e-2, "tflite_int8": 1e-1}
LATENCY_RUNS = 20


@dataclass
class ExportCheck:
    name: str
    path: Path
    max_abs_diff: float
    tolerance: float
    runtime: str
    seconds: float
    latency_ms: float = float("nan")

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.tolerance

    def as_dict(self) -> dict:
        return {"format": self.name, "path": str(self.path), "max_abs_diff": self.max_abs_diff,
                "tolerance": self.tolerance, "ok": self.ok, "runtime": self.runtime, "seconds": round(self.seconds, 1),
                "latency_ms_batch1": round(self.latency_ms, 1)}


class ExportError(RuntimeError):
    """An export failed or does not match the Keras model."""


OUTPUT_NAMES = {"class": "class_probabilities", "box": "box", "detections": "detections"}


def named_outputs(outputs: dict) -> dict:
    """The model's contract outputs under their exported names (see the module docstring).

    Other outputs are left out: a distilled model's "expert_logits" and "gate" feed its
    training loss (fracture.models.distill), not its users."""
    return {OUTPUT_NAMES[k]: v for k, v in outputs.items() if k in OUTPUT_NAMES}


def _reference(model, images: np.ndarray) -> dict:
    return {k: np.asarray(v) for k, v in named_outputs(model(images, training=False)).items()}


def comparable(outputs: dict, image_size: int) -> dict:
    """Outputs as values in [0, 1]: a detector's dense head as decoded boxes and scores."""
    out = {k: np.asarray(v, np.float64) for k, v in outputs.items() if k != "detections"}
    if "detections" in outputs:
        from fracture.models.detection.decode import dense_boxes_and_scores

        boxes, scores = dense_boxes_and_scores(np.asarray(outputs["detections"], np.float32), image_size)
        out["detection_boxes"], out["detection_scores"] = np.asarray(boxes, np.float64), np.asarray(scores, np.float64)
    return out


def _max_diff(reference: dict, outputs: dict, image_size: int) -> float:
    reference, outputs = comparable(reference, image_size), comparable(outputs, image_size)
    return max(float(np.abs(outputs[k] - reference[k]).max()) for k in reference)


def _latency_ms(run, path: Path, image: np.ndarray, image_size: int) -> float:
    """Median batch-1 time of `run(path, image)` plus decoding, after one warm-up call."""
    predict = run(path)
    comparable(predict(image), image_size)
    times = []
    for _ in range(LATENCY_RUNS):
        start = time.perf_counter()
        outputs = predict(image)
        if "detections" in outputs:
            from fracture.models.detection.decode import decode_detections

            decode_detections(np.asarray(outputs["detections"], np.float32), image_size, conf=0.25)
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def export_saved_model(model, out_dir: Path) -> Path:
    """A SavedModel whose `serving_default` signature takes `images` and returns named outputs."""
    import keras
    import tensorflow as tf

    size = model.input_shape[1]
    archive = keras.export.ExportArchive()
    archive.track(model)

    def serve(images):
        return named_outputs(model(images, training=False))

    archive.add_endpoint("serve", serve, input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32, name="images")])
    path = Path(out_dir) / "saved_model"
    archive.write_out(str(path), verbose=False)
    return path


def load_saved_model(path: Path):
    """`predict(images) -> outputs` of a SavedModel export."""
    import tensorflow as tf

    signature = tf.saved_model.load(str(path)).signatures["serving_default"]
    return lambda images: {k: v.numpy() for k, v in signature(images=tf.constant(images)).items()}


def tflite_runtime():
    """`(Interpreter class, name)`: ai-edge-litert when installed (tf.lite.Interpreter is
    deprecated in its favour), else tf.lite."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, "ai_edge_litert"
    except ImportError:
        import tensorflow as tf

        return tf.lite.Interpreter, "tf.lite"


def export_tflite(saved_model: Path, out_dir: Path, variant: str) -> Path:
    """fp32; fp16 (float16 weights); int8 (dynamic-range: int8 weights, float activations)."""
    import tensorflow as tf

    if variant not in TFLITE_VARIANTS:
        raise ValueError(f"tflite variant {variant!r}; expected one of {TFLITE_VARIANTS}")
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    if variant in ("fp16", "int8"):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if variant == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    path = Path(out_dir) / f"model_{variant}.tflite"
    path.write_bytes(converter.convert())
    return path


def load_tflite(path: Path):
    """`predict(images) -> outputs` of a TFLite export (one image at a time: its input shape).

    The interpreter gets every core (`num_threads`): left unset, its XNNPACK delegate runs
    one thread, while ONNX Runtime and TensorFlow use all cores by default, and latencies
    across formats are only comparable on the same cores."""
    interpreter_class, _ = tflite_runtime()
    interpreter = interpreter_class(model_path=str(path), num_threads=os.cpu_count() or 1)
    runner = interpreter.get_signature_runner("serving_default")

    def predict(images):
        outputs = [runner(images=image[None]) for image in images]
        return {k: np.concatenate([o[k] for o in outputs]) for k in outputs[0]}

    return predict


def export_onnx(model, out_dir: Path) -> Path:
    """ONNX through tf2onnx (pip install -e '.[export]')."""
    try:
        import tf2onnx
    except ImportError as exc:
        raise ExportError("ONNX export needs tf2onnx: pip install -e '.[export]'") from exc
    import tensorflow as tf

    size = model.input_shape[1]

    @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32, name="images")])
    def serve(images):
        return {k: tf.identity(v) for k, v in named_outputs(model(images, training=False)).items()}

    path = Path(out_dir) / "model.onnx"
    tf2onnx.convert.from_function(serve, input_signature=serve.input_signature, opset=17, output_path=str(path))
    return path


def load_onnx(path: Path):
    """`predict(images) -> outputs` of an ONNX export (onnxruntime, CPU)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [_exported_name(o.name) for o in session.get_outputs()]
    feed = session.get_inputs()[0].name
    return lambda images: dict(zip(names, session.run(None, {feed: images})))


def _exported_name(onnx_name: str) -> str:
    """tf2onnx may decorate output names (e.g. `Identity:0`-style suffixes); map them back."""
    return next((n for n in OUTPUT_NAMES.values() if n in onnx_name), onnx_name)


def export_run(model, out_dir: Path, fmt: str, images: np.ndarray) -> list[ExportCheck]:
    """Export in `fmt` ("saved_model", "tflite" = all three variants, or "onnx") and check each."""
    if fmt not in FORMATS:
        raise ValueError(f"format={fmt!r}; expected one of {', '.join(FORMATS)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    images = np.asarray(images, np.float32)
    reference = _reference(model, images)
    checks = []

    size = model.input_shape[1]

    def check(name, build, load, runtime):
        start = time.perf_counter()
        path = build()
        diff = _max_diff(reference, load(path)(images), size)
        seconds = time.perf_counter() - start
        latency = _latency_ms(load, path, images[:1], size)
        checks.append(ExportCheck(name, path, diff, TOLERANCE[name], runtime, seconds, latency))

    if fmt in ("saved_model", "tflite"):
        saved = out_dir / "saved_model"
        check("saved_model", lambda: export_saved_model(model, out_dir), load_saved_model, "tf.saved_model")
        if fmt == "tflite":
            for variant in TFLITE_VARIANTS:
                check(f"tflite_{variant}", lambda v=variant: export_tflite(saved, out_dir, v), load_tflite, tflite_runtime()[1])
    else:
        check("onnx", lambda: export_onnx(model, out_dir), load_onnx, "onnxruntime")
    write_json(out_dir / f"export_{fmt}.json", [c.as_dict() for c in checks])
    return checks

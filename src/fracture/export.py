"""Export a trained run: SavedModel, TFLite (fp32, fp16, dynamic-range int8), ONNX.

Every exported model takes raw 0-255 RGB float32 images of the run's input size
`(N, S, S, 3)` (resized as in training: data.resize), and returns `class_probabilities`
`(N, C)` and `box` `(N, 4)` (normalized xyxy on the model input). Each export is reloaded
and compared with the Keras model on a few images; the max abs difference must stay within
the format's tolerance.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fracture.runs import write_json

FORMATS = ("saved_model", "tflite", "onnx")
TFLITE_VARIANTS = ("fp32", "fp16", "int8")
# Max abs difference from the Keras model, on probabilities and box coordinates (both in [0, 1]).
TOLERANCE = {"saved_model": 1e-5, "onnx": 1e-4, "tflite_fp32": 1e-4, "tflite_fp16": 2e-2, "tflite_int8": 1e-1}


@dataclass
class ExportCheck:
    name: str
    path: Path
    max_abs_diff: float
    tolerance: float
    runtime: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.tolerance

    def as_dict(self) -> dict:
        return {"format": self.name, "path": str(self.path), "max_abs_diff": self.max_abs_diff,
                "tolerance": self.tolerance, "ok": self.ok, "runtime": self.runtime, "seconds": round(self.seconds, 1)}


class ExportError(RuntimeError):
    """An export failed or does not match the Keras model."""


def _reference(model, images: np.ndarray) -> dict:
    out = model(images, training=False)
    return {"class_probabilities": np.asarray(out["class"]), "box": np.asarray(out["box"])}


def _max_diff(reference: dict, outputs: dict) -> float:
    return max(float(np.abs(np.asarray(outputs[k], np.float64) - reference[k]).max()) for k in reference)


def export_saved_model(model, out_dir: Path) -> Path:
    """A SavedModel whose `serving_default` signature takes `images` and returns named outputs."""
    import keras
    import tensorflow as tf

    size = model.input_shape[1]
    archive = keras.export.ExportArchive()
    archive.track(model)

    def serve(images):
        outputs = model(images, training=False)
        return {"class_probabilities": outputs["class"], "box": outputs["box"]}

    archive.add_endpoint("serve", serve, input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32, name="images")])
    path = Path(out_dir) / "saved_model"
    archive.write_out(str(path), verbose=False)
    return path


def run_saved_model(path: Path, images: np.ndarray) -> dict:
    import tensorflow as tf

    signature = tf.saved_model.load(str(path)).signatures["serving_default"]
    return {k: v.numpy() for k, v in signature(images=tf.constant(images)).items()}


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


def run_tflite(path: Path, images: np.ndarray) -> dict:
    interpreter_class, _ = tflite_runtime()
    interpreter = interpreter_class(model_path=str(path))
    runner = interpreter.get_signature_runner("serving_default")
    outputs = [runner(images=image[None]) for image in images]  # batch 1: the converted input shape
    return {k: np.concatenate([o[k] for o in outputs]) for k in outputs[0]}


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
        outputs = model(images, training=False)
        return {"class_probabilities": tf.identity(outputs["class"]), "box": tf.identity(outputs["box"])}

    path = Path(out_dir) / "model.onnx"
    tf2onnx.convert.from_function(serve, input_signature=serve.input_signature, opset=17, output_path=str(path))
    return path


def run_onnx(path: Path, images: np.ndarray) -> dict:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    values = session.run(None, {session.get_inputs()[0].name: images})
    return {("class_probabilities" if "class" in n else "box"): v for n, v in zip(names, values)}


def export_run(model, out_dir: Path, fmt: str, images: np.ndarray) -> list[ExportCheck]:
    """Export in `fmt` ("saved_model", "tflite" = all three variants, or "onnx") and check each."""
    if fmt not in FORMATS:
        raise ValueError(f"format={fmt!r}; expected one of {', '.join(FORMATS)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    images = np.asarray(images, np.float32)
    reference = _reference(model, images)
    checks = []

    def check(name, build, run, runtime):
        start = time.perf_counter()
        path = build()
        diff = _max_diff(reference, run(path, images))
        checks.append(ExportCheck(name, path, diff, TOLERANCE[name], runtime, time.perf_counter() - start))

    if fmt in ("saved_model", "tflite"):
        saved = out_dir / "saved_model"
        check("saved_model", lambda: export_saved_model(model, out_dir), run_saved_model, "tf.saved_model")
        if fmt == "tflite":
            for variant in TFLITE_VARIANTS:
                check(f"tflite_{variant}", lambda v=variant: export_tflite(saved, out_dir, v), run_tflite, tflite_runtime()[1])
    else:
        check("onnx", lambda: export_onnx(model, out_dir), run_onnx, "onnxruntime")
    write_json(out_dir / f"export_{fmt}.json", [c.as_dict() for c in checks])
    return checks

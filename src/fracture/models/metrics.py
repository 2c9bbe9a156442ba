"""Metrics tracked during training (the honest evaluation lives in `fracture.evaluation`)."""

from __future__ import annotations

import keras
from keras import ops

from fracture.models.box_ops import iou

CLASS_METRICS = ("f1", "auc", "both")


@keras.saving.register_keras_serializable(package="fracture")
class BoxMeanIoU(keras.metrics.Metric):
    """Mean IoU between predicted and true boxes, over images with a box only.

    Use it as a *weighted* metric on the "box" output: the pipeline's box sample weight is
    the has-a-box mask, so "no finding" images are left out instead of counting as 0.
    """

    def __init__(self, name: str = "mean_iou", **kwargs):
        super().__init__(name=name, **kwargs)
        self.total = self.add_variable((), initializer="zeros", name="total")
        self.count = self.add_variable((), initializer="zeros", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        values = iou(ops.cast(y_pred, "float32"), ops.cast(y_true, "float32"))
        weight = ops.ones_like(values) if sample_weight is None else ops.reshape(ops.cast(sample_weight, "float32"), ops.shape(values))
        self.total.assign_add(ops.sum(values * weight))
        self.count.assign_add(ops.sum(weight))

    def result(self):
        return ops.divide_no_nan(self.total, self.count)

    def reset_state(self):
        self.total.assign(0.0)
        self.count.assign(0.0)


def build_metrics(num_classes: int, class_metric: str = "f1", single_box: bool = True) -> tuple[dict, dict]:
    """`(metrics, weighted_metrics)` for `model.compile`.

    Class metrics are unweighted (class weights would distort accuracy); the box IoU is
    weighted by the box mask, i.e. averaged over positives only. A dense detector
    (`single_box=False`) has no single box to score during training: its boxes are scored
    by COCO AP in scripts/evaluate.py, after decoding and NMS.
    """
    if class_metric not in CLASS_METRICS:
        raise ValueError(f"model.class_metric={class_metric!r}; expected one of {CLASS_METRICS}.")
    class_metrics = [keras.metrics.CategoricalAccuracy(name="accuracy")]
    if class_metric in ("f1", "both"):
        # threshold=None: the arg-max class counts as the prediction (single-label F1).
        class_metrics.append(keras.metrics.F1Score(average="macro", threshold=None, name="macro_f1"))
    if class_metric in ("auc", "both"):
        class_metrics.append(keras.metrics.AUC(multi_label=True, num_labels=num_classes, name="macro_auc"))
    return {"class": class_metrics}, ({"box": [BoxMeanIoU()]} if single_box else {})

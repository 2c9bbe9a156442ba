"""Teacher-student distillation with a mixture-of-experts head (the S0 seed system).

One model, saved and loaded as one `.keras` file like any other run's model:

    image -> experts_backbone -> [teacher pooled features (B, Ft), teacher logits (B, C),
                                  student feature map (B, h, w, Cs)]
          -> heads -> {"class": the mixture's probabilities, "box": the student's box,
                       "expert_logits": (B, 2, C) teacher then student, "gate": (B, 2)}

* **Teacher**: a finished run's best.keras (`model.distill.teacher_run`), frozen for good in
  a `FrozenExpert` layer: never trainable and always in inference mode. Fine-tuning
  unfreezes the backbone by setting `trainable` recursively, and that must not reach the
  teacher or its BatchNorm statistics. In a frozen phase the teacher's outputs are cached
  once with the student's features (`trainer.feature_cache`), as any backbone output is.
* **Student**: any registry backbone (`model.backbone`) with the usual heads
  (`fracture.models.heads.build_heads`), whose pooled features, logits and box are tapped.
* **Gate**: a small MLP on both experts' pooled features -> softmax weights g (one per
  expert, per image). The class output is the mixture g_t softmax(z_t) + g_s softmax(z_s)
  (Jacobs et al. 1991): a proper distribution, so the usual cross-entropy, metrics and the
  screening threshold apply to it unchanged. The layer named "class_logits" gives the
  mixture's log-probabilities, so Grad-CAM (which differentiates "class_logits" w.r.t. the
  backbone's last output, here the student's map) works on it like on any model.

The loss (`DistillationModel.compute_loss`): the compiled losses (the mixture's class loss and
the box loss) plus the student's objective of Hinton et al. (2015),
    alpha * T^2 * KL(softmax(z_t / T) || softmax(z_s / T)) + (1 - alpha) * CE(labels, softmax(z_s)),
the T^2 keeping the soft-target gradients the same size whatever T. The extra outputs
("expert_logits", "gate") carry what the loss needs out of the graph; exported models
keep the contract outputs only (`fracture.export.named_outputs`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import keras
from keras import ops

EXPERTS = ("teacher", "student")  # the order of "expert_logits" and "gate"
LOSS_OUTPUTS = ("expert_logits", "gate")  # outputs beside the contract's "class" and "box"


@dataclass
class DistillConfig:
    """`model.distill` (documented in conf/model/default.yaml)."""

    enabled: bool = False
    teacher_run: str | None = None
    temperature: float = 4.0
    alpha: float = 0.5
    gate_hidden_units: int = 64

    def __post_init__(self):
        if not self.temperature > 0:
            raise ValueError(f"model.distill.temperature={self.temperature}; expected > 0.")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"model.distill.alpha={self.alpha}; expected a weight in [0, 1].")
        if self.teacher_run and not self.enabled:
            raise ValueError(f"teacher_run={self.teacher_run} is set but model.distill.enabled is false (experiment=s0_student sets it).")


def distillation_terms(labels, teacher_logits, student_logits, temperature: float):
    """Per-image `(T^2 * KL(softmax(z_t/T) || softmax(z_s/T)), CE(labels, softmax(z_s)))`.

    Both in float32, from logits (log-softmax, never the log of a rounded probability).
    """
    labels = ops.cast(labels, "float32")
    teacher = ops.cast(teacher_logits, "float32") / temperature
    student = ops.cast(student_logits, "float32")
    log_t, log_s = ops.log_softmax(teacher, axis=-1), ops.log_softmax(student / temperature, axis=-1)
    kl = ops.sum(ops.exp(log_t) * (log_t - log_s), axis=-1) * (temperature**2)
    ce = -ops.sum(labels * ops.log_softmax(student, axis=-1), axis=-1)
    return kl, ce


@keras.saving.register_keras_serializable(package="fracture")
class DistillationLoss(keras.losses.Loss):
    """The student's objective `alpha * T^2 * KL + (1 - alpha) * CE` (see the module docstring).

    y_true: one-hot labels (B, C); y_pred: "expert_logits" (B, 2, C), teacher first.
    """

    def __init__(self, temperature: float = 4.0, alpha: float = 0.5, name: str = "distillation_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.temperature, self.alpha = float(temperature), float(alpha)

    def call(self, y_true, y_pred):
        kl, ce = distillation_terms(y_true, y_pred[:, 0], y_pred[:, 1], self.temperature)
        return self.alpha * kl + (1.0 - self.alpha) * ce

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature, "alpha": self.alpha}


@keras.saving.register_keras_serializable(package="fracture")
class DistillationModel(keras.Model):
    """A functional model whose loss adds the student's distillation objective.

    Built like `keras.Model(inputs, outputs)`; the outputs must include "expert_logits"
    (and "gate", logged). The extra terms use the class sample weights (class weights), as
    the compiled class loss does, and are logged per epoch as `distill_kl` (T^2-scaled),
    `student_ce` and `gate_teacher` (the teacher's mean gate weight), train and validation.
    """

    def __init__(self, *args, temperature: float = 4.0, alpha: float = 0.5, **kwargs):
        super().__init__(*args, **kwargs)
        self.distillation = DistillationLoss(temperature, alpha)
        self.kl_tracker = keras.metrics.Mean(name="distill_kl")
        self.student_ce_tracker = keras.metrics.Mean(name="student_ce")
        self.gate_tracker = keras.metrics.Mean(name="gate_teacher")

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        loss = super().compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training)
        labels, experts = y["class"], y_pred["expert_logits"]
        weight = sample_weight.get("class") if isinstance(sample_weight, dict) else None
        kl, ce = distillation_terms(labels, experts[:, 0], experts[:, 1], self.distillation.temperature)
        self.kl_tracker.update_state(kl)
        self.student_ce_tracker.update_state(ce)
        self.gate_tracker.update_state(ops.cast(y_pred["gate"][:, 0], "float32"))
        return loss + self.distillation(labels, experts, sample_weight=weight)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        """The compiled metrics, which Keras matches to targets and sample weights by output
        name: the outputs that only feed the loss get stand-ins (no metric reads them)."""
        extra = {k: y_pred[k] for k in LOSS_OUTPUTS}
        y = {**y, **extra}
        if isinstance(sample_weight, dict):
            ones = ops.ones_like(y_pred["gate"][:, 0])
            sample_weight = {**sample_weight, **{k: ones for k in LOSS_OUTPUTS}}
        return super().compute_metrics(x, y, y_pred, sample_weight)

    def get_config(self):
        d = self.distillation
        return {**super().get_config(), "temperature": d.temperature, "alpha": d.alpha}


@keras.saving.register_keras_serializable(package="fracture")
class FrozenExpert(keras.layers.Layer):
    """A trained model used as a fixed function: never trainable, always in inference mode.

    `trainable` stays False whatever is assigned to it, so `set_backbone_trainable` (which
    sets it recursively on the backbone that holds this layer) cannot unfreeze it.
    """

    def __init__(self, expert: keras.Model, **kwargs):
        kwargs.pop("trainable", None)
        super().__init__(trainable=False, **kwargs)
        expert.trainable = False
        self.expert = expert

    @property
    def trainable(self) -> bool:
        return False

    @trainable.setter
    def trainable(self, value) -> None:
        self._trainable = False  # Layer.__init__ assigns it; any later assignment is ignored

    def call(self, inputs):
        return self.expert(inputs, training=False)

    def compute_output_spec(self, inputs):
        return self.expert.compute_output_spec(inputs)

    def get_config(self):
        return {**super().get_config(), "expert": keras.saving.serialize_keras_object(self.expert)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["expert"] = keras.saving.deserialize_keras_object(config["expert"])
        return cls(**config)


@keras.saving.register_keras_serializable(package="fracture")
class MixtureOfExperts(keras.layers.Layer):
    """`[gate logits (B, K), K expert logits (B, C)]` -> log of sum_k g_k softmax(z_k) (B, C),
    g = softmax(gate logits): computed as a logsumexp of log-softmaxes, so no probability is
    rounded to 0 before its log is taken."""

    def call(self, inputs):
        gate_logits, *expert_logits = [ops.cast(t, "float32") for t in inputs]
        log_probs = ops.stack([ops.log_softmax(z, axis=-1) for z in expert_logits], axis=1)
        log_gate = ops.expand_dims(ops.log_softmax(gate_logits, axis=-1), -1)
        return ops.logsumexp(log_gate + log_probs, axis=1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[1])


@keras.saving.register_keras_serializable(package="fracture")
class StackExperts(keras.layers.Layer):
    """K tensors (B, C) -> (B, K, C), in float32 (the loss reads them)."""

    def call(self, inputs):
        return ops.stack([ops.cast(t, "float32") for t in inputs], axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], len(input_shape), *input_shape[0][1:])


class TeacherError(ValueError):
    """`model.distill.teacher_run` cannot be this model's teacher; the message says why."""


def load_teacher(run_dir: str | None, image_size: int, class_names: Sequence[str] | None, num_classes: int) -> keras.Model:
    """The best.keras of a finished run, checked against this model's classes and input size.

    Raises:
        TeacherError: no teacher_run, or it is missing, not finished, a detector, or has other
            classes (names, when known, else their number) or another input size.
    """
    from fracture.runs import FINISHED, RunError, load_run, read_run_info

    hint = "pass teacher_run=<the folder of a finished experiment=s0_teacher run>"
    if not run_dir:
        raise TeacherError(f"model.distill.enabled needs a teacher: {hint}.")
    try:
        status = read_run_info(run_dir).get("status")
        if status != FINISHED:
            state = f"status {status!r}" if status else "no run.json (not a training run folder, or missing)"
            raise TeacherError(f"teacher_run={run_dir}: {state}, not finished; {hint}.")
        teacher = load_run(run_dir)
    except RunError as exc:
        raise TeacherError(f"teacher_run: {exc}") from exc
    if "box" not in teacher.model.output or "expert_logits" in teacher.model.output:
        kind = "a dense detector" if "box" not in teacher.model.output else "a distilled mixture"
        raise TeacherError(f"teacher_run={run_dir}: {kind}; the teacher must be a single-box model (e.g. experiment=s0_teacher).")
    theirs = teacher.classes.class_names
    if (list(class_names) != theirs) if class_names is not None else (len(theirs) != num_classes):
        ours = list(class_names) if class_names is not None else f"{num_classes} classes"
        raise TeacherError(f"teacher_run={run_dir}: the teacher predicts {theirs} ({teacher.layout.classes}); this data gives {ours}.")
    size = teacher.model.input_shape[1]
    if size != image_size:
        raise TeacherError(f"teacher_run={run_dir}: the teacher takes {size} px images; data.image_size={image_size}.")
    return teacher.model


def tap_heads(heads: keras.Model, name: str) -> keras.Model:
    """`build_heads` heads -> a model of the same input giving {"features": pooled (after
    dropout), "logits": class logits, "box": box}, sharing their layers."""
    outputs = {
        "features": heads.get_layer("dropout").output,
        "logits": heads.get_layer("class_logits").output,
        "box": heads.output["box"],
    }
    return keras.Model(heads.input, outputs, name=name)


def mixture_of_experts(
    teacher: keras.Model, student_backbone: keras.Model, student_heads: keras.Model, cfg: DistillConfig, image_size: int
) -> tuple[DistillationModel, keras.Model, DistillationModel]:
    """`(model, experts_backbone, heads_model)`; see the module docstring.

    Args:
        teacher: a trained single-box model (`backbone -> "heads"`), e.g. from `load_teacher`.
        student_backbone, student_heads: a registry backbone and `build_heads` heads on it.

    Returns:
        The end-to-end model; the backbone (image -> [teacher pooled, teacher logits, student
        map], the teacher frozen); the heads alone as a `DistillationModel` (trained on cached
        backbone outputs in a frozen phase). All three share their layers.
    """
    images = keras.Input((image_size, image_size, 3), name="image")
    teacher_backbone = next(layer for layer in teacher.layers if layer.name.endswith("_backbone"))
    teacher_heads = tap_heads(teacher.get_layer("heads"), "teacher_heads")
    tapped = teacher_heads(teacher_backbone(images))
    teacher_net = keras.Model(images, [tapped["features"], tapped["logits"]], name="teacher")
    t_features, t_logits = FrozenExpert(teacher_net, name="frozen_teacher")(images)
    backbone = keras.Model(images, [t_features, t_logits, student_backbone(images)], name="experts_backbone")

    inputs = [keras.Input(tuple(t.shape[1:]), name=n) for t, n in zip(backbone.outputs, ("teacher_features", "teacher_logits", "student_features"))]
    student = tap_heads(student_heads, "student_heads")(inputs[2])
    gate_in = keras.layers.Concatenate(name="gate_features")([inputs[0], student["features"]])
    if cfg.gate_hidden_units:
        gate_in = keras.layers.Dense(cfg.gate_hidden_units, activation="relu", name="gate_hidden")(gate_in)
    gate_logits = keras.layers.Dense(len(EXPERTS), dtype="float32", name="gate_logits")(gate_in)
    mixture = MixtureOfExperts(dtype="float32", name="class_logits")([gate_logits, inputs[1], student["logits"]])
    outputs = {
        "class": keras.layers.Activation("softmax", dtype="float32", name="class")(mixture),
        "box": student["box"],
        "expert_logits": StackExperts(dtype="float32", name="expert_logits")([inputs[1], student["logits"]]),
        "gate": keras.layers.Activation("softmax", dtype="float32", name="gate")(gate_logits),
    }
    heads = keras.Model(inputs, outputs, name="heads")
    loss_args = {"temperature": cfg.temperature, "alpha": cfg.alpha}
    heads_model = DistillationModel(inputs, heads(inputs), name="distill_heads", **loss_args)
    model = DistillationModel(images, heads(backbone(images)), name=f"fracture_{student_backbone.name.removesuffix('_backbone')}_moe", **loss_args)
    return model, backbone, heads_model

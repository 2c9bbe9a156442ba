"""`trainer.precision`: which Keras dtype policy to train under.

`auto` picks mixed_float16 on NVIDIA GPUs of compute capability >= 7.0 (tensor cores),
mixed_bfloat16 on TPUs, and float32 otherwise: mixed precision gives no speed-up on CPUs
(measured on this project's 2-core machine), and older GPUs lack fast float16 math.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")


@dataclass(frozen=True)
class Accelerators:
    """What the machine has. `gpu_compute_capabilities`: one (major, minor) per GPU."""

    gpu_compute_capabilities: tuple = field(default_factory=tuple)
    tpu: bool = False


def detect_accelerators() -> Accelerators:
    """Query TensorFlow for GPUs (with compute capability) and TPUs."""
    import tensorflow as tf

    capabilities = []
    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        capabilities.append(tuple(details.get("compute_capability") or (0, 0)))
    return Accelerators(tuple(capabilities), bool(tf.config.list_logical_devices("TPU")))


def resolve_precision(requested: str, accelerators: Accelerators) -> str:
    """The dtype policy name for `requested` on this hardware (pure, so it is testable)."""
    if requested not in PRECISIONS:
        raise ValueError(f"trainer.precision={requested!r}; expected one of {', '.join(PRECISIONS)}.")
    if requested != "auto":
        return requested
    if accelerators.tpu:
        return "mixed_bfloat16"
    gpus = accelerators.gpu_compute_capabilities
    if gpus and all(cc >= (7, 0) for cc in gpus):
        return "mixed_float16"
    return "float32"


def apply_precision(requested: str, accelerators: Accelerators | None = None) -> str:
    """Resolve and set the global Keras dtype policy; returns the policy name."""
    import keras

    policy = resolve_precision(requested, accelerators or detect_accelerators())
    keras.mixed_precision.set_global_policy(policy)
    return policy

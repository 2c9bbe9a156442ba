"""Typed view of the `data` config group, so library code never reads raw DictConfigs.

Each field is documented in `conf/data/yolo.yaml`, the base of every data config.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

ANNOTATION_MODES = ("yolo", "coco", "merge")
NEGATIVE_MODES = ("keep", "drop")
MULTI_OBJECT_RULES = ("largest", "first", "union")
RESIZE_MODES = ("letterbox", "stretch")


@dataclass
class AugmentConfig:
    """Train-only, box-aware augmentation. Ranges are fractions (rotation: of a full turn)."""

    enabled: bool = True
    horizontal_flip: bool = True
    rotation: float = 0.03
    translation: float = 0.05
    zoom: float = 0.1
    brightness: float = 0.1
    contrast: float = 0.1


@dataclass
class DataConfig:
    """How to read a dataset and feed it to a model (see conf/data/yolo.yaml)."""

    root: str
    yaml: str = "data.yaml"
    names: list[str] | None = None
    rename: dict[str, str] = field(default_factory=dict)
    annotations: str = "yolo"
    coco_file: str | None = None
    min_instances: int = 10
    negatives: str = "keep"
    negative_class: str = "no finding"
    multi_object_rule: str = "largest"
    max_coordinate_overshoot: float = 0.05
    max_image_pixels: int = 50_000_000
    train_split: str = "train"
    val_split: str = "valid"
    image_size: int = 224
    resize: str = "letterbox"
    batch_size: int = 32
    cache: str | None = "memory"
    shuffle_buffer: int = 4096
    seed: int = 42
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        checks = {
            "annotations": (self.annotations, ANNOTATION_MODES),
            "negatives": (self.negatives, NEGATIVE_MODES),
            "multi_object_rule": (self.multi_object_rule, MULTI_OBJECT_RULES),
            "resize": (self.resize, RESIZE_MODES),
        }
        for name, (value, allowed) in checks.items():
            if value not in allowed:
                raise ValueError(f"data.{name}={value!r}; expected one of {', '.join(allowed)}.")
        if isinstance(self.augment, dict):
            self.augment = AugmentConfig(**self.augment)

    @classmethod
    def from_mapping(cls, mapping: Any) -> "DataConfig":
        """Build from a Hydra/OmegaConf node or a dict; keys the class does not know are ignored
        (data configs may carry extra sections, such as `synthetic`)."""
        try:
            from omegaconf import OmegaConf

            if OmegaConf.is_config(mapping):
                mapping = OmegaConf.to_container(mapping, resolve=True)
        except ImportError:  # pragma: no cover - omegaconf is a dependency
            pass
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in dict(mapping).items() if k in known}
        if values.get("root") in (None, "", "???"):
            raise ValueError(
                "data.root is not set: pass data.root=<folder holding data.yaml> "
                "(or set FRACTURE_DATA_ROOT in .env)."
            )
        values["rename"] = dict(values.get("rename") or {})
        return cls(**values)


def data_config_from_hydra(node: Any) -> DataConfig:
    """The typed data config of a composed Hydra `data` node.

    A node with a `synthetic` section (conf/data/synthetic.yaml) describes a generated
    dataset: it is written to `root` first, unless already there from the same spec.
    """
    from omegaconf import OmegaConf

    container = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)
    spec = container.get("synthetic")
    if spec:
        from fracture.data.synthetic import SyntheticSpec, ensure_synthetic

        ensure_synthetic(container["root"], SyntheticSpec(**spec))
    return DataConfig.from_mapping(container)

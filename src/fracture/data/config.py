"""Typed view of the `data` config group, so library code never reads raw DictConfigs.

Each field is documented in `conf/data/yolo.yaml`, the base of every data config.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from fracture.data.layout import DatasetError, canonical_split
from fracture.env import DATA_ROOT_VAR

FORMATS = ("yolo", "folders")  # which reader reads the dataset (fracture.data.index.reader_for)
ANNOTATION_MODES = ("yolo", "coco", "merge")
NEGATIVE_MODES = ("keep", "drop")
# "all" keeps every box (up to `max_boxes`) for a detector; the others reduce an image to
# one target (see fracture.data.index.select_target).
MULTI_OBJECT_RULES = ("largest", "first", "union", "all")
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
    format: str = "yolo"
    yaml: str = "data.yaml"
    names: list[str] | None = None
    rename: dict[str, str] = field(default_factory=dict)
    annotations: str = "yolo"
    coco_file: str | None = None
    min_instances: int = 10
    negatives: str = "keep"
    negative_class: str = "no finding"
    multi_object_rule: str = "largest"
    max_boxes: int = 32
    max_coordinate_overshoot: float = 0.05
    max_image_pixels: int = 50_000_000
    train_split: str = "train"
    val_split: str = "valid"
    image_size: int = 224
    resize: str = "letterbox"
    batch_size: int = 32
    cache: str | None = "memory"
    shuffle_buffer: int = 4096
    negatives_per_epoch: float = 1.0
    seed: int = 42
    allow_shrink: bool = False
    # format=folders (conf/data/folders.yaml documents each): where the class folders are,
    # YOLO box files by image stem, and how a dataset without split folders is split.
    images_dir: str | None = None
    boxes_dir: str | None = None
    split_csv: str | None = None
    split_csv_column: str = "image_id"
    split_fractions: dict[str, float] = field(default_factory=lambda: {"train": 0.7, "valid": 0.15, "test": 0.15})
    split_seed: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        checks = {
            "format": (self.format, FORMATS),
            "annotations": (self.annotations, ANNOTATION_MODES),
            "negatives": (self.negatives, NEGATIVE_MODES),
            "multi_object_rule": (self.multi_object_rule, MULTI_OBJECT_RULES),
            "resize": (self.resize, RESIZE_MODES),
        }
        for name, (value, allowed) in checks.items():
            if value not in allowed:
                raise ValueError(f"data.{name}={value!r}; expected one of {', '.join(allowed)}.")
        if self.max_boxes < 1:
            raise ValueError(f"data.max_boxes={self.max_boxes}; expected at least 1.")
        if not 0.0 < self.negatives_per_epoch <= 1.0:
            raise ValueError(f"data.negatives_per_epoch={self.negatives_per_epoch}; expected a fraction in (0, 1].")
        if isinstance(self.augment, dict):
            self.augment = AugmentConfig(**self.augment)
        self.split_fractions = {canonical_split(k): float(v) for k, v in dict(self.split_fractions).items()}
        fractions = self.split_fractions.values()
        if any(v < 0 for v in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
            raise ValueError(f"data.split_fractions={self.split_fractions}; expected fractions >= 0 that sum to 1.")

    @classmethod
    def from_mapping(cls, mapping: Any) -> "DataConfig":
        """Build from a Hydra/OmegaConf node or a dict.

        Raises:
            ValueError: a key is neither a field nor one of `EXTRA_SECTIONS` (a typo such
                as `+data.batchsize=8` would otherwise be ignored without a word), or the
                root is not set.
        """
        reads_env = reads_data_root_env(mapping)
        values = {k: v for k, v in _plain(mapping).items() if k not in EXTRA_SECTIONS}
        _refuse_unknown_keys(values, cls, "data")
        _refuse_unknown_keys(values.get("augment") or {}, AugmentConfig, "data.augment")
        if values.get("root") in (None, "", "???"):
            raise ValueError(f"data.root is not set: {root_hint(reads_env, env_set=False)}")
        values["rename"] = dict(values.get("rename") or {})
        return cls(**values)


# Sections a data config may carry for other code: `synthetic` is read by
# `data_config_from_hydra` (conf/data/synthetic.yaml), not by `DataConfig`.
EXTRA_SECTIONS = ("synthetic",)
PASS_ROOT = "pass data.root=<folder holding data.yaml>"


def _plain(mapping: Any) -> dict:
    """A resolved plain dict of a Hydra/OmegaConf node or a mapping."""
    try:
        from omegaconf import OmegaConf

        if OmegaConf.is_config(mapping):
            return OmegaConf.to_container(mapping, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        pass
    return dict(mapping)


def _refuse_unknown_keys(values: dict, config_class: type, prefix: str) -> None:
    known = [f.name for f in fields(config_class)]
    unknown = [k for k in values if k not in known]
    if not unknown:
        return
    named = []
    for key in unknown:
        close = difflib.get_close_matches(str(key), known, n=1)
        named.append(f"{prefix}.{key}" + (f" (did you mean {prefix}.{close[0]}?)" if close else ""))
    extra = f", plus the extra sections: {', '.join(EXTRA_SECTIONS)}" if prefix == "data" else ""
    raise ValueError(
        f"Unknown config key(s) {', '.join(named)}. Valid keys: {', '.join(known)}{extra}."
    )


def reads_data_root_env(node: Any) -> bool:
    """Whether this data config takes its root from FRACTURE_DATA_ROOT.

    Only conf/data/bone_fracture_yolo8.yaml does: the variable names the default
    dataset's folder (see .env.example), so a generic config such as `data=yolo` must not
    quietly read that dataset. A `data.root=...` override replaces the interpolation, so
    the answer follows what the user actually typed. A plain dict (already resolved)
    cannot say, and counts as not reading it.
    """
    try:
        from omegaconf import OmegaConf
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        return False
    if not OmegaConf.is_config(node):
        return False
    raw = OmegaConf.to_container(node, resolve=False).get("root")
    return isinstance(raw, str) and f"oc.env:{DATA_ROOT_VAR}" in raw


def root_hint(reads_env: bool, env_set: bool) -> str:
    """What to do when the dataset root is unset or missing, for the config at hand."""
    if not reads_env:
        return f"{PASS_ROOT}."
    if env_set:
        return f"it comes from {DATA_ROOT_VAR} (shell or .env): correct that, or {PASS_ROOT}."
    return (
        f"set {DATA_ROOT_VAR} in .env, or {PASS_ROOT}, "
        "or run `python scripts/download_data.py` to get the default dataset."
    )


def data_config_from_hydra(node: Any) -> DataConfig:
    """The typed data config of a composed Hydra `data` node.

    A node with a `synthetic` section (conf/data/synthetic.yaml) describes a generated
    dataset: it is written to `root` first, unless already there from the same spec.

    Raises:
        DatasetError: the root folder does not exist; the message says how this data
            config sets its root (FRACTURE_DATA_ROOT or data.root).
    """
    from omegaconf import OmegaConf

    config = DataConfig.from_mapping(node)
    container = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)
    spec = container.get("synthetic")
    if spec:
        from fracture.data.synthetic import SyntheticSpec, ensure_synthetic

        _refuse_unknown_keys(spec, SyntheticSpec, "data.synthetic")
        ensure_synthetic(container["root"], SyntheticSpec(**spec))
    if not Path(config.root).is_dir():
        hint = root_hint(reads_data_root_env(node), env_set=bool(os.environ.get(DATA_ROOT_VAR)))
        raise DatasetError(f"Dataset root {config.root} does not exist: {hint}")
    return config

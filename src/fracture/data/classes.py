"""Class names: renaming, dropping underrepresented classes, and the saved mapping.

Three id spaces exist and this module is the only place that converts between them:

* *source ids*: the ids written in YOLO label files, indexing data.yaml's `names`;
* *label ids*: ids into `label_names`, the source names after `data.rename` (two source
  names renamed to the same name become one class);
* *class ids*: ids into `class_names`, the label names that survived `min_instances`,
  plus the "no finding" class when negatives are kept. Models predict class ids.

`ClassMapping` is saved next to every model (`classes.json`) and reloaded by evaluation
and prediction, so labels are always remapped exactly as in training.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path


def renamed_label_names(source_names: list[str], rename: dict[str, str]) -> tuple[list[str], list[int]]:
    """Apply a simultaneous rename (so `{a: b, b: a}` swaps) to the source names.

    Returns:
        The unique label names in order of first appearance, and for every source id its
        label id.
    """
    unknown = sorted(set(rename) - set(source_names))
    if unknown:
        raise ValueError(
            f"data.rename names {unknown} that are not class names; known: {source_names}."
        )
    label_names: list[str] = []
    source_to_label: list[int] = []
    for name in source_names:
        new = rename.get(name, name)
        if new not in label_names:
            label_names.append(new)
        source_to_label.append(label_names.index(new))
    return label_names, source_to_label


@dataclass
class ClassMapping:
    """The classes a model is trained on and how they were derived from the dataset.

    Attributes:
        source_names: class names as data.yaml lists them (YOLO id order).
        rename: the `data.rename` applied to them.
        label_names: source names after renaming.
        kept: label names with at least `min_instances` train instances, in label order.
        dropped: label names dropped for having too few train instances -> instance count.
        min_instances: the threshold used.
        negative_class: name of the appended "no finding" class, or None when negatives
            were dropped.
    """

    source_names: list[str]
    rename: dict[str, str]
    label_names: list[str]
    kept: list[str]
    dropped: dict[str, int] = field(default_factory=dict)
    min_instances: int = 0
    negative_class: str | None = None

    @classmethod
    def from_counts(
        cls,
        source_names: list[str],
        rename: dict[str, str],
        train_instances: Counter,
        min_instances: int,
        negative_class: str | None,
    ) -> "ClassMapping":
        """Decide the kept classes from train instance counts (keyed by label name)."""
        label_names, _ = renamed_label_names(source_names, rename)
        kept = [n for n in label_names if train_instances.get(n, 0) >= min_instances]
        dropped = {n: int(train_instances.get(n, 0)) for n in label_names if n not in kept}
        if negative_class is not None and negative_class in kept:
            raise ValueError(f"The negative class name {negative_class!r} is already a class name.")
        return cls(
            source_names=list(source_names),
            rename=dict(rename),
            label_names=label_names,
            kept=kept,
            dropped=dropped,
            min_instances=min_instances,
            negative_class=negative_class,
        )

    @property
    def class_names(self) -> list[str]:
        """What the model's class head predicts, in output order."""
        return self.kept + ([self.negative_class] if self.negative_class else [])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def negative_id(self) -> int | None:
        return len(self.kept) if self.negative_class else None

    def label_to_class(self) -> dict[int, int]:
        """Label id -> class id, for kept labels only."""
        return {self.label_names.index(n): i for i, n in enumerate(self.kept)}

    def source_to_label(self) -> list[int]:
        return renamed_label_names(self.source_names, self.rename)[1]

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "class_names": self.class_names}, indent=2)

    def save(self, path: str | Path) -> None:
        from fracture.runs import write_text  # the run folder's atomic writer

        write_text(path, self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "ClassMapping":
        data = json.loads(Path(path).read_text())
        data.pop("class_names", None)
        return cls(**data)

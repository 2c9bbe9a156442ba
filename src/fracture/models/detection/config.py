"""The `model.detection` config group: assigner, loss and decoding knobs of the dense head.

Typed dataclasses, so `fracture.config.typed` rejects unknown keys by name (documented in
conf/model/default.yaml). The neck/head widths and strides are `ModelConfig` keys.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

BOX_LOSSES = ("giou", "ciou")
CLASS_LOSSES = ("focal", "quality_focal")
ASSIGNERS = ("center_sampling", "task_aligned")
PRIOR_PROBABILITY = 0.01


@dataclass
class AssignerConfig:
    """Which locations learn which box (see `detection.assigner`).

    Attributes:
        kind: "center_sampling" (FCOS): positives from geometry alone, fixed before
            training. "task_aligned" (TOOD/YOLOv8): among the locations inside a box, the
            `topk` whose current prediction scores `p^align_alpha * IoU^align_beta` highest
            for that box's class; a location claimed twice keeps the box its predicted box
            overlaps most. Positives then follow the locations that already localize well,
            which plain center sampling ignores (see `DetectionLossConfig.class_loss`).
        center_radius: "center_sampling": a location is a candidate when it lies in the box
            AND within `center_radius * stride` of the box centre.
        regress_ranges: the largest ltrb distance (input pixels) a location may regress at
            each level boundary: level l takes [ranges[l-1], ranges[l]] (0 and inf at the
            ends), so there is one fewer value than levels. "task_aligned" uses them only
            to pick the level of the nearest location (below).
        nearest_positive: the location nearest each box centre, on the level its size
            belongs to, is always positive: a box smaller than a stride may hold no
            location centre at all, and fractures are often small. Under "task_aligned"
            it is a candidate, so a box without a location inside still gets one.
        topk, align_alpha, align_beta: "task_aligned" only (YOLOv8's 10, 0.5, 6.0).
    """

    kind: str = "center_sampling"
    center_radius: float = 2.5
    regress_ranges: list = field(default_factory=lambda: [64.0, 128.0])
    nearest_positive: bool = True
    topk: int = 10
    align_alpha: float = 0.5
    align_beta: float = 6.0

    def __post_init__(self):
        if self.kind not in ASSIGNERS:
            raise ValueError(f"model.detection.assigner.kind={self.kind!r}; expected one of {ASSIGNERS}.")
        if self.topk < 1:
            raise ValueError(f"model.detection.assigner.topk={self.topk}; must be >= 1.")
        if self.center_radius <= 0:
            raise ValueError(f"model.detection.assigner.center_radius={self.center_radius}; must be > 0.")
        if list(self.regress_ranges) != sorted(self.regress_ranges):
            raise ValueError(f"model.detection.assigner.regress_ranges={self.regress_ranges}; must be increasing.")


@dataclass
class DetectionLossConfig:
    """Weights and shapes of the three terms of `DetectionLoss`.

    Attributes:
        class_loss: "focal": a positive location's class target is 1 (Lin et al. 2017).
            "quality_focal": it is the IoU of that location's predicted box with its
            matched box (GFL's quality focal loss, Li et al. 2020), so a location whose box
            is poor scores low. With plain focal loss every centre-sampled location learns
            to score high, and on this data the best-scoring location on a fracture had a
            median IoU of 0.38 while the best location's box had 0.75.
        focal_gamma, focal_alpha: "focal": the sigmoid focal loss's gamma and alpha.
        quality_focal_beta: "quality_focal": the |target - p|^beta modulation (GFL: 2).
        box: "giou" or "ciou" on the positives' decoded boxes.
        class_weight, box_weight, quality_weight: term weights (each term is a sum
            normalised by the batch's number of positives, at least 1).
    """

    class_loss: str = "focal"
    focal_gamma: float = 2.0
    focal_alpha: float = 0.25
    quality_focal_beta: float = 2.0
    box: str = "giou"
    class_weight: float = 1.0
    box_weight: float = 2.0
    quality_weight: float = 1.0

    def __post_init__(self):
        if self.class_loss not in CLASS_LOSSES:
            raise ValueError(f"model.detection.loss.class_loss={self.class_loss!r}; expected one of {CLASS_LOSSES}.")
        if self.box not in BOX_LOSSES:
            raise ValueError(f"model.detection.loss.box={self.box!r}; expected one of {BOX_LOSSES}.")


@dataclass
class DecodeConfig:
    """Defaults for `decode_detections` (evaluation's; predict passes its own confidence).

    Attributes:
        test_time_flip: also run the detector on the mirror image of each input and average
            the two dense outputs per location before NMS (`detection.flip`). Doubles the
            detector's inference cost. Evaluate, predict and serve apply it; the class head
            (and so the screening threshold), the training-time valid mAP and the exported
            models are the single pass.
    """

    confidence: float = 0.001
    iou: float = 0.7
    max_detections: int = 300
    test_time_flip: bool = False


@dataclass
class DetectionConfig:
    """`model.detection`: used only when `model.box_head=dense`.

    Attributes:
        norm_groups: GroupNormalization groups in the neck and head (must divide
            `model.neck_width`); GroupNorm because CPU batches are small.
        prior_probability: initial sigmoid of every class logit (the focal-loss prior), so
            the first loss is ~1 instead of hundreds from the many background locations.
    """

    norm_groups: int = 16
    prior_probability: float = PRIOR_PROBABILITY
    assigner: AssignerConfig = field(default_factory=AssignerConfig)
    loss: DetectionLossConfig = field(default_factory=DetectionLossConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)

    def __post_init__(self):
        if not 0.0 < self.prior_probability < 1.0:
            raise ValueError(f"model.detection.prior_probability={self.prior_probability}; must be in (0, 1).")


def prior_bias(probability: float) -> float:
    """The logit bias whose sigmoid is `probability`: -log((1 - p) / p)."""
    return -math.log((1.0 - probability) / probability)

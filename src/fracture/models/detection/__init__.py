"""The multi-scale anchor-free detector (`model.box_head=dense`).

backbone [C3, C4, C5] -> `neck` (FPN + PAN) -> shared `head` -> "detections" `(B, N, 4+1+K)`
(layout in `layout`), trained with `loss.DetectionLoss` (in-graph `assigner`), decoded by
`decode`. The image-level class head pools C5 beside it (`head.build_dense_heads`).
"""

from fracture.models.detection.anchors import (
    STRIDES,
    AnchorPoints,
    anchor_points,
    feature_sizes,
    num_locations,
)
from fracture.models.detection.assigner import Assignment, Predictions, assign
from fracture.models.detection.config import (
    AssignerConfig,
    DecodeConfig,
    DetectionConfig,
    DetectionLossConfig,
    prior_bias,
)
from fracture.models.detection.decode import (
    decode_detections,
    dense_boxes_and_scores,
)
from fracture.models.detection.head import (
    ClassHeadSpec,
    DenseHeadSpec,
    build_dense_heads,
)
from fracture.models.detection.layout import (
    CLASS_START,
    QUALITY_CHANNEL,
    dense_channels,
    split_dense,
)
from fracture.models.detection.loss import DetectionLoss, build_detection_losses
from fracture.models.detection.neck import NeckSpec, fpn_pan

__all__ = [
    "CLASS_START",
    "QUALITY_CHANNEL",
    "STRIDES",
    "AnchorPoints",
    "AssignerConfig",
    "Assignment",
    "ClassHeadSpec",
    "DecodeConfig",
    "DenseHeadSpec",
    "DetectionConfig",
    "DetectionLoss",
    "DetectionLossConfig",
    "NeckSpec",
    "Predictions",
    "anchor_points",
    "assign",
    "build_dense_heads",
    "build_detection_losses",
    "decode_detections",
    "dense_boxes_and_scores",
    "dense_channels",
    "feature_sizes",
    "fpn_pan",
    "num_locations",
    "prior_bias",
    "split_dense",
]

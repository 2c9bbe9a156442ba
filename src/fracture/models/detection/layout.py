"""Channel layout of the dense "detections" output `(B, N, 4 + 1 + K)`.

    [..., 0:4]  l, t, r, b: distances from the location's point to the box sides, as
                fractions of the model input side (>= 0; softplus * stride)
    [..., 4]    quality logit (predicted IoU of this location's box with its object)
    [..., 5:]   K class logits (sigmoid, one per dataset class id 0..K-1)

Logits rather than probabilities so the loss can use the numerically stable forms.
"""

from __future__ import annotations

from keras import ops

BOX_CHANNELS = 4
QUALITY_CHANNEL = 4
CLASS_START = 5


def dense_channels(num_classes: int) -> int:
    return CLASS_START + num_classes


def split_dense(dense):
    """`(distances (B, N, 4), quality_logits (B, N), class_logits (B, N, K))`."""
    return dense[..., :BOX_CHANNELS], dense[..., QUALITY_CHANNEL], dense[..., CLASS_START:]


def distances_to_boxes(points, distances):
    """Points `(N, 2)` (x, y) and ltrb `(..., N, 4)` -> xyxy `(..., N, 4)`, same units."""
    return ops.concatenate([points - distances[..., :2], points + distances[..., 2:]], axis=-1)

"""The tf.data pipeline: samples -> batches of `(images, targets, sample_weights)`.

Element structure, ready for a two-head Keras model:

* `images`: float32 `(B, S, S, 3)`, raw 0-255 RGB (models hold their own preprocessing);
* `targets`: `{"class": one-hot (B, C), "box": normalized xyxy (B, 4)}`;
* `sample_weights`: `{"class": per-image class weight (B,), "box": box mask (B,)}`; the box
  mask is 0 for "no finding" negatives so they never pull the box head.

With `data.multi_object_rule=all` (a detector) every box is a target instead:

* `targets`: `{"class": one-hot (B, C), "detections": float32 (B, max_boxes, 5)}`; each
  row is `[x1, y1, x2, y2, class_id]`, the box normalized xyxy in the model input frame
  (after the same resize/letterbox as the single box), largest box first; padding rows
  are all -1 (class -1 marks padding). "No finding" negatives have only padding rows.
* `sample_weights`: `{"class": per-image class weight (B,), "detections": ones (B,)}`.

Order of stages, and why:
decode + resize per image (parallel) -> cache as uint8 (4x smaller than float) ->
shuffle (train) -> batch -> box-aware augmentation on whole batches (train; vectorised) ->
prefetch. Caching sits before shuffling and augmentation so later epochs still differ.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import tensorflow as tf

from fracture.data.config import AugmentConfig, DataConfig
from fracture.data.index import Sample

AUTOTUNE = tf.data.AUTOTUNE
PADDING = -1.0  # every value of a padding row of "detections" (class -1 marks padding)
MIN_BOX_SIDE_PX = 2.0  # augmentation drops detection boxes thinner than this, in pixels


def decode_image(path: tf.Tensor) -> tf.Tensor:
    """Any JPEG/PNG/BMP/GIF (grayscale, 16-bit, CMYK, alpha) -> uint8 `(H, W, 3)`."""
    return decode_image_bytes(tf.io.read_file(path))


def decode_image_bytes(data: tf.Tensor) -> tf.Tensor:
    """Encoded bytes -> uint8 `(H, W, 3)`: the one decoder of training, evaluation and prediction."""
    image = tf.io.decode_image(data, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def resize_with_boxes(
    image: tf.Tensor, box: tf.Tensor, size: int, mode: str
) -> tuple[tf.Tensor, tf.Tensor]:
    """Resize to `size x size`, moving the normalized box with the pixels.

    Args:
        image: `(H, W, 3)` image, any dtype.
        box: normalized xyxy `(4,)`, or `(M, 4)` for several boxes.
        size: output side.
        mode: "stretch" (aspect ratio not kept; normalized boxes are unchanged) or
            "letterbox" (aspect kept, centred on black padding; boxes scaled and shifted).

    Returns:
        float32 image `(size, size, 3)` and the adjusted box.
    """
    if mode == "stretch":
        return tf.image.resize(image, (size, size), antialias=True), box
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = size / tf.reduce_max(shape)
    new_hw = tf.maximum(tf.cast(tf.round(shape * scale), tf.int32), 1)
    resized = tf.image.resize(image, new_hw, antialias=True)
    pad = (size - new_hw) // 2
    padded = tf.image.pad_to_bounding_box(resized, pad[0], pad[1], size, size)
    new_hw_f, pad_f = tf.cast(new_hw, tf.float32), tf.cast(pad, tf.float32)
    # box (x1, y1, x2, y2): x scales with width (index 1), y with height (index 0).
    scale_xyxy = tf.stack([new_hw_f[1], new_hw_f[0], new_hw_f[1], new_hw_f[0]]) / size
    shift_xyxy = tf.stack([pad_f[1], pad_f[0], pad_f[1], pad_f[0]]) / size
    return padded, box * scale_xyxy + shift_xyxy


def _letterbox_frame(height: int, width: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Where a `height x width` image lands on the letterboxed square: xyxy pixel shift and extent."""
    scale = size / max(height, width)
    new_h, new_w = max(round(height * scale), 1), max(round(width * scale), 1)
    pad_y, pad_x = (size - new_h) // 2, (size - new_w) // 2
    return np.array([pad_x, pad_y, pad_x, pad_y], np.float64), np.array([new_w, new_h, new_w, new_h], np.float64)


def model_box_to_image(box, height: int, width: int, size: int, mode: str) -> np.ndarray:
    """Invert `resize_with_boxes`: normalized xyxy box(es) `(..., 4)` on the model's square
    input -> normalized xyxy on the original `height x width` image (clipped to it)."""
    box = np.asarray(box, np.float64)
    if mode == "stretch":
        return np.clip(box, 0.0, 1.0)
    shift, extent = _letterbox_frame(height, width, size)
    return np.clip((box * size - shift) / extent, 0.0, 1.0)


def image_box_to_model(box, height: int, width: int, size: int, mode: str) -> np.ndarray:
    """`resize_with_boxes`' box mapping in numpy: normalized xyxy on the original image ->
    normalized xyxy on the model's square input."""
    box = np.asarray(box, np.float64)
    if mode == "stretch":
        return box
    shift, extent = _letterbox_frame(height, width, size)
    return (box * extent + shift) / size


class BoxAugmenter:
    """Train-time, box-aware augmentation of whole batches, built from Keras 3 core layers.

    One set of layers serves both target layouts: `__call__` takes one box per image
    (`(B, 4)` with a mask), `augment_detections` takes every box (`(B, M, 5)` detection
    rows with padding). Both move boxes with the pixels through `_transform`.

    Geometric layers run on absolute-pixel `xyxy` boxes: Keras 3.15's RandomRotation
    returns wrong boxes for `rel_xyxy`. Layers are called on a fresh dict every time
    because Keras box-aware layers called eagerly mutate their input dict.

    Args:
        cfg: augmentation ranges.
        image_size: side of the (square) batch images.
        seed: base seed; each layer gets its own derived seed.
        min_box_side: detection boxes narrower or lower than this many pixels after
            augmentation and clipping (left the image, or cut to a sliver) are dropped.
    """

    def __init__(self, cfg: AugmentConfig, image_size: int, seed: int, min_box_side: float = MIN_BOX_SIDE_PX):
        self.image_size = image_size
        self.min_box_side = min_box_side
        self.layers = _augment_layers(cfg, seed)
        # Running counters, updated inside the tf.data pipeline (see `dropped_boxes`).
        self._dropped = tf.Variable(0, dtype=tf.int64, trainable=False, name="dropped_boxes")
        self._augmented = tf.Variable(0, dtype=tf.int64, trainable=False, name="augmented_boxes")

    @property
    def dropped_boxes(self) -> int:
        """Detection boxes dropped so far (turned into padding rows) because augmentation
        moved them out of the image or cut them below `min_box_side` pixels.

        The count runs over every batch this augmenter has produced, across epochs, and
        never resets. A trainer should read it with `augmented_boxes` after each epoch and
        report the epoch's difference, e.g. "augmentation dropped 12 of 3,400 boxes
        (0.4%)", in the log and the run record: a large share means the zoom/translation
        ranges cut findings out of the training images. Under multi-worker DATA sharding
        every worker augments every global batch, so the chief's count is the whole count;
        under FILE sharding (`make_dataset(shard=...)`) each worker counts its own files.
        Pass the augmenter to `make_dataset(augmenter=...)` to keep a handle on it.
        Only `augment_detections` counts; the single-box `__call__` clips boxes, never
        drops them.
        """
        return int(self._dropped.numpy())

    @property
    def augmented_boxes(self) -> int:
        """Real (non-padding) detection boxes that went into `augment_detections` so far."""
        return int(self._augmented.numpy())

    def _transform(self, images: tf.Tensor, boxes: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Run the layers on images `(B, S, S, 3)` and pixel xyxy boxes `(B, M, 4)`; boxes
        come back clipped to the image, images to 0-255."""
        size = float(self.image_size)
        data = {"images": images, "bounding_boxes": {"boxes": boxes, "labels": tf.zeros_like(boxes[..., 0])}}
        for layer in self.layers:
            data = layer(
                {"images": data["images"], "bounding_boxes": dict(data["bounding_boxes"])},
                training=True,
            )
        out_boxes = tf.clip_by_value(data["bounding_boxes"]["boxes"], 0.0, size)
        return tf.clip_by_value(data["images"], 0.0, 255.0), out_boxes

    def __call__(self, images: tf.Tensor, boxes: tf.Tensor, box_mask: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Augment a batch. `boxes` are normalized `(B, 4)`; negatives (mask 0) stay all-zero."""
        size = float(self.image_size)
        out_images, out_boxes = self._transform(images, boxes[:, None, :] * size)
        return out_images, out_boxes[:, 0, :] / size * box_mask[:, None]

    def augment_detections(self, images: tf.Tensor, detections: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Augment a batch with all its boxes.

        Args:
            images: float32 `(B, S, S, 3)`, 0-255.
            detections: `(B, M, 5)` rows `[x1, y1, x2, y2, class_id]`, normalized xyxy;
                padding rows are all -1.

        Returns:
            The images and the moved rows; a box that left the image or became smaller
            than `min_box_side` pixels becomes a padding row and is counted in
            `dropped_boxes`.
        """
        size = float(self.image_size)
        real = detections[..., 4] >= 0
        boxes = tf.where(real[..., None], detections[..., :4] * size, 0.0)
        out_images, out_boxes = self._transform(images, boxes)
        sides = out_boxes[..., 2:] - out_boxes[..., :2]
        keep = real & tf.reduce_all(sides >= self.min_box_side, axis=-1)
        self._augmented.assign_add(tf.reduce_sum(tf.cast(real, tf.int64)))
        self._dropped.assign_add(tf.reduce_sum(tf.cast(real & ~keep, tf.int64)))
        rows = tf.concat([out_boxes / size, detections[..., 4:]], axis=-1)
        return out_images, tf.where(keep[..., None], rows, PADDING)


def _augment_layers(cfg: AugmentConfig, seed: int) -> list:
    """The Keras layers `cfg` asks for, in a fixed order, each with its own seed."""
    import keras

    fmt = "xyxy"
    fill = {"fill_mode": "constant", "fill_value": 0.0}
    layers = []
    if cfg.horizontal_flip:
        layers.append(keras.layers.RandomFlip("horizontal", bounding_box_format=fmt, seed=seed))
    if cfg.rotation:
        layers.append(keras.layers.RandomRotation(cfg.rotation, bounding_box_format=fmt, seed=seed + 1, **fill))
    if cfg.translation:
        layers.append(
            keras.layers.RandomTranslation(
                cfg.translation, cfg.translation, bounding_box_format=fmt, seed=seed + 2, **fill
            )
        )
    if cfg.zoom:
        layers.append(keras.layers.RandomZoom(cfg.zoom, bounding_box_format=fmt, seed=seed + 3, **fill))
    if cfg.brightness:
        layers.append(
            keras.layers.RandomBrightness(cfg.brightness, value_range=(0, 255), bounding_box_format=fmt, seed=seed + 4)
        )
    if cfg.contrast:
        layers.append(
            keras.layers.RandomContrast(cfg.contrast, value_range=(0, 255), bounding_box_format=fmt, seed=seed + 5)
        )
    return layers


def padded_box_rows(samples: Sequence[Sample], max_boxes: int) -> np.ndarray:
    """Every sample's boxes as `(N, max_boxes, 5)` rows `[x1, y1, x2, y2, class_id]`
    (original image frame), padded with rows of -1.

    Raises:
        ValueError: a sample has more than `max_boxes` boxes. `build_index` with
            `multi_object_rule=all` cuts them and counts the cut; a hand-made sample list
            must do the same rather than lose boxes here unseen.
    """
    rows = np.full((len(samples), max_boxes, 5), PADDING, np.float32)
    for i, sample in enumerate(samples):
        if len(sample.boxes) != len(sample.box_classes):
            raise ValueError(f"{sample.image_path}: {len(sample.boxes)} boxes but {len(sample.box_classes)} box classes.")
        if len(sample.boxes) > max_boxes:
            raise ValueError(
                f"{sample.image_path} has {len(sample.boxes)} boxes, more than data.max_boxes={max_boxes}; "
                "build the samples with build_index (which keeps the largest and counts the rest)."
            )
        if sample.boxes:
            rows[i, : len(sample.boxes), :4] = sample.boxes
            rows[i, : len(sample.boxes), 4] = sample.box_classes
    return rows


def make_dataset(
    samples: Sequence[Sample],
    num_classes: int,
    cfg: DataConfig,
    training: bool,
    class_weights: Sequence[float] | None = None,
    cache: str | None = None,
    batch_size: int | None = None,
    augment: bool | None = None,
    shard: tuple[int, int] | None = None,
    augmenter: BoxAugmenter | None = None,
) -> tf.data.Dataset:
    """Build the input pipeline for one split (element structure: module docstring).

    Args:
        samples: the split's samples (from `build_index`).
        num_classes: width of the one-hot class target.
        cfg: data config (image size, resize mode, cache, batch size, seed, augmentation;
            `multi_object_rule=all` gives detection targets).
        training: shuffle each epoch (and augment, unless `augment` says otherwise).
        class_weights: per-class weight put in `sample_weights["class"]`; None means 1.
        cache: overrides `cfg.cache`: "memory", a file path prefix, or None for no cache.
        batch_size: overrides `cfg.batch_size`.
        augment: overrides whether to augment (default: `training and cfg.augment.enabled`).
        shard: `(num_shards, index)`: only every num_shards-th sample, from a list cut to a
            multiple of num_shards so all shards are the same size (multi-worker
            `trainer.data_sharding=file`; see fracture.training.cluster).
        augmenter: the augmenter to use when augmenting; pass one to read its counters
            (`BoxAugmenter.dropped_boxes`). None builds one from `cfg`.
    """
    if shard is not None:
        num, index = shard
        samples = list(samples)[: len(samples) - len(samples) % num][index::num]
    if not samples:
        raise ValueError("make_dataset got no samples; the split is empty after filtering.")
    cache = cfg.cache if cache is None else cache
    batch_size = batch_size or cfg.batch_size
    augment = (training and cfg.augment.enabled) if augment is None else augment
    weights = np.ones(num_classes, np.float32) if class_weights is None else np.asarray(class_weights, np.float32)
    if augment and augmenter is None:
        augmenter = BoxAugmenter(cfg.augment, cfg.image_size, cfg.seed)
    fraction = cfg.negatives_per_epoch if training else 1.0
    stages = (_detection_stages if cfg.multi_object_rule == "all" else _single_box_stages)(
        samples, num_classes, cfg, _ClassWeights(tf.constant(weights), 1.0 / fraction), augmenter if augment else None
    )

    ds = tf.data.Dataset.from_tensor_slices(stages.slices)
    ds = ds.map(stages.load, num_parallel_calls=AUTOTUNE, deterministic=True)
    if cache == "memory":
        ds = ds.cache()
    elif cache:
        Path(cache).parent.mkdir(parents=True, exist_ok=True)
        ds = ds.cache(str(cache))
    if fraction < 1.0:
        ds = _draw_negatives(ds, samples, cfg)
    if training:
        buffer = min(len(samples), max(cfg.shuffle_buffer, batch_size))
        ds = ds.shuffle(buffer, seed=cfg.seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, num_parallel_calls=AUTOTUNE)
    ds = ds.map(stages.to_targets, num_parallel_calls=AUTOTUNE)
    return with_data_sharding(ds.prefetch(AUTOTUNE))


def epoch_size(samples: Sequence[Sample], cfg: DataConfig) -> int:
    """Images in one training epoch of `make_dataset`: every image with a box, and
    `data.negatives_per_epoch` of the others (rounded)."""
    negatives = sum(not s.has_box for s in samples)
    return len(samples) - negatives + int(round(negatives * cfg.negatives_per_epoch))


def _draw_negatives(ds: tf.data.Dataset, samples: Sequence[Sample], cfg: DataConfig) -> tf.data.Dataset:
    """Every image with a box, and `data.negatives_per_epoch` of the others (rounded),
    drawn afresh each epoch (each new iterator) from a seeded stream, so runs repeat.

    Each epoch permutes the negatives' ranks with its own seed and keeps those whose
    rank lands among the first `drawn`: the epoch's length is exact (Keras knows its
    steps, the schedule its length), and nothing is buffered beyond the usual shuffle."""
    is_negative = np.array([not s.has_box for s in samples])
    ranks = tf.constant(np.where(is_negative, np.cumsum(is_negative) - 1, -1), tf.int64)
    negatives = int(is_negative.sum())
    if negatives == 0:  # nothing to draw (and no permutation to index)
        return ds
    drawn = epoch_size(samples, cfg) - (len(samples) - negatives)

    def one_epoch(epoch_seed):
        order = tf.random.experimental.stateless_shuffle(tf.range(negatives, dtype=tf.int64), tf.stack([epoch_seed, 0]))

        def keep(index, element):
            rank = ranks[index]
            return (rank < 0) | (tf.gather(order, tf.maximum(rank, 0)) < drawn)

        return ds.enumerate().filter(keep).map(lambda index, element: element)

    seeds = tf.data.Dataset.random(seed=cfg.seed, rerandomize_each_iteration=True).take(1)
    return seeds.flat_map(one_epoch).apply(tf.data.experimental.assert_cardinality(epoch_size(samples, cfg)))


@dataclass(frozen=True)
class _ClassWeights:
    """The class head's per-sample weight: the class's weight, times `negative` for an
    image without a box (1/`data.negatives_per_epoch` when training draws negatives, so
    the expected class loss, and the head's prior, stay those of the whole split)."""

    table: tf.Tensor
    negative: float

    def of(self, class_id: tf.Tensor, has_box: tf.Tensor) -> tf.Tensor:
        return tf.gather(self.table, class_id) * tf.where(has_box, 1.0, self.negative)


@dataclass(frozen=True)
class _Stages:
    """What differs between the target layouts: the per-sample tensors, the per-image
    load (decode, resize, boxes to the model frame, uint8 for the cache), and the
    per-batch step to `(images, targets, sample_weights)` (augmentation included)."""

    slices: tuple
    load: Callable
    to_targets: Callable


def _load_image(path: tf.Tensor, boxes: tf.Tensor, cfg: DataConfig) -> tuple[tf.Tensor, tf.Tensor]:
    image, boxes = resize_with_boxes(decode_image(path), boxes, cfg.image_size, cfg.resize)
    return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8), boxes


def _single_box_stages(samples, num_classes, cfg, class_weights: _ClassWeights, augmenter) -> _Stages:
    boxes = np.array([s.box for s in samples], np.float32).reshape(-1, 4)
    masks = np.array([s.has_box for s in samples], np.float32)

    def load(path, class_id, box, mask):
        image, box = _load_image(path, box, cfg)
        return image, class_id, box * mask, mask

    def to_targets(images, class_id, box, mask):
        images = tf.cast(images, tf.float32)
        if augmenter is not None:
            images, box = augmenter(images, box, mask)
        targets = {"class": tf.one_hot(class_id, num_classes), "box": box}
        sample_weights = {"class": class_weights.of(class_id, mask > 0), "box": mask}
        return images, targets, sample_weights

    return _Stages((_paths(samples), _class_ids(samples), boxes, masks), load, to_targets)


def _detection_stages(samples, num_classes, cfg, class_weights: _ClassWeights, augmenter) -> _Stages:
    rows = padded_box_rows(samples, cfg.max_boxes)

    def load(path, class_id, rows):
        real = rows[:, 4:] >= 0
        image, boxes = _load_image(path, rows[:, :4], cfg)
        return image, class_id, tf.where(real, tf.concat([boxes, rows[:, 4:]], axis=-1), PADDING)

    def to_targets(images, class_id, rows):
        images = tf.cast(images, tf.float32)
        boxed = tf.reduce_any(rows[..., 4] >= 0, axis=-1)  # before augmentation, which may push boxes out
        if augmenter is not None:
            images, rows = augmenter.augment_detections(images, rows)
        class_weight = class_weights.of(class_id, boxed)
        targets = {"class": tf.one_hot(class_id, num_classes), "detections": rows}
        return images, targets, {"class": class_weight, "detections": tf.ones_like(class_weight)}

    return _Stages((_paths(samples), _class_ids(samples), rows), load, to_targets)


def _paths(samples: Sequence[Sample]) -> list[str]:
    return [s.image_path for s in samples]


def _class_ids(samples: Sequence[Sample]) -> np.ndarray:
    return np.array([s.class_id for s in samples], np.int32)


def with_data_sharding(ds: tf.data.Dataset) -> tf.data.Dataset:
    """Under a multi-worker strategy, each worker keeps its slice of every global batch
    (`AutoShardPolicy.DATA`): the same batches as one process. AUTO would try FILE first,
    which cannot shard a dataset built from a list of paths. No effect on one machine."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)

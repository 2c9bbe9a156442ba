"""The tf.data pipeline: samples -> batches of `(images, targets, sample_weights)`.

Element structure, ready for a two-head Keras model:

* `images`: float32 `(B, S, S, 3)`, raw 0-255 RGB (models hold their own preprocessing);
* `targets`: `{"class": one-hot (B, C), "box": normalized xyxy (B, 4)}`;
* `sample_weights`: `{"class": per-image class weight (B,), "box": box mask (B,)}`; the box
  mask is 0 for "no finding" negatives so they never pull the box head.

Order of stages, and why:
decode + resize per image (parallel) -> cache as uint8 (4x smaller than float) ->
shuffle (train) -> batch -> box-aware augmentation on whole batches (train; vectorised) ->
prefetch. Caching sits before shuffling and augmentation so later epochs still differ.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import tensorflow as tf

from fracture.data.config import AugmentConfig, DataConfig
from fracture.data.index import Sample

AUTOTUNE = tf.data.AUTOTUNE


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
        box: normalized xyxy `(4,)`.
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


def model_box_to_image(box, height: int, width: int, size: int, mode: str) -> np.ndarray:
    """Invert `resize_with_boxes`: a normalized xyxy box on the model's square input ->
    normalized xyxy on the original `height x width` image (clipped to it)."""
    box = np.asarray(box, np.float64)
    if mode == "stretch":
        return np.clip(box, 0.0, 1.0)
    scale = size / max(height, width)
    new_h, new_w = max(round(height * scale), 1), max(round(width * scale), 1)
    pad_y, pad_x = (size - new_h) // 2, (size - new_w) // 2
    x1, y1, x2, y2 = box * size
    out = np.array([(x1 - pad_x) / new_w, (y1 - pad_y) / new_h, (x2 - pad_x) / new_w, (y2 - pad_y) / new_h])
    return np.clip(out, 0.0, 1.0)


class BoxAugmenter:
    """Train-time, box-aware augmentation built from Keras 3 core layers.

    Geometric layers run on absolute-pixel `xyxy` boxes: Keras 3.15's RandomRotation
    returns wrong boxes for `rel_xyxy`. Layers are called on a fresh dict every time
    because Keras box-aware layers called eagerly mutate their input dict.

    Args:
        cfg: augmentation ranges.
        image_size: side of the (square) batch images.
        seed: base seed; each layer gets its own derived seed.
    """

    def __init__(self, cfg: AugmentConfig, image_size: int, seed: int):
        import keras

        self.image_size = image_size
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
                keras.layers.RandomBrightness(
                    cfg.brightness, value_range=(0, 255), bounding_box_format=fmt, seed=seed + 4
                )
            )
        if cfg.contrast:
            layers.append(
                keras.layers.RandomContrast(
                    cfg.contrast, value_range=(0, 255), bounding_box_format=fmt, seed=seed + 5
                )
            )
        self.layers = layers

    def __call__(self, images: tf.Tensor, boxes: tf.Tensor, box_mask: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Augment a batch. `boxes` are normalized `(B, 4)`; negatives (mask 0) stay all-zero."""
        size = float(self.image_size)
        data = {
            "images": images,
            "bounding_boxes": {
                "boxes": boxes[:, None, :] * size,
                "labels": tf.zeros_like(boxes[:, :1]),
            },
        }
        for layer in self.layers:
            data = layer(
                {"images": data["images"], "bounding_boxes": dict(data["bounding_boxes"])},
                training=True,
            )
        out_boxes = tf.clip_by_value(data["bounding_boxes"]["boxes"][:, 0, :] / size, 0.0, 1.0)
        out_images = tf.clip_by_value(data["images"], 0.0, 255.0)
        return out_images, out_boxes * box_mask[:, None]


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
) -> tf.data.Dataset:
    """Build the input pipeline for one split.

    Args:
        samples: the split's samples (from `build_index`).
        num_classes: width of the one-hot class target.
        cfg: data config (image size, resize mode, cache, batch size, seed, augmentation).
        training: shuffle each epoch (and augment, unless `augment` says otherwise).
        class_weights: per-class weight put in `sample_weights["class"]`; None means 1.
        cache: overrides `cfg.cache`: "memory", a file path prefix, or None for no cache.
        batch_size: overrides `cfg.batch_size`.
        augment: overrides whether to augment (default: `training and cfg.augment.enabled`).
        shard: `(num_shards, index)`: only every num_shards-th sample, from a list cut to a
            multiple of num_shards so all shards are the same size (multi-worker
            `trainer.data_sharding=file`; see fracture.training.cluster).
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

    paths = [s.image_path for s in samples]
    class_ids = np.array([s.class_id for s in samples], np.int32)
    boxes = np.array([s.box for s in samples], np.float32).reshape(-1, 4)
    masks = np.array([s.has_box for s in samples], np.float32)
    size, mode = cfg.image_size, cfg.resize

    def load(path, class_id, box, mask):
        image, box = resize_with_boxes(decode_image(path), box, size, mode)
        image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
        return image, class_id, box * mask, mask

    ds = tf.data.Dataset.from_tensor_slices((paths, class_ids, boxes, masks))
    ds = ds.map(load, num_parallel_calls=AUTOTUNE, deterministic=True)
    if cache == "memory":
        ds = ds.cache()
    elif cache:
        Path(cache).parent.mkdir(parents=True, exist_ok=True)
        ds = ds.cache(str(cache))
    if training:
        buffer = min(len(samples), max(cfg.shuffle_buffer, batch_size))
        ds = ds.shuffle(buffer, seed=cfg.seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, num_parallel_calls=AUTOTUNE)

    augmenter = BoxAugmenter(cfg.augment, size, cfg.seed) if augment else None
    weight_table = tf.constant(weights)

    def to_targets(images, class_id, box, mask):
        images = tf.cast(images, tf.float32)
        if augmenter is not None:
            images, box = augmenter(images, box, mask)
        targets = {"class": tf.one_hot(class_id, num_classes), "box": box}
        sample_weights = {"class": tf.gather(weight_table, class_id), "box": mask}
        return images, targets, sample_weights

    ds = ds.map(to_targets, num_parallel_calls=AUTOTUNE)
    return with_data_sharding(ds.prefetch(AUTOTUNE))


def with_data_sharding(ds: tf.data.Dataset) -> tf.data.Dataset:
    """Under a multi-worker strategy, each worker keeps its slice of every global batch
    (`AutoShardPolicy.DATA`): the same batches as one process. AUTO would try FILE first,
    which cannot shard a dataset built from a list of paths. No effect on one machine."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)

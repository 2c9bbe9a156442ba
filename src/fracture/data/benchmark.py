"""Pipeline throughput measurement (used by scripts/benchmark_data.py, never by tests)."""

from __future__ import annotations

import time

import tensorflow as tf


def epoch_throughput(dataset: tf.data.Dataset, epochs: int) -> list[dict]:
    """Iterate `dataset` `epochs` times; images/s and seconds of each full pass."""
    results = []
    for epoch in range(1, epochs + 1):
        start, images = time.perf_counter(), 0
        for batch_images, _, _ in dataset:
            images += int(batch_images.shape[0])
        seconds = time.perf_counter() - start
        results.append({"epoch": epoch, "images": images, "seconds": seconds, "images_per_s": images / seconds})
    return results

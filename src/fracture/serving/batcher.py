"""Dynamic batching: requests from several clients share one call of one model.

One worker thread owns the model. Requests wait in a short bounded queue; the worker takes
the first, then gathers more for at most `max_wait_ms` (up to `max_batch`), pads the batch
to a power of two (a handful of fixed shapes, all compiled at warm-up, so no request ever
pays for a retrace), and calls `fracture.inference.predict_batch`, the batch path predict
uses. A full queue is refused at once (`QueueFull`), never an unbounded wait.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from fracture.inference import Screening, predict_batch


class QueueFull(Exception):
    """The request queue is full: the server is overloaded (503)."""


@dataclass
class _Job:
    model_input: np.ndarray
    size: tuple[int, int]
    future: Future = field(default_factory=Future)
    queued: float = field(default_factory=time.perf_counter)


def padded_size(n: int, max_batch: int) -> int:
    """The power of two >= n (capped at max_batch): the batch shapes the model ever sees."""
    size = 1
    while size < n:
        size *= 2
    return min(size, max_batch) if n <= max_batch else n


def batch_shapes(max_batch: int) -> list[int]:
    return sorted({padded_size(n, max_batch) for n in range(1, max_batch + 1)})


class Batcher:
    """Start with `start()`; `ready` is set once the model has been warmed up on every
    batch shape. `submit` returns a Future of `(record, timings)`."""

    def __init__(self, run, screening: Screening, max_batch: int = 8, max_wait_ms: float = 5.0, queue_size: int = 64):
        self.run, self.screening = run, screening
        self.max_batch, self.max_wait = max(1, int(max_batch)), max_wait_ms / 1000.0
        self.jobs: queue.Queue[_Job | None] = queue.Queue(maxsize=queue_size)
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.batches = 0
        self._thread = threading.Thread(target=self._loop, name="fracture-batcher", daemon=True)

    def start(self) -> "Batcher":
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self._thread.is_alive():
            try:
                self.jobs.put(None, timeout=timeout)
            except queue.Full:
                pass
            self._thread.join(timeout)

    def submit(self, model_input: np.ndarray, size: tuple[int, int]) -> Future:
        job = _Job(model_input, size)
        try:
            self.jobs.put_nowait(job)
        except queue.Full:
            raise QueueFull(f"server busy: {self.jobs.maxsize} requests already waiting") from None
        return job.future

    def warm_up(self) -> None:
        """One call per batch shape, so that the first real requests are as fast as the rest."""
        s = self.run.data.image_size
        for n in batch_shapes(self.max_batch):
            predict_batch(self.run, [np.zeros((s, s, 3), np.float32)] * n, [(s, s)] * n, self.screening)

    def _loop(self) -> None:
        try:
            self.warm_up()
        except BaseException as exc:  # noqa: BLE001 - reported by /ready, never raised in a thread
            self.error = exc
            return
        self.ready.set()
        while True:
            first = self.jobs.get()
            if first is None:
                return
            batch = [first]
            deadline = time.perf_counter() + self.max_wait
            while len(batch) < self.max_batch:
                remaining = deadline - time.perf_counter()
                try:
                    job = self.jobs.get(timeout=remaining) if remaining > 0 else self.jobs.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    self.jobs.put(None)  # stop after this batch
                    break
                batch.append(job)
            self._run(batch)

    def _run(self, batch: list[_Job]) -> None:
        start = time.perf_counter()
        try:
            records = predict_batch(
                self.run, [j.model_input for j in batch], [j.size for j in batch], self.screening,
                pad_to=padded_size(len(batch), self.max_batch),
            )
        except BaseException as exc:  # noqa: BLE001 - each waiting request gets the error
            for job in batch:
                job.future.set_exception(exc)
            return
        model_ms = (time.perf_counter() - start) * 1000
        self.batches += 1
        for job, record in zip(batch, records):
            job.future.set_result((record, {"queue_ms": round((start - job.queued) * 1000, 2),
                                            "model_ms": round(model_ms, 2), "batch_size": len(batch)}))

"""Child process for test_run_safety.py: trains a tiny demo and SIGKILLs itself at a chosen instant.

    python run_child.py <tmp dir> <fault> [override ...]

fault:
    none                     train to the end
    batch:E:B                kill -9 at batch B of epoch E (1-based): mid-epoch
    replace:NAME:K           kill -9 instead of the K-th atomic rename onto NAME (state.json,
                             history.csv, last.keras, best.keras): the temp file is complete,
                             the epoch's files are half published
    torn_weights:K           the K-th weights file is written half, then kill -9
"""

import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402

from conftest import compose_cfg  # noqa: E402
from fracture.env import setup_env  # noqa: E402


def die():
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


class KillAtBatch(keras.callbacks.Callback):
    def __init__(self, epoch, batch):
        super().__init__()
        self.epoch, self.batch, self.current = epoch - 1, batch - 1, -1

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.current == self.epoch and batch == self.batch:
            die()


def install(fault: str) -> list:
    kind, *args = fault.split(":")
    if kind == "batch":
        return [KillAtBatch(int(args[0]), int(args[1]))]
    if kind == "replace":
        name, k = args[0], int(args[1])
        real, seen = os.replace, [0]

        def replace(src, dst, *a, **kw):
            if Path(dst).name == name:
                seen[0] += 1
                if seen[0] == k:
                    die()
            return real(src, dst, *a, **kw)

        os.replace = replace
    if kind == "torn_weights":
        k, real, seen = int(args[0]), keras.Model.save_weights, [0]

        def save_weights(self, filepath, *a, **kw):
            seen[0] += 1
            real(self, filepath, *a, **kw)
            if seen[0] == k:
                size = os.path.getsize(filepath)
                with open(filepath, "r+b") as f:
                    f.truncate(size // 2)
                die()

        keras.Model.save_weights = save_weights
    return []


def main():
    tmp, fault, *overrides = sys.argv[1:]
    setup_env(Path(__file__).resolve().parents[2])
    from fracture.training.trainer import train

    cfg = compose_cfg(
        "config",
        [
            "experiment=demo",
            f"data.root={Path(tmp) / 'synthetic'}",
            "data.synthetic.per_class=6", "data.min_instances=3",
            "data.synthetic.min_side=64",
            "data.synthetic.max_side=80",
            "data.image_size=32",
            "data.batch_size=16",
            f"paths.log_dir={Path(tmp) / 'logs'}",
            f"paths.cache_dir={Path(tmp) / 'cache'}",
            "callbacks.tensorboard.enabled=false",
            "callbacks.progress=0",
            *overrides,
        ],
    )
    extra = install(fault)
    result = train(cfg, extra_callbacks=extra)
    print(f"RESULT {result.status} {result.run_dir}")


if __name__ == "__main__":
    main()

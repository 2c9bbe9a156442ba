"""Experiment trackers beside TensorBoard (`conf/logger/`): none, or Weights & Biases.

The S4 seed system logs to Weights & Biases. Here that is an optional extra (pip install -e
".[wandb]"), offline by default (`WANDB_MODE=offline`: runs are written under the run
folder and can be `wandb sync`-ed later), and TensorBoard stays on either way. Choosing
`logger=wandb` without the package installed is a one-line error before any run folder
is made, not a traceback an epoch in.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, field
from pathlib import Path

import keras

KINDS = ("none", "wandb")
WANDB_MODES = ("offline", "online", "disabled")


class LoggerUnavailableError(ValueError):
    """The configured tracker's package is not installed."""


@dataclass
class LoggerConfig:
    """The `logger` config group (documented in conf/logger/wandb.yaml)."""

    kind: str = "none"
    project: str = "fracture"
    entity: str | None = None
    mode: str = "offline"
    tags: list = field(default_factory=list)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"logger.kind={self.kind!r}; expected one of {KINDS}.")
        if self.mode not in WANDB_MODES:
            raise ValueError(f"logger.mode={self.mode!r}; expected one of {WANDB_MODES}.")


def wandb_module():
    """`import wandb`, or the one-line error saying how to get it."""
    try:
        return importlib.import_module("wandb")
    except ImportError as exc:
        raise LoggerUnavailableError(
            'logger=wandb needs the wandb package, which is not installed: pip install -e ".[wandb]" '
            "(or choose logger=none; TensorBoard logs either way)."
        ) from exc


def check_available(cfg: LoggerConfig) -> None:
    """Fail before training starts when the tracker cannot be used."""
    if cfg.kind == "wandb":
        wandb_module()


class Tracker:
    """One tracked run: a callback for every phase, then the final metrics and `finish`."""

    def __init__(self, run):
        self.run = run

    def callback(self) -> keras.callbacks.Callback:
        return EpochLogger(self.run)

    def finish(self, metrics: dict, status: str) -> None:
        self.run.summary.update({**_numbers(metrics), "status": status})
        self.run.finish(exit_code=0 if status == "finished" else 1)


class EpochLogger(keras.callbacks.Callback):
    """Each epoch's logs (losses, metrics, learning rate), stepped by the global epoch."""

    def __init__(self, run):
        super().__init__()
        self.run = run

    def on_epoch_end(self, epoch, logs=None):
        self.run.log({**_numbers(logs or {}), "epoch": epoch + 1}, step=epoch + 1)


def start(cfg: LoggerConfig, run_dir: Path, name: str, config: dict) -> Tracker | None:
    """Start the tracked run (None for `logger=none`); its files go under the run folder."""
    if cfg.kind == "none":
        return None
    wandb = wandb_module()
    run = wandb.init(
        project=cfg.project, entity=cfg.entity, mode=cfg.mode, name=name, dir=str(run_dir),
        tags=list(cfg.tags), config=config, id=_run_id(run_dir), resume="allow",
    )
    return Tracker(run)


def _run_id(run_dir: Path) -> str:
    """The run folder's name (its start time), so a resumed run continues its tracked run."""
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in f"{run_dir.parent.name}-{run_dir.name}")


def _numbers(values: dict) -> dict:
    out = {}
    for key, value in values.items():
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(number):
            out[key] = number
    return out

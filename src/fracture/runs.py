"""The run-folder contract: what a training run folder holds, how it is written, how it is read.

Layout (`RunLayout`), under `<paths.log_dir>/<task_name>/<time>/`:
    run.json           status, weights really used, precision, strategy, phases, data accounting
    config.yaml        the resolved config
    classes.json       class names and the label mapping (fracture.data.classes)
    best.keras         the model with the best `callbacks.monitor`
    last.keras         the model after the last completed epoch
    history.csv        one row per completed epoch (both phases)
    train.log          what the console showed
    metrics.json       validation metrics of best.keras
    screening_threshold.json   the screening threshold locked on valid (evaluate.py)
    tensorboard/       scalars and validation images
    eval/<split>/      evaluate.py output
    predictions/<name>/  predict.py output
    export/            export.py output

The threshold, eval, predictions and export files above belong to best.keras. Another model
file (`model_file=last.keras`, stem "last") gets its own: screening_threshold.last.json,
eval/<split>.last/, predictions/<name>.last/, export.last/, so its figures and files never
mix with best.keras's.

`run.json` status lifecycle: `running` -> `finished` | `failed` | `interrupted`. A run that
is `failed` or `interrupted` can be resumed by rerunning the same command.

Every file here is written atomically (`write_json`, `write_text`, `save_model`: a temp file
in the same folder, flushed and fsynced, then `os.replace`), so a kill at any instant leaves
either the old file or the new one, never a torn one. This module is the only writer of the
contract's files; readers (evaluate, predict, export) use `load_run`.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # keras/TF load lazily: the contract's paths are needed without them
    import keras

    from fracture.data.classes import ClassMapping
    from fracture.data.config import DataConfig

RUNNING, FINISHED, FAILED, INTERRUPTED = "running", "finished", "failed", "interrupted"
STATUSES = (RUNNING, FINISHED, FAILED, INTERRUPTED)
BEST_MODEL = "best.keras"  # what evaluate, predict, serve and export read unless told `model_file`


def _model_suffix(model_file: str) -> str:
    """"" for best.keras (the files' historical names), else "." + the file's stem."""
    return "" if model_file == BEST_MODEL else "." + Path(model_file).stem


class RunError(Exception):
    """A run folder or model file that cannot be used; the message names the file and why."""


@dataclass(frozen=True)
class RunLayout:
    """Where each file of a run folder lives (see the module docstring)."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def run_json(self) -> Path:
        return self.root / "run.json"

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def classes(self) -> Path:
        return self.root / "classes.json"

    @property
    def best_model(self) -> Path:
        return self.root / BEST_MODEL

    @property
    def last_model(self) -> Path:
        return self.root / "last.keras"

    @property
    def history(self) -> Path:
        return self.root / "history.csv"

    @property
    def train_log(self) -> Path:
        return self.root / "train.log"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    def screening_threshold_of(self, model_file: str) -> Path:
        """The threshold locked on valid for `model_file`: each model file gets its own."""
        return self.root / f"screening_threshold{_model_suffix(model_file)}.json"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    def export_dir(self, model_file: str = BEST_MODEL) -> Path:
        return self.root / f"export{_model_suffix(model_file)}"

    def eval_dir(self, split: str, model_file: str = BEST_MODEL) -> Path:
        return self.root / "eval" / f"{split}{_model_suffix(model_file)}"

    def predictions_dir(self, name: str, model_file: str = BEST_MODEL) -> Path:
        return self.root / "predictions" / f"{name}{_model_suffix(model_file)}"


def new_run_dir(log_dir: str | Path, task_name: str, now: datetime | None = None) -> Path:
    """A fresh `<log_dir>/<task_name>/<time>` path (not created); `_2`, `_3`... if taken."""
    base = Path(log_dir) / task_name / (now or datetime.now()).strftime("%Y-%m-%d_%H-%M-%S")
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}_{n}")
    return candidate


@contextmanager
def _atomic_path(path: Path, suffix: str = ".tmp"):
    """Yield a temp path beside `path` to write in full; then fsync it and rename it over
    `path`. On any failure (a signal included) the temp file is removed, `path` untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_text(path: str | Path, text: str) -> None:
    """Write `text` atomically."""
    with _atomic_path(Path(path)) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")


def write_json(path: str | Path, data: Any) -> None:
    """Write `data` as indented JSON, atomically (non-JSON values are written as strings)."""
    write_text(path, json.dumps(data, indent=2, default=_json_default) + "\n")


def write_csv(path: str | Path, header: list[str], rows) -> None:
    """Write a CSV (a header, then `rows`) atomically."""
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    write_text(path, buffer.getvalue())


def _json_default(value):
    import numpy as np

    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, (tuple, set)):
        return list(value)
    return str(value)


def save_model(model: "keras.Model", path: str | Path) -> None:
    """`model.save(path)` atomically: Keras writes a temp `.keras` file that is renamed over
    `path` only once complete, so a kill mid-save never leaves a 0-byte or torn checkpoint."""
    with _atomic_path(Path(path), suffix=".keras") as tmp:
        model.save(tmp)


class _Tee:
    """A console stream that also appends to a log file (train.log)."""

    def __init__(self, stream, log):
        self.stream, self.log = stream, log

    def write(self, text):
        self.log.write(text)
        return self.stream.write(text)

    def flush(self):
        self.log.flush()
        self.stream.flush()

    def __getattr__(self, name):  # isatty, fileno, encoding ... are the console's
        return getattr(self.stream, name)


@contextmanager
def console_log(path: str | Path):
    """While active, everything printed (stdout, stderr, logging) is also appended to `path`;
    yields the log file, for lines meant for the log alone."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", buffering=1, encoding="utf-8") as log:
        out, err = sys.stdout, sys.stderr
        handler = logging.StreamHandler(log)
        handler.setFormatter(logging.Formatter("[%(asctime)s %(levelname)s %(name)s] %(message)s"))
        logging.getLogger().addHandler(handler)
        sys.stdout, sys.stderr = _Tee(out, log), _Tee(err, log)
        try:
            yield log
        finally:
            sys.stdout, sys.stderr = out, err
            logging.getLogger().removeHandler(handler)


def read_run_info(root: str | Path) -> dict:
    """run.json of a run folder ({} when there is none yet)."""
    path = RunLayout(root).run_json
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise RunError(f"{path}: not valid JSON ({exc})") from exc


def update_run_info(root: str | Path, **fields) -> dict:
    """Merge `fields` into run.json (atomically) and return the result."""
    if "status" in fields and fields["status"] not in STATUSES:
        raise ValueError(f"run status {fields['status']!r}; expected one of {STATUSES}")
    info = {**read_run_info(root), **fields}
    write_json(RunLayout(root).run_json, info)
    return info


def load_model_file(path: str | Path) -> "keras.Model":
    """Load a `.keras` model in safe mode, with this project's custom objects registered.

    Raises:
        RunError: naming the file and what is wrong with it (missing, empty, not a zip,
            truncated, not a Keras archive, or a model Keras cannot rebuild).
    """
    import keras

    from fracture.models import backbones, detection, distill, heads, hub, losses, metrics, schedules  # noqa: F401 - registers custom objects

    path = Path(path)
    problem = _model_file_problem(path)
    if problem:
        raise RunError(f"{path}: {problem}")
    try:
        hub.import_if_archive_needs_it(path)  # ViT/Swin: keras-hub registers its classes on import
    except hub.KerasHubMissing as exc:
        raise RunError(f"{path}: {exc}") from exc
    try:
        return keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # noqa: BLE001 - any failure to rebuild is the file's fault here
        raise RunError(f"{path}: Keras could not load this model ({type(exc).__name__}: {_first_line(exc)})") from exc


def _model_file_problem(path: Path) -> str | None:
    """Why `path` is not a loadable `.keras` archive, checked before Keras sees it."""
    if not path.is_file():
        return "file not found"
    if path.suffix != ".keras":
        return "not a .keras file (expected a model saved by this project's train.py)"
    if path.stat().st_size == 0:
        return "empty file (0 bytes): an interrupted save? use last.keras or rerun training"
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            bad = archive.testzip()
    except zipfile.BadZipFile:
        return "not a Keras archive (not a zip file; corrupt or truncated?)"
    except (OSError, EOFError) as exc:
        return f"unreadable ({exc})"
    if bad is not None:
        return f"corrupt archive (member {bad} fails its checksum)"
    if "config.json" not in names:
        return "not a Keras model archive (no config.json inside)"
    return None


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else ""


@dataclass
class LoadedRun:
    """A finished (or resumable) run, ready for evaluation, prediction or export."""

    layout: RunLayout
    model: "keras.Model"
    classes: "ClassMapping"
    data: "DataConfig"
    model_config: dict = field(default_factory=dict)  # the run's `model` section, resolved
    model_file: str = BEST_MODEL  # which of the run's model files `model` is

    @property
    def run_dir(self) -> Path:
        return self.layout.root

    @property
    def screening_threshold(self) -> Path:
        """Where evaluate.py locks (and predict/serve read) this model file's threshold."""
        return self.layout.screening_threshold_of(self.model_file)

    @property
    def is_detector(self) -> bool:
        """A dense multi-box detector (outputs "detections"), not the single-box model."""
        return "detections" in self.model.output


# Data keys that may differ at evaluation time; the others shape what the model sees.
DATA_OVERRIDABLE = (
    "root", "yaml", "annotations", "coco_file", "train_split", "val_split", "max_image_pixels",
    "max_coordinate_overshoot", "batch_size", "cache", "allow_shrink",
)


def load_run(run_dir: str | Path, data_override: dict | None = None, model_file: str = BEST_MODEL,
             test_time_flip: bool | None = None) -> LoadedRun:
    """The run's model, class mapping and data config.

    Args:
        data_override: `DATA_OVERRIDABLE` keys replacing the run's; None values keep the run's.
        model_file: a `.keras` file in the run folder: best.keras, or last.keras (the model
            after the last completed epoch).
        test_time_flip: replaces the run's `model.detection.decode.test_time_flip` (a dense
            detector's inference option, so a run trained without it can be evaluated with
            it); None keeps the run's.

    Raises:
        RunError: the folder is not a run folder, or its model file is unusable.
        ValueError: an override key that does not exist or may not change, naming the valid keys;
            a model_file that is not a `.keras` file name (paths are refused: the run's
            config, classes and locked threshold only describe its own models); test_time_flip
            on a run that is not a dense detector, or whose image size the strides do not tile.
    """
    if Path(model_file).name != model_file or not model_file.endswith(".keras"):
        raise ValueError(f"model_file={model_file!r}: name a .keras file in the run folder (best.keras or last.keras)")
    override = {k: v for k, v in (data_override or {}).items() if v is not None}
    refused = sorted(set(override) - set(DATA_OVERRIDABLE))
    if refused:
        raise ValueError(
            f"data.{', data.'.join(refused)} cannot be set when reusing a run "
            f"(valid: {', '.join('data.' + k for k in DATA_OVERRIDABLE)})"
        )
    from omegaconf import OmegaConf

    from fracture.data.classes import ClassMapping
    from fracture.data.config import DataConfig

    layout = RunLayout(run_dir)
    if not layout.root.is_dir():
        raise RunError(f"{layout.root}: no such run folder (a run folder holds config.yaml, classes.json and best.keras)")
    for needed in (layout.config, layout.classes):
        if not needed.is_file():
            raise RunError(f"{needed} not found: is {layout.root} a training run folder?")
    run_cfg = OmegaConf.to_container(OmegaConf.load(layout.config), resolve=True)
    data = {**run_cfg["data"], **override}
    data.pop("synthetic", None)  # generated at training time; evaluation only reads it
    data_cfg = DataConfig.from_mapping(data)
    model_cfg = _with_test_time_flip(run_cfg.get("model", {}), test_time_flip, data_cfg.image_size, layout.root)
    model = load_model_file(layout.root / model_file)
    return LoadedRun(layout, model, ClassMapping.load(layout.classes), data_cfg, model_cfg, model_file)


def _with_test_time_flip(model_cfg: dict, test_time_flip: bool | None, image_size: int, root: Path) -> dict:
    """The run's `model` section with `detection.decode.test_time_flip` replaced (None: as is)."""
    if test_time_flip is None:
        return model_cfg
    if model_cfg.get("box_head") != "dense":
        if not test_time_flip:
            return model_cfg
        raise ValueError(f"test_time_flip=true: {root} is not a dense detector run "
                         f"(model.box_head={model_cfg.get('box_head')!r}); the flip averages the dense head's output")
    from fracture.models.detection.flip import check_flippable

    if test_time_flip:
        check_flippable(image_size)  # a bad image size fails here, before any prediction
    detection = model_cfg.get("detection", {})
    decode = {**detection.get("decode", {}), "test_time_flip": bool(test_time_flip)}
    return {**model_cfg, "detection": {**detection, "decode": decode}}

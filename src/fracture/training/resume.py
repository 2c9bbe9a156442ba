"""Exclusive, exactly resumable runs.

A run's in-progress state lives in `<paths.log_dir>/<task_name>/.in_progress/<fingerprint>/`,
where the fingerprint hashes the resolved config, so rerunning the same command finds it:

    lock                 the PID holding the run (an flock: released when that process dies)
    run_dir.txt          the run folder this state belongs to
    state.json           the commit point, written atomically once per epoch (`RunState`)
    epoch_NNNN.weights.h5   the trained model's weights and optimizer state after epoch NNNN
    phase_<name>.weights.h5 the end-to-end weights when phase <name> completed

Why not Keras' BackupAndRestore: it writes its weights file in place and the epoch number
in a second file, so a kill between (or during) the two leaves a torn or mismatched
backup. Here a weights file gets a new name, and only the atomic rewrite of state.json
makes it current; history.csv, last.keras and best.keras are then published from the
committed state, and republished on resume if the kill came before they were. So a kill
at any instant resumes at the last committed epoch with one history row per epoch.
Early-stopping counters and the best values live in the state too, so an interrupted run
stops at the same epoch as an uninterrupted one would.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import keras

from fracture.config import to_container
from fracture.runs import RunError, RunLayout, save_model, write_csv, write_json, write_text

STATE_FILE = "state.json"


class RunLockedError(RunError):
    """Another live process is training the same config."""


def config_fingerprint(cfg) -> str:
    """Stable hash of the resolved config: the same command maps to the same in-progress run."""
    text = json.dumps(to_container(cfg), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno == errno.EPERM
    return True


class RunLock:
    """An exclusive lock on an in-progress state folder, holding the owner's PID.

    `flock` is released by the kernel when its process dies (even by kill -9), so a lock
    left by a dead process is simply free: taking it over only needs the note that says so.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._fd: int | None = None

    def acquire(self) -> str | None:
        """Take the lock or raise `RunLockedError`; returns a note when a dead owner's lock was taken over."""
        for _ in range(3):  # the file can be unlinked by a finishing owner between open and flock
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = os.read(fd, 64).decode(errors="replace").strip()
                os.close(fd)
                raise RunLockedError(f"PID {owner or '?'} holds {self.path}") from None
            if self.path.exists() and os.fstat(fd).st_ino == os.stat(self.path).st_ino:
                break
            os.close(fd)
        else:
            raise RunLockedError(f"could not take {self.path}: it keeps being replaced")
        previous = os.read(fd, 64).decode(errors="replace").strip()
        os.lseek(fd, 0, os.SEEK_SET)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        os.fsync(fd)
        self._fd = fd
        if previous.isdigit() and int(previous) != os.getpid():
            state = "is no longer running" if not _pid_alive(int(previous)) else "no longer holds it"
            return f"took over the lock of PID {previous}, which {state}"
        return None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


@dataclass
class RunClaim:
    """The run folder this process trains in, and its locked in-progress state."""

    run_dir: Path
    state_dir: Path
    lock: RunLock
    resumed: bool
    note: str | None = None

    def finish(self) -> None:
        """The run completed: its in-progress state is no longer needed."""
        shutil.rmtree(self.state_dir, ignore_errors=True)
        self.lock.release()


def claim_run(state_dir: Path, fresh_dir: Path, resume: bool, temporary_folder: bool = False) -> RunClaim:
    """Lock `state_dir`, then continue the run it points at (`resume`) or start `fresh_dir`.

    `temporary_folder`: the run folder is a temporary one that is gone after each attempt (a
    non-chief worker's); its committed state is resumed in `fresh_dir`.

    Raises:
        RunLockedError: another live process trains this config; the message names its
            run folder and PID.
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    lock = RunLock(state_dir / "lock")
    pointer = state_dir / "run_dir.txt"
    try:
        note = lock.acquire()
    except RunLockedError as exc:
        folder = _read_pointer(pointer, wait_s=2.0)
        raise RunLockedError(
            f"this config is already training in {folder or 'a run folder not yet created'} ({exc}); "
            "wait for it, or stop it and rerun this command to resume"
        ) from None
    original = _read_pointer(pointer)
    if resume and original is not None and original.is_dir():
        # also before any committed epoch: the run goes on in its folder, never in a second one
        return RunClaim(original, state_dir, lock, True, note)
    if resume and temporary_folder and (state_dir / STATE_FILE).is_file():
        fresh_dir.mkdir(parents=True, exist_ok=True)
        write_text(pointer, f"{fresh_dir}\n")
        return RunClaim(fresh_dir, state_dir, lock, True, note)
    for stale in [*state_dir.glob("*.weights.h5"), state_dir / STATE_FILE]:
        stale.unlink(missing_ok=True)
    fresh_dir.mkdir(parents=True, exist_ok=True)
    write_text(pointer, f"{fresh_dir}\n")
    return RunClaim(fresh_dir, state_dir, lock, False, note)


def _read_pointer(pointer: Path, wait_s: float = 0.0) -> Path | None:
    """The run folder named in run_dir.txt; waits briefly for a lock owner that just started."""
    deadline = time.monotonic() + wait_s
    while True:
        if pointer.is_file() and pointer.read_text().strip():
            return Path(pointer.read_text().strip())
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.1)


@dataclass
class RunState:
    """What has been committed: the single source of truth for resuming (state.json).

    Attributes:
        epoch: epochs completed (the 0-based index of the next epoch).
        phase: the phase `weights` belongs to.
        weights: file with the trained model's weights and optimizer state after `epoch`.
        history: one row per completed epoch, as history.csv holds them.
        best, best_epoch: best `callbacks.monitor` value over the whole run (best.keras).
        phase_best, phase_best_epoch, phase_best_weights: the same within the current
            phase, for early stopping and for restoring the phase's best weights.
        wait: epochs without improvement in the current phase (early stopping's counter).
        phases_done: phase name -> end-to-end weights file saved when it completed.
        published: epochs whose history.csv, last.keras and best.keras are written.
    """

    epoch: int = 0
    phase: str | None = None
    weights: str | None = None
    history: list[dict] = field(default_factory=list)
    best: float | None = None
    best_epoch: int | None = None
    phase_best: float | None = None
    phase_best_epoch: int | None = None
    phase_best_weights: str | None = None
    wait: int = 0
    phases_done: dict[str, str] = field(default_factory=dict)
    published: int = 0

    @classmethod
    def load(cls, state_dir: Path) -> "RunState":
        path = Path(state_dir) / STATE_FILE
        if not path.is_file():
            return cls()
        return cls(**json.loads(path.read_text()))

    def commit(self, state_dir: Path) -> None:
        """Make this state current (atomically), then delete weight files it no longer names."""
        write_json(Path(state_dir) / STATE_FILE, asdict(self))
        keep = {self.weights, self.phase_best_weights, *self.phases_done.values()}
        for path in Path(state_dir).glob("*.weights.h5"):
            if path.name not in keep:
                path.unlink(missing_ok=True)

    def start_phase(self, name: str) -> None:
        """Reset the per-phase counters when a phase starts afresh."""
        self.phase, self.weights = name, None
        self.phase_best = self.phase_best_epoch = self.phase_best_weights = None
        self.wait = 0


@dataclass
class Monitor:
    """What `callbacks.monitor` means: the logged value, its direction and early stopping."""

    name: str
    mode: str = "min"
    patience: int | None = 8  # None: no early stopping
    min_delta: float = 0.0

    def better(self, value: float | None, than: float | None, delta: float = 0.0) -> bool:
        if value is None or not math.isfinite(value):
            return False
        if than is None:
            return True
        return value < than - delta if self.mode == "min" else value > than + delta


@dataclass
class Publisher:
    """Writes the run folder's per-epoch files from the committed state (chief only).

    Attributes:
        layout: the run folder.
        model: the end-to-end model (what best.keras and last.keras hold), whatever `fit` trains.
    """

    layout: RunLayout
    model: keras.Model

    def publish(self, state: RunState, best_improved: bool) -> None:
        if state.history:
            header = list(dict.fromkeys(k for row in state.history for k in row))
            write_csv(self.layout.history, header, ([row.get(k, "") for k in header] for row in state.history))
        if best_improved:
            save_model(self.model, self.layout.best_model)
        save_model(self.model, self.layout.last_model)


class EpochCheckpoint(keras.callbacks.Callback):
    """Commits the run state at each epoch end; restores it when a phase resumes.

    Replaces BackupAndRestore, CSVLogger, the best/last checkpoints and EarlyStopping (with
    `restore_best_weights`), because those keep their state in memory or write it torn.

    Args:
        state_dir: the in-progress folder.
        state: the run state (shared across phases).
        phase: the phase name and first epoch of this `fit` call.
        monitor: the monitored value and early stopping.
        publisher: writes history.csv, best.keras and last.keras; None on non-chief workers.
    """

    def __init__(self, state_dir: Path, state: RunState, phase: tuple[str, int], monitor: Monitor, publisher: Publisher | None):
        super().__init__()
        self.state_dir = Path(state_dir)
        self.state = state
        self.phase_name, self.phase_start = phase
        self.monitor = monitor
        self.publisher = publisher
        self.current_epoch: int | None = None

    def on_train_begin(self, logs=None):
        state = self.state
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.model._initial_epoch = None  # Keras keeps it on the model between fit calls
        if state.phase == self.phase_name and state.weights and state.epoch > self.phase_start:
            if self.model.optimizer is not None and not self.model.optimizer.built:
                self.model.optimizer.build(self.model.trainable_variables)
            self.model.load_weights(self.state_dir / state.weights)
            self.model._initial_epoch = state.epoch
            print(f"Resuming phase {self.phase_name} after epoch {state.epoch} (committed state {state.weights}).")
            if self.publisher is not None and state.published < state.epoch:
                self.publisher.publish(state, state.best_epoch == state.epoch - 1)
                self._mark_published()
        else:
            state.start_phase(self.phase_name)

    def on_epoch_begin(self, epoch, logs=None):
        self.current_epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        state, monitor = self.state, self.monitor
        row = {"epoch": epoch, **{k: _scalar(v) for k, v in (logs or {}).items()}}
        if not math.isfinite(row.get("loss", 0.0)):
            print(f"\nEpoch {epoch + 1} ended with a non-finite loss: not committed (a rerun resumes after epoch {state.epoch}).")
            return
        value = row.get(monitor.name)
        best_improved = monitor.better(value, state.best)
        phase_improved = monitor.better(value, state.phase_best, monitor.min_delta)
        weights = f"epoch_{epoch + 1:04d}.weights.h5"
        self.model.save_weights(self.state_dir / weights)  # a new name: current only once committed
        state.epoch, state.weights = epoch + 1, weights
        state.history = [r for r in state.history if r["epoch"] < epoch] + [row]
        if best_improved:
            state.best, state.best_epoch = value, epoch
        if phase_improved:
            state.phase_best, state.phase_best_epoch, state.phase_best_weights = value, epoch, weights
            state.wait = 0
        else:
            state.wait += 1
        state.commit(self.state_dir)
        if self.publisher is not None:
            if best_improved:
                print(f"\nEpoch {epoch + 1}: {monitor.name} improved to {value:.4f}; saving best.keras")
            self.publisher.publish(state, best_improved)
            self._mark_published()
        if monitor.patience is not None and state.wait >= monitor.patience:
            print(f"\nEarly stopping: no {monitor.name} improvement for {state.wait} epochs.")
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        self.model._initial_epoch = None
        state = self.state
        if state.phase_best_weights and state.phase_best_epoch != state.epoch - 1:
            print(f"Restoring the weights of epoch {state.phase_best_epoch + 1}, the phase's best {self.monitor.name}.")
            self.model.load_weights(self.state_dir / state.phase_best_weights)

    def _mark_published(self) -> None:
        self.state.published = self.state.epoch
        self.state.commit(self.state_dir)


def _scalar(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return value

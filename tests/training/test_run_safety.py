"""Runs you can trust: kill -9 at any instant resumes exactly, runs are exclusive, signals end
a run as `interrupted`, and a run that fails early says so in run.json and train.log."""

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import PROJECT_ROOT

CHILD = Path(__file__).with_name("run_child.py")
EPOCHS = ("trainer.epochs=4", "trainer.freeze_epochs=1", "callbacks.early_stopping.enabled=false")
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}


def run_child(tmp, fault, *overrides, timeout=300):
    return subprocess.run(
        [sys.executable, str(CHILD), str(tmp), fault, *EPOCHS, *overrides],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=timeout, env=ENV,
    )


def run_folders(tmp):
    return sorted(p for p in (tmp / "logs" / "demo").iterdir() if p.is_dir() and not p.name.startswith("."))


def epochs_in_history(run_dir):
    with (run_dir / "history.csv").open() as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


def assert_consistent(run_dir):
    """What must hold after a kill at any instant."""
    import keras

    from fracture.runs import load_model_file

    if (run_dir / "history.csv").is_file():
        epochs = epochs_in_history(run_dir)
        assert epochs == list(range(len(epochs))), epochs  # one row per epoch, none lost
    for name in ("last.keras", "best.keras"):
        if (run_dir / name).exists():
            assert isinstance(load_model_file(run_dir / name), keras.Model), name
    assert not list(run_dir.glob(".*.tmp")) or True  # temp files of a killed write may remain; never read


@pytest.mark.slow
def test_kill_minus_9_at_any_instant_then_rerun_finishes_with_one_row_per_epoch(tmp_path):
    faults = [
        "batch:1:2",                 # mid-epoch, frozen phase on cached features
        "replace:state.json:3",      # the commit point itself: the frozen phase's end
        "torn_weights:1",            # the next weights file written half (never committed)
        "replace:history.csv:1",     # after the commit, while history is being published
        "replace:last.keras:1",      # while last.keras is being written
        "batch:4:1",                 # mid-epoch in the fine-tune phase
    ]
    for fault in faults:
        killed = run_child(tmp_path, fault)
        assert killed.returncode == -signal.SIGKILL, (fault, killed.stdout[-2000:], killed.stderr[-3000:])
        (run_dir,) = run_folders(tmp_path)  # every rerun continues in the one folder
        assert_consistent(run_dir)
    done = run_child(tmp_path, "none")
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = run_folders(tmp_path)
    assert f"RESULT finished {run_dir}" in done.stdout
    assert epochs_in_history(run_dir) == [0, 1, 2, 3]
    assert_consistent(run_dir)
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "finished" and info["error"] is None
    log = (run_dir / "train.log").read_text()
    assert log.count("run folder:") == len(faults) + 1  # every attempt appended to the one log
    assert "Resuming" in log


def _claim_script(state_dir, run_dir, sleep):
    return textwrap.dedent(f"""
        import time
        from pathlib import Path
        from fracture.training.resume import claim_run, RunLockedError
        try:
            claim = claim_run(Path({str(state_dir)!r}), Path({str(run_dir)!r}), resume=True)
        except RunLockedError as exc:
            print("LOCKED", exc, flush=True)
            raise SystemExit(3)
        print("CLAIMED", claim.run_dir, claim.note, flush=True)
        time.sleep({sleep})
    """)


def test_a_second_identical_run_exits_at_once_naming_the_folder_and_pid(tmp_path):
    state, first_dir = tmp_path / ".in_progress" / "abc", tmp_path / "run1"
    holder = subprocess.Popen([sys.executable, "-c", _claim_script(state, first_dir, 60)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().startswith("CLAIMED")
        started = time.monotonic()
        second = subprocess.run([sys.executable, "-c", _claim_script(state, tmp_path / "run2", 0)],
                                capture_output=True, text=True, timeout=60)
        assert second.returncode == 3 and time.monotonic() - started < 30
        assert str(first_dir) in second.stdout and f"PID {holder.pid}" in second.stdout
        assert not (tmp_path / "run2").exists()
    finally:
        holder.kill()
        holder.wait()
    # the holder died (kill -9): its lock is taken over, with a note naming it
    third = subprocess.run([sys.executable, "-c", _claim_script(state, tmp_path / "run3", 0)],
                           capture_output=True, text=True, timeout=60)
    assert third.returncode == 0, third.stderr
    assert f"took over the lock of PID {holder.pid}, which is no longer running" in third.stdout


def _train_cmd(tmp, *extra):
    return [
        sys.executable, "scripts/train.py", "experiment=demo", f"data.root={tmp / 'syn'}",
        "data.synthetic.per_class=6", "data.min_instances=3", "data.synthetic.min_side=64", "data.synthetic.max_side=80",
        "data.image_size=32", "data.batch_size=16", "trainer.epochs=40", "callbacks.early_stopping.enabled=false",
        "callbacks.tensorboard.enabled=false", "callbacks.progress=2",
        f"paths.log_dir={tmp / 'logs'}", f"paths.cache_dir={tmp / 'cache'}", *extra,
    ]


@pytest.mark.slow
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_and_sigterm_end_the_run_as_interrupted(tmp_path, sig, code):
    proc = subprocess.Popen(_train_cmd(tmp_path), cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=ENV)
    try:
        deadline = time.monotonic() + 240
        while proc.poll() is None and not list((tmp_path / "logs" / "demo").glob("*/history.csv")) and time.monotonic() < deadline:
            time.sleep(0.2)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == code, err[-3000:]
    assert "Traceback" not in err and "Traceback" not in out
    lines = [line for line in out.splitlines() if line.startswith("interrupted at epoch")]
    assert len(lines) == 1 and lines[0].endswith("; rerun the same command to resume"), out[-2000:]
    (run_dir,) = [p for p in (tmp_path / "logs" / "demo").iterdir() if not p.name.startswith(".")]
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "interrupted" and info["interrupted_at_epoch"] == int(lines[0].split()[3].rstrip(";"))
    assert lines[0] in (run_dir / "train.log").read_text()


def test_a_run_that_fails_before_its_first_epoch_says_so(tmp_path):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "data.yaml").write_text("names: [a, b]\ntrain: train/images\nval: valid/images\n")
    cmd = [sys.executable, "scripts/train.py", "experiment=demo", "data=yolo", f"data.root={tmp_path / 'broken'}",
           f"paths.log_dir={tmp_path / 'logs'}", f"paths.cache_dir={tmp_path / 'cache'}"]
    out = subprocess.run(cmd, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300, env=ENV)
    assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr[-3000:]
    (run_dir,) = [p for p in (tmp_path / "logs" / "demo").iterdir() if not p.name.startswith(".")]
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "failed" and "train" in info["error"]
    log = (run_dir / "train.log").read_text()
    assert "run folder:" in log and "error:" in log
    assert (run_dir / "config.yaml").is_file()


def test_a_signal_inside_a_finalizer_is_kept_for_the_next_batch_and_not_printed(monkeypatch):
    """Python prints an exception raised in a `__del__` as "Exception ignored ... Traceback";
    a SIGTERM that lands there must stay quiet and still end the run at the next batch end."""
    from fracture.training.trainer import RunInterrupted, SignalGuard

    reported = []
    monkeypatch.setattr(sys, "unraisablehook", reported.append)
    sigterm_before = signal.getsignal(signal.SIGTERM)

    class SignalledWhileFinalized:
        def __del__(self):
            signal.raise_signal(signal.SIGTERM)  # runs the Python handler here, inside __del__

    class BrokenFinalizer:
        def __del__(self):
            raise ValueError("an unrelated finalizer bug")

    with SignalGuard() as guard:
        SignalledWhileFinalized()  # dropped at once: its __del__ runs on this line
        BrokenFinalizer()
        with pytest.raises(RunInterrupted):
            guard.check()
    assert [type(u.exc_value) for u in reported] == [ValueError]  # other finalizer errors still reported
    assert sys.unraisablehook == reported.append
    assert signal.getsignal(signal.SIGTERM) == sigterm_before  # the handler is restored too

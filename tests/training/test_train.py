"""`train()` end to end on small synthetic data, composed from the real conf/ tree:
it learns (beats chance), fills the run folder, and resumes an interrupted run."""

import csv
import json
import re
import signal
import subprocess
import sys

import keras
import pytest

from conftest import PROJECT_ROOT, compose_cfg
from fracture.training.trainer import RunInterrupted, TrainerConfig, plan_phases, train
from fracture.training.optim import OptimizerConfig, build_optimizer


def small_run(tmp_path, *overrides):
    return compose_cfg(
        "config",
        [
            "experiment=demo",
            f"data.root={tmp_path / 'synthetic'}",
            "data.synthetic.per_class=16",
            "data.synthetic.min_side=96",
            "data.synthetic.max_side=128",
            "data.image_size=64",
            "data.batch_size=16",
            f"paths.log_dir={tmp_path / 'logs'}",
            f"paths.cache_dir={tmp_path / 'cache'}",
            "callbacks.tensorboard.images=2",
            "callbacks.progress=0",
            *overrides,
        ],
    )


class CrashAtEpoch(keras.callbacks.Callback):
    """Simulates a killed process: raises when `epoch` (0-based) begins."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt(f"simulated crash at epoch {epoch + 1}")


class SwallowedSignalAtEpoch(keras.callbacks.Callback):
    """SIGTERM arrives while library code runs a bare `except:` (Keras' save_model does) and eats
    the handler's exception: the run must still stop."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            try:
                signal.raise_signal(signal.SIGTERM)  # the handler runs, and raises, inside this call
            except BaseException:  # noqa: BLE001 - the swallow under test
                pass


def history_rows(run_dir):
    with (run_dir / "history.csv").open() as f:
        return list(csv.DictReader(f))


def test_training_on_synthetic_data_learns_and_fills_the_run_folder(tmp_path):
    cfg = small_run(tmp_path, "trainer.epochs=10")
    result = train(cfg, tmp_path / "run")
    run = tmp_path / "run"
    assert result.status == "finished" and result.run_dir == run
    for name in ("config.yaml", "classes.json", "best.keras", "last.keras", "history.csv", "metrics.json", "run.json", "train.log"):
        assert (run / name).is_file(), name
    assert list((run / "tensorboard" / "val_images").glob("events.out.tfevents.*"))
    rows = history_rows(run)
    assert [int(r["epoch"]) for r in rows] == list(range(len(rows)))
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])
    assert "learning_rate" in rows[0]
    info = json.loads((run / "run.json").read_text())
    assert info["weights_used"] is None and info["precision"] == "float32" and info["status"] == "finished"
    metrics = json.loads((run / "metrics.json").read_text())
    # chance = always predicting the most frequent validation class
    majority = _majority_rate(cfg)
    assert metrics["class_accuracy"] > majority + 0.15, (metrics, majority)
    reloaded = keras.models.load_model(run / "best.keras", safe_mode=True)
    assert reloaded.output["class"].shape[-1] == info["num_classes"]


def _majority_rate(cfg):
    from collections import Counter

    from fracture.data.config import data_config_from_hydra
    from fracture.data.index import build_index

    data = data_config_from_hydra(cfg.data)
    samples = build_index(data, splits=["valid"], cache_dir=cfg.paths.cache_dir).split("valid").samples
    return max(Counter(s.class_id for s in samples).values()) / len(samples)


def test_interrupted_run_resumes_at_the_epoch_it_reached(tmp_path):
    overrides = ("trainer.epochs=4", "trainer.freeze_epochs=1", "callbacks.early_stopping.enabled=false")
    cfg = small_run(tmp_path, *overrides)
    first = tmp_path / "first"
    with pytest.raises(KeyboardInterrupt):
        train(cfg, first, extra_callbacks=[CrashAtEpoch(2)])
    assert [int(r["epoch"]) for r in history_rows(first)] == [0, 1]

    assert json.loads((first / "run.json").read_text())["status"] == "interrupted"
    again = tmp_path / "again"  # a fresh folder is offered; training continues in the first
    result = train(small_run(tmp_path, *overrides), again)
    assert result.run_dir == first and result.status == "finished"
    assert not again.exists()  # no empty folder left behind
    assert [int(r["epoch"]) for r in history_rows(first)] == [0, 1, 2, 3]
    info = json.loads((first / "run.json").read_text())
    assert [(p["name"], p["first_epoch"], p["epochs"]) for p in info["phases"]] == [("frozen", 1, 1), ("fine_tune", 3, 2)]
    assert "Resuming" in (first / "train.log").read_text()
    assert not list((tmp_path / "logs").glob("*/.in_progress/*"))  # state removed when done


def test_a_signal_that_library_code_swallows_still_stops_the_run(tmp_path):
    cfg = small_run(tmp_path, "trainer.epochs=4", "trainer.freeze_epochs=0", "callbacks.early_stopping.enabled=false")
    with pytest.raises(RunInterrupted) as stopped:
        train(cfg, tmp_path / "run", extra_callbacks=[SwallowedSignalAtEpoch(1)])
    assert stopped.value.exit_code == 143
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["status"] == "interrupted" and info["interrupted_at_epoch"] == 2 and info["signal"] == "SIGTERM"
    assert [int(r["epoch"]) for r in history_rows(tmp_path / "run")] == [0]  # stopped at epoch 2's first batch


def test_frozen_phase_uses_the_feature_cache_and_records_it(tmp_path):
    cfg = small_run(tmp_path, "trainer.epochs=2", "trainer.freeze_epochs=1", "trainer.feature_cache=file")
    result = train(cfg, tmp_path / "run")
    phases = json.loads((tmp_path / "run" / "run.json").read_text())["phases"]
    assert [(p["name"], p["feature_cache"]) for p in phases] == [("frozen", "file"), ("fine_tune", "off")]
    assert result.status == "finished"
    assert not list((tmp_path / "cache" / "features").glob("*/*"))  # file cache removed after the phase


def test_negatives_per_epoch_shortens_only_the_epochs_on_images(tmp_path, capsys):
    cfg = small_run(
        tmp_path, "trainer.epochs=2", "trainer.freeze_epochs=1", "trainer.feature_cache=memory",
        "data.negatives_per_epoch=0.5",
    )
    result = train(cfg, tmp_path / "run")
    assert result.status == "finished"
    phases = json.loads((tmp_path / "run" / "run.json").read_text())["phases"]
    printed = capsys.readouterr().out
    negatives = int(re.search(r"'no finding': (\d+)", printed).group(1))  # the printed train class counts
    assert negatives >= 4
    total = phases[0]["images_per_epoch"]  # cached features: every image
    assert [p["name"] for p in phases] == ["frozen", "fine_tune"]
    assert phases[1]["images_per_epoch"] == total - negatives + round(negatives / 2)
    assert f"negatives drawn afresh each epoch: 0.5 of {negatives}" in printed
    assert printed.count("negatives drawn afresh") == 1  # not on the frozen phase's cached features


def test_phase_plan():
    opt = OptimizerConfig(learning_rate=1e-3, fine_tune_learning_rate=1e-4, warmup_epochs=1.0)
    two = plan_phases(TrainerConfig(epochs=10, freeze_epochs=3), opt, augment=True)
    assert [(p.name, p.start, p.end, p.trainable_layers, p.learning_rate, p.augment, p.warmup_epochs) for p in two] == [
        ("frozen", 0, 3, 0, 1e-3, False, 1.0),
        ("fine_tune", 3, 10, "all", 1e-4, True, 1.0),
    ]
    only = plan_phases(TrainerConfig(epochs=5, freeze_epochs=0), opt, augment=False)
    assert [(p.name, p.learning_rate) for p in only] == [("fine_tune", 1e-3)]
    # fine_tune_warmup_epochs is fine-tuning's own only after a frozen phase
    opt = OptimizerConfig(warmup_epochs=1.0, fine_tune_warmup_epochs=0.25)
    two = plan_phases(TrainerConfig(epochs=10, freeze_epochs=3), opt, augment=True)
    assert [p.warmup_epochs for p in two] == [1.0, 0.25]
    only = plan_phases(TrainerConfig(epochs=5, freeze_epochs=0), opt, augment=False)
    assert [p.warmup_epochs for p in only] == [1.0]
    with pytest.raises(ValueError, match="fine_tune_warmup_epochs"):
        OptimizerConfig(fine_tune_warmup_epochs=-1)


def test_a_phase_warm_up_reaches_the_schedule():
    def warmup_steps(optimizer):
        return optimizer.get_config()["learning_rate"]["config"]["warmup_steps"]

    cfg = OptimizerConfig(warmup_epochs=1.0)
    given = build_optimizer(cfg, 1e-3, steps_per_epoch=8, epochs=4, global_batch_size=8, warmup_epochs=0.25)
    assert warmup_steps(given) == 2  # 0.25 x 8 steps
    assert warmup_steps(build_optimizer(cfg, 1e-3, 8, 4, 8)) == 8  # None: cfg.warmup_epochs


def test_unknown_config_key_is_a_clear_error(tmp_path):
    cfg = small_run(tmp_path, "+trainer.epoch=3")
    with pytest.raises(ValueError, match="trainer.epoch"):
        train(cfg, tmp_path / "run")


@pytest.mark.parametrize("overrides", [[], ["model.optimizer.ema_momentum=0.99"]])
def test_raw_weights_map_without_an_average_to_compare_is_refused(tmp_path, overrides):
    # the demo is a classifier: no valid mAP to score the raw weights by, with or without an average
    cfg = small_run(tmp_path, "callbacks.raw_weights_map=true", *overrides)
    with pytest.raises(ValueError, match="raw_weights_map=true"):
        train(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_an_unknown_data_key_added_with_plus_is_refused_before_any_folder(tmp_path):
    cfg = small_run(tmp_path, "+data.batchsize=8")
    with pytest.raises(ValueError, match=r"data\.batchsize.*batch_size"):
        train(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists() and not (tmp_path / "logs").exists()


def test_train_script_prints_the_run_folder_and_tensorboard_command(tmp_path):
    cmd = [
        sys.executable, "scripts/train.py", "experiment=demo", f"data.root={tmp_path / 'syn'}",
        "data.synthetic.per_class=10", "data.image_size=32", "trainer.epochs=1", "callbacks.progress=0",
        f"paths.log_dir={tmp_path / 'logs'}", f"paths.cache_dir={tmp_path / 'cache'}",
    ]
    out = subprocess.run(cmd, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "run folder: " + str(tmp_path / "logs" / "demo") in out.stdout
    assert "tensorboard --logdir " in out.stdout


def test_a_damaged_dataset_stops_the_run_with_the_reason_unless_allowed(tmp_path):
    from fracture.data.config import data_config_from_hydra
    from fracture.data.layout import DatasetError

    cfg = small_run(tmp_path, "trainer.epochs=1")
    data_config_from_hydra(cfg.data)  # writes the synthetic dataset
    labels = sorted((tmp_path / "synthetic" / "valid" / "labels").glob("*.txt"))
    for label in labels[: int(len(labels) * 0.7)]:
        label.unlink()  # a damaged copy: most valid images lose their label file
    with pytest.raises(DatasetError, match="valid.*data.allow_shrink=true"):
        train(cfg, tmp_path / "refused")
    info = json.loads((tmp_path / "refused" / "run.json").read_text())
    assert info["status"] == "failed" and "allow_shrink" in info["error"]
    lost = info["data"]["splits"]["valid"]
    assert lost["images_left_out"]["no_label_file"] == int(len(labels) * 0.7)

    allowed = train(small_run(tmp_path, "trainer.epochs=1", "data.allow_shrink=true", "task_name=allowed"), tmp_path / "allowed")
    assert allowed.status == "finished"
    log = (tmp_path / "allowed" / "train.log").read_text()
    assert "no label file" in log  # the accounting table was printed before training


def test_a_weight_average_is_scored_beside_the_raw_weights_in_both_phases(tmp_path):
    cfg = compose_cfg("config", [
        "experiment=demo_detector", f"data.root={tmp_path / 'synthetic'}", "data.synthetic.per_class=8",
        "data.synthetic.min_side=96", "data.synthetic.max_side=128", "data.image_size=64", "data.batch_size=8",
        "trainer.epochs=2", "trainer.freeze_epochs=1", "trainer.max_train_batches=2",
        "model.optimizer.ema_momentum=0.9", "callbacks.raw_weights_map=true", f"paths.log_dir={tmp_path / 'logs'}",
        f"paths.cache_dir={tmp_path / 'cache'}", "callbacks.progress=0", "callbacks.tensorboard.enabled=false",
    ])
    result = train(cfg, tmp_path / "run")
    assert result.status == "finished"
    rows = history_rows(result.run_dir)
    assert [r["epoch"] for r in rows] == ["0", "1"]  # the frozen phase on cached features, then fine-tuning
    for key in ("val_raw_map50", "val_raw_map50_95", "val_map50", "val_map50_95"):
        assert all(0.0 <= float(r[key]) <= 1.0 for r in rows), key

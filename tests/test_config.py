"""The real conf/ tree composes, and data.root / FRACTURE_DATA_ROOT work with every data config."""

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PROJECT_ROOT, compose_cfg
from fracture.data.config import DataConfig, data_config_from_hydra
from fracture.data.download import DownloadError, download

def test_train_config_has_the_defaults_list(monkeypatch):
    monkeypatch.setenv("FRACTURE_PROJECT_ROOT", "/proj")
    monkeypatch.delenv("FRACTURE_DATA_ROOT", raising=False)
    cfg = compose_cfg("config", [])
    assert {"data", "model", "trainer", "callbacks", "paths"} <= set(cfg)
    assert cfg.data.root == "/proj/data/BoneFractureYolo8"
    assert cfg.data.annotations == "merge"


def test_env_var_sets_the_default_dataset_root(monkeypatch, tmp_path):
    monkeypatch.setenv("FRACTURE_DATA_ROOT", str(tmp_path))
    assert compose_cfg("inspect_data", []).data.root == str(tmp_path)


@pytest.mark.parametrize("data", ["yolo", "bone_fracture_yolo8", "synthetic"])
def test_data_root_override_works_with_every_data_config(data, tmp_path):
    cfg = compose_cfg("inspect_data", [f"data={data}", f"data.root={tmp_path}"])
    assert cfg.data.root == str(tmp_path)
    assert DataConfig.from_mapping(cfg.data).root == str(tmp_path)


def test_yolo_without_root_says_what_to_set():
    cfg = compose_cfg("inspect_data", ["data=yolo"])
    with pytest.raises(Exception, match="data.root"):
        data_config_from_hydra(cfg.data)


def test_synthetic_config_generates_on_first_use(tmp_path):
    cfg = compose_cfg(
        "inspect_data",
        ["data=synthetic", f"data.root={tmp_path / 'syn'}", "data.synthetic.per_class=2", "data.synthetic.rare_per_split=1"],
    )
    data_cfg = data_config_from_hydra(cfg.data)
    assert (Path(data_cfg.root) / "data.yaml").is_file()
    assert data_cfg.image_size == 128


def test_download_offline_fails_fast_with_instructions(tmp_path):
    with pytest.raises(DownloadError, match="FRACTURE_DATA_ROOT") as info:
        download(tmp_path / "d", check_network=lambda: "www.kaggle.com:443 is unreachable (test)")
    assert "data=synthetic" in str(info.value)


def test_inspect_script_end_to_end_on_synthetic(tmp_path):
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "scripts/inspect_data.py", "data=synthetic", f"data.root={tmp_path / 'syn'}",
         "data.synthetic.per_class=8", f"out={out}", f"paths.cache_dir={tmp_path / 'cache'}"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "classes:" in result.stdout
    assert {"summary.json", "report.md", "samples_train.png"} <= {p.name for p in out.iterdir()}


def test_inspect_script_bad_root_is_a_clear_error_not_a_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "scripts/inspect_data.py", "data=yolo", f"data.root={tmp_path / 'missing'}", f"out={tmp_path}"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode != 0
    assert "does not exist" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (PROJECT_ROOT / "conf" / "experiment").glob("*.yaml")))
def test_every_experiment_composes_and_types(experiment):
    """A typo in an experiment fails here, not an hour into a run; a dense detector gets every box."""
    from fracture.training.trainer import TrainSettings

    text = (PROJECT_ROOT / "conf" / "experiment" / f"{experiment}.yaml").read_text()
    if "override /data: folders" in text and not (PROJECT_ROOT / "conf" / "data" / "folders.yaml").is_file():
        pytest.skip("data=folders (conf/data/folders.yaml) is not merged yet")
    cfg = compose_cfg("config", [f"experiment={experiment}"])
    settings = TrainSettings.from_config(cfg)
    assert (settings.model.box_head == "dense") == (cfg.data.multi_object_rule == "all"), experiment

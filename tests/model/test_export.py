"""Exported SavedModels: TF Serving's layout, the uint8 signature, preprocessing in the graph."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow as tf

from amberscan.model import backbones
from amberscan.model.export import METADATA_FILE, build_backbone, export_backbone
from amberscan.vision.crops import CROP_RESAMPLE


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def lite0_version(model_dir: Path) -> Path:
    return export_backbone("efficientnet-lite0", "pretrained", model_dir)


@pytest.fixture(scope="module")
def lite0_serving(lite0_version: Path) -> Any:
    return tf.saved_model.load(str(lite0_version)).signatures["serving_default"]


def _images(n: int, height: int, width: int, seed: int = 0) -> tf.Tensor:
    rng = np.random.default_rng(seed)
    return tf.constant(rng.integers(0, 256, (n, height, width, 3), dtype=np.uint8))


def test_layout_is_tf_servings(model_dir: Path, lite0_version: Path) -> None:
    assert lite0_version == model_dir / "backbone" / "1"
    assert (lite0_version / "saved_model.pb").is_file()
    assert (lite0_version / "variables" / "variables.index").is_file()
    assert [p.name for p in (model_dir / "backbone").iterdir() if p.name.startswith(".")] == []
    meta = json.loads((lite0_version / METADATA_FILE).read_text())
    assert meta["backbone"] == "efficientnet-lite0"
    assert meta["weights"].startswith("pretrained (efficientnet-lite0-57934424.pth")
    assert meta["feature_dim"] == 1280
    assert meta["input_size"] == 224
    assert meta["crop_resample"] == CROP_RESAMPLE
    assert meta["created_by"] == "amberscan.model.export"


def test_signature_takes_uint8_images_and_returns_features(lite0_serving: Any) -> None:
    _, inputs = lite0_serving.structured_input_signature
    assert list(inputs) == ["images"]
    assert inputs["images"].dtype == tf.uint8
    assert inputs["images"].shape.as_list() == [None, None, None, 3]
    assert lite0_serving.structured_outputs["features"].shape.as_list() == [None, 1280]


@pytest.mark.parametrize(("n", "height", "width"), [(1, 224, 224), (3, 64, 96), (2, 500, 300)])
def test_any_image_size_gives_n_by_d_float32(
    lite0_serving: Any, n: int, height: int, width: int
) -> None:
    features = lite0_serving(images=_images(n, height, width))["features"]
    assert features.dtype == tf.float32
    assert features.shape == (n, 1280)
    assert np.isfinite(features.numpy()).all()


def test_preprocessing_happens_in_the_graph(lite0_serving: Any) -> None:
    images = _images(2, 224, 224, seed=5)
    model, _ = build_backbone("efficientnet-lite0", "pretrained")
    expected = model.predict(backbones.preprocess("efficientnet-lite0", images), verbose=0)
    served = lite0_serving(images=images)["features"].numpy()
    np.testing.assert_allclose(served, expected, atol=1e-4)


def test_next_version_is_deterministic(model_dir: Path, lite0_version: Path) -> None:
    second = export_backbone("efficientnet-lite0", "pretrained", model_dir)
    assert second == model_dir / "backbone" / "2"
    data = "variables/variables.data-00000-of-00001"
    assert (second / data).read_bytes() == (lite0_version / data).read_bytes()
    with pytest.raises(FileExistsError, match="backbone/2 already exists"):
        export_backbone("efficientnet-lite0", "pretrained", model_dir, version=2)


def test_resnet50_random_export(tmp_path: Path) -> None:
    version = export_backbone("resnet50", "random", tmp_path, model_name="r50", version=7, seed=3)
    assert version == tmp_path / "r50" / "7"
    meta = json.loads((version / METADATA_FILE).read_text())
    assert (meta["weights"], meta["feature_dim"]) == ("random (seed 3)", 2048)
    serving = tf.saved_model.load(str(version)).signatures["serving_default"]
    assert serving(images=_images(2, 120, 80))["features"].shape == (2, 2048)


def test_lite1_serves_224_crops_as_the_fine_tune_sees_them(tmp_path: Path) -> None:
    """The feature stage cuts 224 px crops for every backbone: Lite1's graph resizes them to its
    240 px input with the fine-tune's own op, so what it serves is what it was trained on."""
    from amberscan.model.finetune import pixel_features

    version = export_backbone("efficientnet-lite1", "pretrained", tmp_path)
    assert json.loads((version / METADATA_FILE).read_text())["input_size"] == 240
    serving = tf.saved_model.load(str(version)).signatures["serving_default"]
    images = _images(3, 224, 224, seed=7)
    trained_on = pixel_features("efficientnet-lite1")(tf.cast(images, tf.float32)).numpy()
    served = serving(images=images)["features"].numpy()
    np.testing.assert_allclose(served, trained_on, atol=1e-4)
    # Not the identity: the same crops at 240 px give other features.
    native = serving(images=tf.image.resize(images, (240, 240), method="nearest"))["features"]
    assert np.abs(native.numpy() - served).max() > 1e-2


def test_lite0_multi_depth_export(tmp_path: Path) -> None:
    version = export_backbone("efficientnet-lite0-multi", "pretrained", tmp_path)
    assert json.loads((version / METADATA_FILE).read_text())["feature_dim"] == 1432
    serving = tf.saved_model.load(str(version)).signatures["serving_default"]
    assert serving(images=_images(1, 90, 90))["features"].shape == (1, 1432)


@pytest.mark.parametrize(
    ("name", "weights", "error", "message"),
    [
        ("vgg16", "imagenet", ValueError, "unknown backbone 'vgg16'"),
        ("efficientnet-lite0", "imagenet", ValueError, "'pretrained' or a .pth path"),
        ("efficientnet-lite0", "/nonexistent/lite0.pth", FileNotFoundError, "lite0.pth"),
    ],
)
def test_bad_requests_write_nothing(
    tmp_path: Path, name: str, weights: str, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        export_backbone(name, weights, tmp_path)
    assert not (tmp_path / "backbone").exists()

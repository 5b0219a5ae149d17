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
    assert meta["crop_size"] == 224
    assert meta["crop_resample"] == CROP_RESAMPLE
    assert meta["created_by"] == "amberscan.model.export"


def test_signature_takes_uint8_images_and_returns_features(lite0_serving: Any) -> None:
    _, inputs = lite0_serving.structured_input_signature
    assert list(inputs) == ["images"]
    assert inputs["images"].dtype == tf.uint8
    # The crop size is part of the contract: clients read it from the server's metadata.
    assert inputs["images"].shape.as_list() == [None, 224, 224, 3]
    assert lite0_serving.structured_outputs["features"].shape.as_list() == [None, 1280]


@pytest.mark.parametrize("n", [1, 3])
def test_crops_of_the_crop_size_give_n_by_d_float32(lite0_serving: Any, n: int) -> None:
    features = lite0_serving(images=_images(n, 224, 224))["features"]
    assert features.dtype == tf.float32
    assert features.shape == (n, 1280)
    assert np.isfinite(features.numpy()).all()


@pytest.mark.parametrize(("height", "width"), [(64, 96), (240, 240)])
def test_the_model_server_refuses_crops_of_another_size(
    lite0_version: Path, height: int, width: int
) -> None:
    """Rather than serve features of crops the backbone was not trained on (the graph itself
    would run on any size)."""
    from amberscan.modelserver.runtimes import ContractViolation, SavedModelRuntime

    runtime = SavedModelRuntime(lite0_version.parent.parent, "backbone", version=1)
    with pytest.raises(ContractViolation, match=r"expected shape \(-1, 224, 224, 3\)"):
        runtime.predict({"images": _images(1, height, width).numpy()})


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
    assert serving(images=_images(2, 224, 224))["features"].shape == (2, 2048)


def test_lite1_takes_crops_at_its_own_input_size_by_default(tmp_path: Path) -> None:
    """`finetune` cuts Lite1's crops at its 240-px input, so its export takes 240-px crops and
    serves what the fine-tune computes on them."""
    from amberscan.model.finetune import pixel_features

    version = export_backbone("efficientnet-lite1", "pretrained", tmp_path)
    meta = json.loads((version / METADATA_FILE).read_text())
    assert (meta["input_size"], meta["crop_size"]) == (240, 240)
    serving = tf.saved_model.load(str(version)).signatures["serving_default"]
    _, inputs = serving.structured_input_signature
    assert inputs["images"].shape.as_list() == [None, 240, 240, 3]
    images = _images(3, 240, 240, seed=7)
    trained_on = pixel_features("efficientnet-lite1")(tf.cast(images, tf.float32)).numpy()
    np.testing.assert_allclose(serving(images=images)["features"].numpy(), trained_on, atol=1e-4)


def test_lite1_exported_for_224_crops_resizes_them_as_the_fine_tune_does(tmp_path: Path) -> None:
    """Another crop size than the input: the graph resizes the crops with the fine-tune's own
    op, so what it serves is what a fine-tune on crops cut at that size was trained on."""
    from amberscan.model.finetune import pixel_features

    version = export_backbone("efficientnet-lite1", "pretrained", tmp_path, crop_size=224)
    assert json.loads((version / METADATA_FILE).read_text())["crop_size"] == 224
    serving = tf.saved_model.load(str(version)).signatures["serving_default"]
    images = _images(3, 224, 224, seed=7)
    trained_on = pixel_features("efficientnet-lite1")(tf.cast(images, tf.float32)).numpy()
    served = serving(images=images)["features"].numpy()
    np.testing.assert_allclose(served, trained_on, atol=1e-4)
    # Not the identity: the same crops at 240 px give other features.
    native = tf.image.resize(images, (240, 240), method="nearest")
    assert np.abs(pixel_features("efficientnet-lite1")(native).numpy() - served).max() > 1e-2


def test_lite0_multi_depth_export(tmp_path: Path) -> None:
    version = export_backbone("efficientnet-lite0-multi", "pretrained", tmp_path)
    assert json.loads((version / METADATA_FILE).read_text())["feature_dim"] == 1432
    serving = tf.saved_model.load(str(version)).signatures["serving_default"]
    assert serving(images=_images(1, 224, 224))["features"].shape == (1, 1432)


def test_a_crop_size_out_of_range_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="crop_size must be 32 to 1024 px, not 8"):
        export_backbone("efficientnet-lite0", "pretrained", tmp_path, crop_size=8)
    assert not (tmp_path / "backbone").exists()


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

"""A tiny SavedModel in TF Serving layout, built in code, for the model server and client tests."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

TEST_MODEL_NAME = "tiny"
TEST_FEATURE_DIM = 16
TEST_IMAGE_SIZE = 8


@dataclass(frozen=True)
class TinyModel:
    """Where the test model lives and what it computes, to compare the server against."""

    model_dir: Path
    name: str
    version: int
    feature_dim: int
    image_size: int
    projection: NDArray[np.float32]

    def expected(self, images: NDArray[np.uint8]) -> NDArray[np.float32]:
        """The model's features in numpy: [mean R, G, B, std of grey] @ projection."""
        pixels = images.astype(np.float32) / 255.0
        mean = pixels.mean(axis=(1, 2))
        std = pixels.mean(axis=3).std(axis=(1, 2))[:, None]
        return np.tanh(np.concatenate([mean, std], axis=1) @ self.projection)


def export_tiny_model(
    model_dir: Path,
    name: str = TEST_MODEL_NAME,
    version: int = 1,
    feature_dim: int = TEST_FEATURE_DIM,
    image_size: int = TEST_IMAGE_SIZE,
    seed: int = 0,
) -> TinyModel:
    """Save a SavedModel at ``model_dir/name/version``: uint8 `images` → float32 `features`."""
    import tensorflow as tf

    projection = np.random.default_rng(seed).normal(size=(4, feature_dim)).astype(np.float32)

    spec = tf.TensorSpec([None, image_size, image_size, 3], tf.uint8, name="images")

    class Tiny(tf.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.projection = tf.constant(projection)

        @tf.function(input_signature=[spec])  # type: ignore[untyped-decorator]
        def serve(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
            pixels = tf.cast(images, tf.float32) / 255.0
            mean = tf.reduce_mean(pixels, axis=[1, 2])
            std = tf.math.reduce_std(tf.reduce_mean(pixels, axis=3), axis=[1, 2])[:, None]
            stats = tf.concat([mean, std], axis=1)
            return {"features": tf.tanh(tf.matmul(stats, self.projection))}

    module = Tiny()
    path = Path(model_dir) / name / str(version)
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return TinyModel(Path(model_dir), name, version, feature_dim, image_size, projection)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TinyModel]:
    """Versions 1 and 2 of the tiny model (2 has another projection): servers serve 2."""
    model_dir = tmp_path_factory.mktemp("serving")
    export_tiny_model(model_dir, version=1, seed=1)
    yield export_tiny_model(model_dir, version=2, seed=2)

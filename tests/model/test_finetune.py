"""Fine-tuning: the augmentations, and a fine-tuned backbone exported behind the same contract."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from amberscan.model.dataset import list_labelled
from amberscan.model.export import export_backbone
from amberscan.model.finetune import FinetuneConfig, augment, dihedral, finetune, pixel_features
from amberscan.vision.crops import load_crop


def test_dihedral_group_gives_eight_distinct_views_and_identity_first() -> None:
    image = tf.constant(np.arange(2 * 3 * 3 * 1).reshape(2, 3, 3, 1))
    views = [dihedral(image, k).numpy() for k in range(8)]
    assert np.array_equal(views[0], image.numpy())
    assert len({v.tobytes() for v in views}) == 8
    # Every view holds the same pixels: nothing is lost or invented.
    assert all(np.array_equal(np.sort(v, axis=None), np.sort(views[0], axis=None)) for v in views)


def test_augment_keeps_shape_and_pixel_range_and_depends_on_the_seed() -> None:
    rng = np.random.default_rng(0)
    images = tf.constant(rng.integers(0, 256, (4, 64, 64, 3), dtype=np.uint8))
    config = FinetuneConfig()
    a = augment(images, config, tf.constant([1, 2], tf.int64)).numpy()
    b = augment(images, config, tf.constant([1, 2], tf.int64)).numpy()
    c = augment(images, config, tf.constant([3, 4], tf.int64)).numpy()
    assert a.shape == (4, 64, 64, 3) and a.dtype == np.float32
    assert a.min() >= 0 and a.max() <= 255
    assert np.array_equal(a, b) and not np.array_equal(a, c)


@pytest.fixture(scope="module")
def small_set(shared_data: Path) -> tuple[np.ndarray, np.ndarray]:
    crops = list_labelled(shared_data / "superpixels")
    chosen = [c for c in crops if c.label][:8] + [c for c in crops if not c.label][:8]
    return np.stack([load_crop(c.path) for c in chosen]), np.array([c.label for c in chosen])


def test_finetuned_backbone_is_served_as_trained(
    small_set: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    images, labels = small_set
    config = FinetuneConfig(epochs=2, head_epochs=1, batch_size=8)
    model = finetune(pixel_features, images, labels, config)
    weights = model.save(tmp_path / "ft.weights.h5")

    tuned = export_backbone(
        "efficientnet-lite0",
        "pretrained",
        tmp_path / "m",
        version=1,
        finetuned=weights,
        views=8,
        openvino=False,
    )
    plain = export_backbone(
        "efficientnet-lite0", "pretrained", tmp_path / "m", version=2, openvino=False
    )
    serve_tuned = tf.saved_model.load(str(tuned)).signatures["serving_default"]
    serve_plain = tf.saved_model.load(str(plain)).signatures["serving_default"]
    served = serve_tuned(images=tf.constant(images[:4]))["features"].numpy()
    # The served graph (uint8 in, preprocessing and 8-view averaging inside) gives what the
    # fine-tuned model computes in training code.
    np.testing.assert_allclose(served, model.embed(images[:4], tta=True), rtol=1e-3, atol=1e-3)
    # Training moved the backbone: its features are not the pretrained ones.
    before = serve_plain(images=tf.constant(images[:4]))["features"].numpy()
    assert np.abs(served - before).max() > 1e-2


FINETUNE_ONCE = """
import hashlib, sys
import numpy as np
from amberscan.model.finetune import FinetuneConfig, deterministic_threads, finetune, pixel_features
deterministic_threads()
data = np.load(sys.argv[1])
model = finetune(pixel_features, data["images"], data["labels"], FinetuneConfig(epochs=2, batch_size=8))
weights = np.concatenate([w.numpy().ravel() for w in model.features.weights])
print(hashlib.sha256(weights.tobytes()).hexdigest())
"""


def test_a_fine_tune_is_repeatable_on_one_machine(
    small_set: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    """Two fine-tunes in fresh processes, one thread each (as `amberscan finetune` runs), end with
    the same weights bit for bit: a build is repeatable, so its verdicts are too."""
    import subprocess
    import sys

    images, labels = small_set
    np.savez(tmp_path / "set.npz", images=images, labels=labels)
    hashes = [
        subprocess.run(
            [sys.executable, "-c", FINETUNE_ONCE, str(tmp_path / "set.npz")],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()[-1]
        for _ in range(2)
    ]
    assert hashes[0] == hashes[1]


def test_export_refuses_a_missing_finetuned_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="fine-tuned weights"):
        export_backbone(
            "efficientnet-lite0", "pretrained", tmp_path, finetuned=tmp_path / "nope.weights.h5"
        )
    assert not (tmp_path / "backbone").exists() or not any((tmp_path / "backbone").iterdir())

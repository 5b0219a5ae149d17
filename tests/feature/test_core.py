"""The feature core (pure): a superpixel's crop cut from its tile at the served size, its name in
every message about it, the backbone version its tile was stamped for, and its features message."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from amberscan.errors import PoisonMessage
from amberscan.feature.core import cut_crop, features_message, requested_version, superpixel_name
from amberscan.v1 import messages_pb2 as pb
from amberscan.vision.crops import crop_superpixel


def ref_of(box: tuple[int, int, int, int], height: int = 64, width: int = 48) -> pb.SuperpixelRef:
    row0, col0, row1, col1 = box
    return pb.SuperpixelRef(
        tile_id="120",
        segment_index=7,
        image_key="tiles/ab.png",
        image_height=height,
        image_width=width,
        bbox=pb.PixelBox(row0=row0, col0=col0, row1=row1, col1=col1),
    )


def tile(height: int = 64, width: int = 48) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_a_superpixel_is_named_by_its_index_tile_and_blob() -> None:
    assert superpixel_name(ref_of((0, 0, 1, 1))) == "superpixel 7 of tile 120 (tiles/ab.png)"


@given(
    st.tuples(st.integers(0, 63), st.integers(1, 64), st.integers(0, 47), st.integers(1, 48)),
    st.sampled_from([1, 16, 224]),
)
def test_the_crop_is_the_box_cut_from_the_tile_at_the_served_size(
    spans: tuple[int, int, int, int], size: int
) -> None:
    a, b, c, d = spans
    box = (min(a, b - 1), min(c, d - 1), b, d)
    image = tile()
    crop = cut_crop(image, ref_of(box), size)
    assert crop.shape == (size, size, 3) and crop.dtype == np.uint8
    assert np.array_equal(crop, crop_superpixel(image, box, size))


@pytest.mark.parametrize(
    ("image", "box", "problem"),
    [
        (tile(32, 48), (0, 0, 8, 8), "tile is 48x32, the superpixel was cut from 48x64"),
        (tile(), (0, 40, 8, 60), "outside the 64x48 image"),
    ],
)
def test_a_crop_that_cannot_be_cut_is_poison_naming_the_superpixel(
    image: np.ndarray, box: tuple[int, int, int, int], problem: str
) -> None:
    with pytest.raises(PoisonMessage) as raised:
        cut_crop(image, ref_of(box), 16)
    assert str(raised.value).startswith("superpixel 7 of tile 120 (tiles/ab.png): ")
    assert problem in str(raised.value)


@pytest.mark.parametrize(
    ("stamp", "version"),
    [
        ("backbone/3", 3),
        ("backbone/12", 12),
        ("", None),  # not stamped: the newest served version
        ("other/3", None),  # another model's version means nothing to this one
        ("backbone/latest", None),
        ("backbone", None),
    ],
)
def test_the_requested_version_is_the_stamp_of_this_model(stamp: str, version: int | None) -> None:
    ref = pb.SuperpixelRef()
    ref.models.backbone = stamp
    assert requested_version(ref, "backbone") == version


def test_the_features_message_names_the_backbone_that_computed_it() -> None:
    ref = ref_of((0, 0, 8, 8))
    ref.models.backbone = "backbone/1"
    ref.models.classifier = "c1"
    vector = np.array([0.5, 1.5, -2.0], dtype=np.float32)
    message = features_message(ref, vector, "backbone/2")
    assert message.backbone == message.ref.models.backbone == "backbone/2"
    assert list(message.vector) == [0.5, 1.5, -2.0]
    assert message.ref.models.classifier == "c1" and message.ref.bbox == ref.bbox
    assert ref.models.backbone == "backbone/1"  # the input is left as it was

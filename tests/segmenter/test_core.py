"""Segmenter core on a real shared tile: superpixel messages, label PNGs. No servers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from amberscan.segmenter.core import (
    segment_tile,
    superpixel_messages,
)
from amberscan.v1 import messages_pb2 as pb
from amberscan.vision.crops import crop_superpixel
from amberscan.vision.imageio import read_image
from amberscan.vision.segment import Segmentation, decode_rle

TILE = pb.Tile(
    tile_id="120330211",
    scan_id="scan-1",
    tile=pb.TileCoord(z=16, x=38012, y=22100, quadkey="120330211"),
    provider="test",
    imagery_date="2015-10-05",
    image_key="tiles/ab/abc.png",
    tiles_expected=4,
    models=pb.ModelVersions(classifier="m1", backbone="b1"),
)


@pytest.fixture(scope="module")
def image(shared_data: Path) -> np.ndarray:
    return read_image(shared_data / "tiles" / "positive1.png")


@pytest.fixture(scope="module")
def segmented(image: np.ndarray) -> Segmentation:
    return segment_tile(image)  # the reference (2018) segmentation, about a second


@pytest.fixture(scope="module")
def messages(segmented: Segmentation) -> list[pb.Superpixel]:
    return superpixel_messages(TILE, segmented, "labels/l.png", "slic-x")


def test_segments_the_whole_tile(image: np.ndarray, segmented: Segmentation) -> None:
    assert len(segmented.superpixels) > 1
    assert segmented.labels.shape == image.shape[:2]


def test_messages_number_every_superpixel_once(
    segmented: Segmentation, messages: list[pb.Superpixel]
) -> None:
    n = len(segmented.superpixels)
    assert len(messages) == n
    assert sorted(m.ref.segment_index for m in messages) == list(range(n))
    for m in messages:
        assert m.ref.segment_count == n
        assert m.segmenter == "slic-x" and m.ref.labels_key == "labels/l.png"


def test_a_message_names_its_crop_in_the_tile(
    image: np.ndarray, segmented: Segmentation, messages: list[pb.Superpixel]
) -> None:
    """The feature stage cuts crops from the tile by the message's box: the box is the
    superpixel's, so the crop is the one the detection core cuts."""
    for m in messages:
        sp = segmented.superpixels[m.ref.segment_index]
        box = m.ref.bbox
        assert (box.row0, box.col0, box.row1, box.col1) == sp.bbox
        np.testing.assert_array_equal(
            crop_superpixel(image, (box.row0, box.col0, box.row1, box.col1)),
            crop_superpixel(image, sp.bbox),
        )


def test_messages_carry_the_tile(image: np.ndarray, messages: list[pb.Superpixel]) -> None:
    height, width = image.shape[:2]
    for m in messages:
        ref = m.ref
        assert (ref.image_width, ref.image_height) == (width, height)
        assert ref.tile_id == TILE.tile_id and ref.scan_id == TILE.scan_id
        assert ref.tile == TILE.tile and ref.models == TILE.models
        assert ref.image_key == TILE.image_key and ref.imagery_date == TILE.imagery_date
        assert ref.provider == TILE.provider and ref.tiles_expected == TILE.tiles_expected


def test_boxes_inside_image_and_areas_cover_it(
    image: np.ndarray, messages: list[pb.Superpixel]
) -> None:
    height, width = image.shape[:2]
    for m in messages:
        box = m.ref.bbox
        assert 0 <= box.row0 < box.row1 <= height
        assert 0 <= box.col0 < box.col1 <= width
        assert 0 < m.ref.area_px <= (box.row1 - box.row0) * (box.col1 - box.col0)
    assert sum(m.ref.area_px for m in messages) == height * width


def test_masks_are_exactly_the_superpixels(
    segmented: Segmentation, messages: list[pb.Superpixel]
) -> None:
    labels = segmented.labels
    rebuilt = np.full(labels.shape, -1, dtype=np.int64)
    for m in messages:
        box, i = m.ref.bbox, m.ref.segment_index
        mask = decode_rle(m.ref.mask_rle, (box.row1 - box.row0, box.col1 - box.col0))
        window = labels[box.row0 : box.row1, box.col0 : box.col1]
        np.testing.assert_array_equal(mask, window == i)
        assert int(mask.sum()) == m.ref.area_px
        # the box is tight: the mask touches each of its four sides
        assert mask[0].any() and mask[-1].any() and mask[:, 0].any() and mask[:, -1].any()
        target = rebuilt[box.row0 : box.row1, box.col0 : box.col1]
        assert (target[mask] == -1).all(), f"superpixel {i} overlaps another"
        target[mask] = i
    # the messages alone give back the whole label image: every pixel exactly once
    np.testing.assert_array_equal(rebuilt, labels)

"""The label-image codec: a segmentation's labels survive the PNG round trip exactly."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from amberscan.errors import InvalidImage
from amberscan.vision.imageio import encode_png, read_image
from amberscan.vision.labels import MAX_LABEL, decode_labels, encode_labels
from amberscan.vision.segment import segment


def test_label_image_of_a_real_tile_round_trips(shared_data: Path) -> None:
    labels = segment(read_image(shared_data / "tiles" / "positive1.png"), mode="fast").labels
    decoded = decode_labels(encode_labels(labels))
    assert decoded.dtype == np.int32
    np.testing.assert_array_equal(decoded, labels)


@settings(max_examples=25, deadline=None)
@given(
    arrays(
        np.int32,
        st.tuples(st.integers(1, 12), st.integers(1, 12)),
        elements=st.integers(0, MAX_LABEL),
    )
)
def test_label_round_trip_up_to_16_bits(labels: np.ndarray) -> None:
    np.testing.assert_array_equal(decode_labels(encode_labels(labels)), labels)


def test_largest_16_bit_label_fits_and_one_more_is_refused() -> None:
    labels = np.zeros((3, 4), dtype=np.int32)
    labels[1, 2] = 65535
    np.testing.assert_array_equal(decode_labels(encode_labels(labels)), labels)
    labels[2, 3] = 65536
    with pytest.raises(ValueError, match="16-bit"):
        encode_labels(labels)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"", "not a label PNG"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 30, "not a label PNG"),
        (b"GIF89a" + b"\x00" * 30, "not a label PNG"),
        (
            encode_png(np.zeros((4, 4, 3), dtype=np.uint8)),
            "a label image has one integer band, got uint8 (4, 4, 3)",
        ),
    ],
)
def test_a_bad_label_image_is_named(data: bytes, problem: str) -> None:
    with pytest.raises(InvalidImage, match="^labels/ab/abc.png: " + re.escape(problem)):
        decode_labels(data, "labels/ab/abc.png")

"""Segmentation: labels cover every pixel exactly once, match the 2018 code, fast mode agrees."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from amberscan.errors import InvalidMask
from amberscan.vision.imageio import read_image
from amberscan.vision.segment import (
    Segmentation,
    Superpixel,
    best_match_iou,
    boundaries,
    decode_rle,
    encode_rle,
    segment,
    segmenter_label,
    superpixel_mask,
)

TILES = ("negative1", "negative2", "positive1", "positive2")

# sha256 of the int32 label image that scikit-image 0.14.2 (and 0.13.1) gives for
# slic(img_as_float(tile), n_segments=30, compactness=35, sigma=1), the 2018 call, computed
# once in a Python 3.6 environment with those versions.
SKIMAGE_014_LABELS_SHA256 = {
    "negative1": "bf067c4697c9eef844af27ea71131815207d486ca293db850ac3c1c75047a04e",
    "negative2": "c0ee4d3accee9ea22c9e218fe7b342da47adcd66cdb7534ac7f9aed166da8e17",
    "positive1": "9b3677d30301831cb4ae5f2c5f0b459f05bd06a2c54fe85d02049bd17e344228",
    "positive2": "e7564b8e023030ff0b8376dc4d665599ecfd69b472c6f61075d8d33d79a966be",
}
# The same for positive1, readable: (bbox, area) of each 2018 label. Today's plain slic call
# keeps only 9 % of this tile's pixel labels and finds 29 segments.
SKIMAGE_014_POSITIVE1 = [
    ((0, 0, 194, 250), 39644), ((0, 199, 230, 341), 17163), ((0, 259, 201, 499), 34295),
    ((0, 489, 200, 680), 33255), ((0, 673, 211, 840), 30179), ((0, 834, 186, 998), 29337),
    ((157, 350, 370, 547), 34950), ((165, 542, 373, 735), 32619), ((166, 161, 384, 362), 33935),
    ((167, 0, 376, 179), 31838), ((177, 713, 392, 873), 27119), ((177, 853, 371, 998), 24986),
    ((347, 523, 564, 713), 31782), ((359, 0, 581, 200), 34551), ((362, 356, 581, 542), 34610),
    ((364, 832, 559, 998), 28249), ((367, 183, 599, 373), 34886), ((374, 685, 583, 862), 29582),
    ((478, 0, 797, 190), 26614), ((550, 62, 782, 321), 38698), ((551, 833, 765, 998), 31459),
    ((553, 504, 771, 691), 35063), ((555, 310, 769, 512), 38596), ((576, 669, 780, 857), 32870),
    ((736, 0, 975, 155), 29588), ((754, 127, 975, 341), 39976), ((760, 842, 975, 998), 32174),
    ((762, 510, 975, 688), 35800), ((765, 329, 975, 514), 36853), ((775, 680, 975, 852), 32379),
]  # fmt: skip

# Agreement of fast mode (scale 0.25) with the reference on each shared tile: (mean best-match
# IoU, the same weighted by area), measured with best_match_iou under the pinned scikit-image and
# Pillow (benchmarks/segmentation.py prints the mean too). Both modes are deterministic; the
# margin allows for floating-point differences in the Lab conversion and smoothing on another CPU,
# which move a few boundary pixels, and nothing more.
FAST_AGREEMENT = {
    "negative1": (0.976, 0.976),
    "negative2": (0.968, 0.969),
    "positive1": (0.974, 0.974),
    "positive2": (0.968, 0.968),
}
FAST_AGREEMENT_MARGIN = 0.01


def check_partition(image: np.ndarray, seg: Segmentation) -> None:
    """The invariants every segmentation keeps, whatever made it."""
    labels = seg.labels
    n = len(seg.superpixels)
    assert labels.shape == image.shape[:2]
    assert labels.dtype == np.int32
    assert not labels.flags.writeable
    assert n >= 1
    np.testing.assert_array_equal(np.unique(labels), np.arange(n))
    assert sum(sp.area_px for sp in seg.superpixels) == labels.size
    for i, sp in enumerate(seg.superpixels):
        assert sp.index == i
        rows, cols = np.nonzero(labels == i)
        assert sp.area_px == rows.size
        # The box holds every pixel of the label and is tight on all four sides.
        assert sp.bbox == (rows.min(), cols.min(), rows.max() + 1, cols.max() + 1)


small_images = st.tuples(st.integers(4, 40), st.integers(4, 40), st.integers(0, 2**32 - 1)).map(
    lambda hws: _patchy_image(*hws)
)


def _patchy_image(height: int, width: int, seed: int) -> np.ndarray:
    """Random blocks of colour plus noise: structure for SLIC to find, and edge cases."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (rng.integers(1, 5), rng.integers(1, 5), 3))
    rows = np.arange(height) * blocks.shape[0] // height
    cols = np.arange(width) * blocks.shape[1] // width
    image = blocks[rows[:, None], cols[None, :]] + rng.integers(-20, 21, (height, width, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


# --- properties on small random images -------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    image=small_images,
    n_segments=st.integers(1, 40),
    mode=st.sampled_from(["reference", "fast"]),
    fast_scale=st.sampled_from([0.25, 0.5, 1.0]),
)
def test_labels_partition_the_image(
    image: np.ndarray, n_segments: int, mode: str, fast_scale: float
) -> None:
    seg = segment(image, n_segments=n_segments, mode=mode, fast_scale=fast_scale)  # type: ignore[arg-type]
    check_partition(image, seg)
    again = segment(image, n_segments=n_segments, mode=mode, fast_scale=fast_scale)  # type: ignore[arg-type]
    np.testing.assert_array_equal(again.labels, seg.labels)
    assert again.superpixels == seg.superpixels


@settings(max_examples=30, deadline=None)
@given(image=small_images)
def test_constant_images_segment_too(image: np.ndarray) -> None:
    flat = np.broadcast_to(image[:1, :1], image.shape).copy()
    check_partition(flat, segment(flat))


@settings(max_examples=60, deadline=None)
@given(
    labels=arrays(
        np.int64, st.tuples(st.integers(1, 20), st.integers(1, 20)), elements=st.integers(0, 9)
    )
)
def test_from_labels_renumbers_in_value_order(labels: np.ndarray) -> None:
    seg = Segmentation.from_labels(labels * 7 + 3)  # sparse values
    check_partition(labels[..., None].repeat(3, axis=2), seg)
    values = np.unique(labels)
    np.testing.assert_array_equal(values[seg.labels], labels)


def test_from_labels_with_huge_label_values() -> None:
    labels = np.array([[2**40, 5], [5, 2**40]], dtype=np.int64)
    seg = Segmentation.from_labels(labels)
    np.testing.assert_array_equal(seg.labels, [[1, 0], [0, 1]])


@pytest.mark.parametrize(
    "bad", [np.zeros((0, 3), np.int32), np.zeros((2, 2), np.float64), -np.ones((2, 2), np.int32)]
)
def test_from_labels_refuses_bad_label_images(bad: np.ndarray) -> None:
    with pytest.raises(ValueError):
        Segmentation.from_labels(bad)


def test_segmentation_is_immutable() -> None:
    seg = segment(_patchy_image(30, 30, 1))
    with pytest.raises(ValueError):
        seg.labels[0, 0] = 5
    with pytest.raises(AttributeError):
        seg.superpixels = ()  # type: ignore[misc]
    with pytest.raises(ValueError):
        Segmentation(labels=np.zeros((3, 3), np.int64), superpixels=())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("image", "kwargs"),
    [
        (np.zeros((10, 10, 3), np.float64), {}),
        (np.zeros((10, 10), np.uint8), {}),
        (np.zeros((10, 10, 4), np.uint8), {}),
        (np.zeros((0, 10, 3), np.uint8), {}),
        (np.zeros((10, 10, 3), np.uint8), {"mode": "slow"}),
        (np.zeros((10, 10, 3), np.uint8), {"mode": "fast", "fast_scale": 0.0}),
        (np.zeros((10, 10, 3), np.uint8), {"n_segments": 0}),
        (np.zeros((10, 10, 3), np.uint8), {"compactness": 0.0}),
    ],
)
def test_segment_refuses_bad_arguments(image: np.ndarray, kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        segment(image, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["reference", "fast"])
def test_the_segmenter_label_names_the_mode_and_the_2018_parameters(mode: str) -> None:
    # The name superpixel messages carry: it changes only when the parameters do.
    assert segmenter_label(mode) == f"slic-{mode}/n30-c35-s1"


def test_superpixel_mask_and_boundaries() -> None:
    image = _patchy_image(40, 40, 5)
    seg = segment(image, n_segments=9)
    masks = [superpixel_mask(seg, i) for i in range(len(seg.superpixels))]
    np.testing.assert_array_equal(np.sum(masks, axis=0), np.ones((40, 40)))
    with pytest.raises(IndexError):
        superpixel_mask(seg, len(seg.superpixels))
    edges = boundaries(seg)
    assert edges.dtype == np.bool_ and edges.shape == (40, 40)
    # A boundary pixel has a 4-neighbour in another superpixel; other pixels have none.
    padded = np.pad(seg.labels, 1, mode="edge")
    centre = padded[1:-1, 1:-1]
    differs = np.zeros_like(edges)
    for dr, dc in ((0, 1), (2, 1), (1, 0), (1, 2)):
        differs |= padded[dr : dr + 40, dc : dc + 40] != centre
    np.testing.assert_array_equal(edges, differs)


def test_best_match_iou_of_a_segmentation_with_itself_is_one() -> None:
    seg = segment(_patchy_image(30, 40, 2), n_segments=6)
    np.testing.assert_array_equal(best_match_iou(seg, seg), np.ones(len(seg.superpixels)))


def test_best_match_iou_of_halves_against_the_whole() -> None:
    halves = Segmentation.from_labels(np.repeat([[0, 1]], 4, axis=0).repeat(2, axis=1))
    whole = Segmentation.from_labels(np.zeros((4, 4), np.int32))
    np.testing.assert_allclose(best_match_iou(halves, whole), [0.5, 0.5])
    np.testing.assert_allclose(best_match_iou(whole, halves), [0.5])


# --- the real tiles ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiles(shared_data: Path) -> dict[str, np.ndarray]:
    return {name: read_image(shared_data / "tiles" / f"{name}.png") for name in TILES}


@pytest.fixture(scope="module")
def reference(tiles: dict[str, np.ndarray]) -> dict[str, Segmentation]:
    return {name: segment(image) for name, image in tiles.items()}


@pytest.fixture(scope="module")
def fast(tiles: dict[str, np.ndarray]) -> dict[str, Segmentation]:
    return {name: segment(image, mode="fast") for name, image in tiles.items()}


@pytest.mark.parametrize("name", TILES)
def test_reference_is_the_2018_segmentation(
    name: str, tiles: dict[str, np.ndarray], reference: dict[str, Segmentation]
) -> None:
    seg = reference[name]
    check_partition(tiles[name], seg)
    assert 20 <= len(seg.superpixels) <= 40
    digest = hashlib.sha256(seg.labels.astype("<i4").tobytes()).hexdigest()
    assert digest == SKIMAGE_014_LABELS_SHA256[name]


def test_reference_superpixels_of_positive1(reference: dict[str, Segmentation]) -> None:
    got = [(sp.bbox, sp.area_px) for sp in reference["positive1"].superpixels]
    assert got == SKIMAGE_014_POSITIVE1


@pytest.mark.parametrize("name", TILES)
def test_fast_mode_agrees_with_reference(
    name: str,
    tiles: dict[str, np.ndarray],
    reference: dict[str, Segmentation],
    fast: dict[str, Segmentation],
) -> None:
    seg = fast[name]
    check_partition(tiles[name], seg)
    iou = best_match_iou(reference[name], seg)
    areas = np.array([sp.area_px for sp in reference[name].superpixels])
    mean, weighted = FAST_AGREEMENT[name]
    assert iou.mean() >= mean - FAST_AGREEMENT_MARGIN
    assert (iou * areas).sum() / areas.sum() >= weighted - FAST_AGREEMENT_MARGIN
    # Measured: the same number of superpixels as the reference on every shared tile.
    assert abs(len(seg.superpixels) - len(reference[name].superpixels)) <= 1


def test_fast_mode_is_deterministic(
    tiles: dict[str, np.ndarray], fast: dict[str, Segmentation]
) -> None:
    again = segment(tiles["positive2"], mode="fast")
    np.testing.assert_array_equal(again.labels, fast["positive2"].labels)


def test_real_superpixel_masks_round_trip_through_rle(reference: dict[str, Segmentation]) -> None:
    seg = reference["negative2"]
    for sp in seg.superpixels:
        row0, col0, row1, col1 = sp.bbox
        mask = seg.labels[row0:row1, col0:col1] == sp.index
        data = encode_rle(mask)
        np.testing.assert_array_equal(decode_rle(data, mask.shape), mask)
        assert len(data) < mask.size / 20  # far smaller than a bitmap


# --- RLE ------------------------------------------------------------------------------------------------


masks = arrays(
    np.bool_,
    st.tuples(st.integers(0, 40), st.integers(0, 40)),
    elements=st.booleans(),
) | st.tuples(st.integers(1, 300), st.integers(1, 300), st.integers(0, 3)).map(
    # Long runs, so run lengths take several varint bytes.
    lambda spec: np.tri(spec[0], spec[1], k=spec[2] * 50, dtype=bool)
)


@settings(max_examples=200, deadline=None)
@given(mask=masks)
def test_rle_round_trips(mask: np.ndarray) -> None:
    data = encode_rle(mask)
    decoded = decode_rle(data, mask.shape)
    assert decoded.dtype == np.bool_
    np.testing.assert_array_equal(decoded, mask)


@pytest.mark.parametrize(
    ("mask", "data"),
    [
        (np.zeros((2, 3), bool), b"\x06"),
        (np.ones((2, 3), bool), b"\x00\x06"),
        (np.array([[False, True, True]]), b"\x01\x02"),
        (np.ones((1, 300), bool), b"\x00\xac\x02"),  # 300 = 0b10_0101100: two varint bytes
        (np.zeros((0, 5), bool), b""),
    ],
)
def test_rle_format(mask: np.ndarray, data: bytes) -> None:
    assert encode_rle(mask) == data
    np.testing.assert_array_equal(decode_rle(data, mask.shape), mask)


@pytest.mark.parametrize(
    ("data", "shape", "problem"),
    [
        (b"\x05", (2, 3), "cover 5 pixels"),
        (b"\x06\x01", (2, 3), "cover 7 pixels"),
        (b"", (2, 3), "cover 0 pixels"),
        (b"\x80", (2, 3), "cut off"),
        (b"\x00\x86", (2, 3), "cut off"),
        (b"\xff" * 12 + b"\x01", (2, 3), "longer than 9 bytes"),
        (b"\xff\xff\xff\xff\xff\xff\xff\xff\x7f\x01", (2, 3), "cover"),
    ],
)
def test_rle_refuses_malformed_data(data: bytes, shape: tuple[int, int], problem: str) -> None:
    with pytest.raises(InvalidMask, match=f"^mask RLE: .*{problem}"):
        decode_rle(data, shape)
    with pytest.raises(InvalidMask, match=f"^tile 120330211 superpixel 7: .*{problem}"):
        decode_rle(data, shape, "tile 120330211 superpixel 7")


def test_superpixel_is_a_value() -> None:
    assert Superpixel(1, (0, 0, 2, 2), 4) == Superpixel(1, (0, 0, 2, 2), 4)

"""SLIC superpixels of a tile, as the 2018 texty.org.ua pipeline made them, and mask encoding.

The 2018 notebooks called ``slic(img_as_float(img), n_segments=30, compactness=35, sigma=1)``
with scikit-image 0.13/0.14. The same call under scikit-image 0.26 gives other superpixels
(on the shared tiles 9-100 % of pixels keep their label), because slic has changed around its
unchanged k-means core:

1. it now stretches the input to [0, 1] (min-max over all channels) before the Lab conversion;
2. it now smooths with `sigma` after the Lab conversion instead of smoothing the RGB input;
3. its connectivity clean-up now sizes segments by the seeds actually placed on the grid
   instead of by `n_segments`.

`segment(mode="reference")` therefore does the 2018 preprocessing itself (Gaussian on RGB, then
Lab, compiled in `vision/colour.py`, bit for bit) and calls today's slic with Lab input and the
compactness and size factors that undo (1) and (3). On the four shared tiles this reproduces scikit-image 0.13.1 and 0.14.2 label for
label. Today's slic itself runs in `vision/slic.py`: its labels, compiled, in half the time.
`Superpixel.index` is then the 2018 label, the N of the data set's ``*_super_N.png``.
Note that the 2018 code ran ``regionprops`` on these 0-based labels, which skips label 0: the
top-left superpixel of every tile was never classified then. amberscan keeps it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from PIL import Image
from scipy import ndimage as ndi
from skimage.segmentation import find_boundaries

from amberscan.errors import InvalidMask
from amberscan.vision.colour import smoothed_lab
from amberscan.vision.slic import grid_seeds, slic_labels

Mode = Literal["reference", "fast"]

# The 2018 call's parameters: about 30 superpixels a tile, compactness 35, a Gaussian of 1 px.
N_SEGMENTS = 30
COMPACTNESS = 35.0
SIGMA = 1.0

# The 2018 defaults, kept by slic in 0.13/0.14 and restated here because we pass them scaled.
_MIN_SIZE_FACTOR = 0.5
_MAX_SIZE_FACTOR = 3.0


@dataclass(frozen=True)
class Superpixel:
    """One segment of a tile.

    Attributes:
        index: Its label in `Segmentation.labels` and its position in `Segmentation.superpixels`.
        bbox: (row0, col0, row1, col1), half-open: the tight box around its pixels, in the
            order of skimage's ``regionprops(...).bbox`` that the 2018 code cropped with.
        area_px: Number of pixels.
    """

    index: int
    bbox: tuple[int, int, int, int]
    area_px: int


@dataclass(frozen=True, eq=False)
class Segmentation:
    """A tile split into superpixels. Compared by identity (it holds an array).

    Attributes:
        labels: (H, W) int32, read-only; every pixel holds the index of its superpixel, and the
            values are exactly 0..n-1, each present.
        superpixels: The n superpixels, `superpixels[i].index == i`.
    """

    labels: NDArray[np.int32]
    superpixels: tuple[Superpixel, ...]

    def __post_init__(self) -> None:
        if self.labels.ndim != 2 or self.labels.dtype != np.int32:
            raise ValueError(
                f"labels must be a 2-D int32 array, got {self.labels.dtype} {self.labels.shape}"
            )
        if self.labels.flags.writeable:
            view = self.labels.view()
            view.flags.writeable = False
            object.__setattr__(self, "labels", view)

    @classmethod
    def from_labels(cls, labels: NDArray[np.integer]) -> Segmentation:
        """Build a segmentation from any non-negative integer label image.

        Labels are renumbered 0..n-1 in increasing order of their value; absent values are
        dropped. Areas and boxes are measured.

        Args:
            labels: (H, W) non-negative integers, e.g. slic's output or a label PNG read back.

        Returns:
            The segmentation, with a fresh int32 label array.

        Raises:
            ValueError: `labels` is not 2-D, not integer, empty, or has negative values.
        """
        labels = np.asarray(labels)
        if labels.ndim != 2 or labels.size == 0 or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(
                f"labels must be a non-empty 2-D integer array, got {labels.dtype} {labels.shape}"
            )
        if labels.min() < 0:
            raise ValueError("labels must be non-negative")
        if int(labels.max()) > labels.size:
            # Sparse label values: sort instead of a lookup table as long as the largest value.
            labels = np.unique(labels, return_inverse=True)[1].reshape(labels.shape)
        counts = np.bincount(labels.ravel())
        present = counts > 0
        # Renumber through a lookup table: O(pixels), unlike np.unique's sort.
        lookup = (np.cumsum(present) - 1).astype(np.int32)
        dense = lookup[labels]
        areas = counts[present]
        # find_objects treats 0 as background, hence the shift by one.
        boxes = ndi.find_objects(dense + 1)
        superpixels = tuple(
            Superpixel(
                index=i,
                bbox=(int(rows.start), int(cols.start), int(rows.stop), int(cols.stop)),
                area_px=int(area),
            )
            for i, ((rows, cols), area) in enumerate(zip(boxes, areas, strict=True))
        )
        return cls(labels=dense, superpixels=superpixels)


def segment(
    image: NDArray[np.uint8],
    *,
    n_segments: int = N_SEGMENTS,
    compactness: float = COMPACTNESS,
    sigma: float = SIGMA,
    mode: Mode = "reference",
    fast_scale: float = 0.25,
) -> Segmentation:
    """Split a tile into SLIC superpixels.

    Deterministic: the same image and arguments give the same labels.

    Args:
        image: (H, W, 3) uint8 RGB.
        n_segments: Approximate number of superpixels (2018: 30).
        compactness: Weight of space against colour (2018: 35).
        sigma: Gaussian smoothing in pixels before clustering (2018: 1).
        mode: "reference" is the 2018 segmentation (see the module docstring). "fast" runs the
            same on the tile shrunk by `fast_scale` (area averaging, `sigma` scaled too) and
            enlarges the labels back with nearest neighbour; on the shared tiles it is about
            ten times faster and its superpixels match the reference ones with a mean IoU near
            0.97 (benchmarks/segmentation.py), with boundaries on a 1/`fast_scale` px staircase.
        fast_scale: Shrink factor of "fast" mode, in (0, 1].

    Returns:
        The segmentation; labels are numbered in raster order of the superpixels' first pixel.

    Raises:
        ValueError: The image is not (H, W, 3) uint8, or an argument is out of range.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"segment needs an (H, W, 3) uint8 image, got {image.dtype} {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"segment needs a non-empty image, got {image.shape}")
    if n_segments < 1 or compactness <= 0 or sigma < 0:
        raise ValueError(
            f"need n_segments >= 1, compactness > 0, sigma >= 0; "
            f"got {n_segments}, {compactness}, {sigma}"
        )
    if mode == "reference":
        return Segmentation.from_labels(_slic_2018(image, n_segments, compactness, sigma))
    if mode == "fast":
        if not 0 < fast_scale <= 1:
            raise ValueError(f"fast_scale must be in (0, 1], got {fast_scale}")
        height, width = image.shape[:2]
        size = (max(1, round(width * fast_scale)), max(1, round(height * fast_scale)))
        # BOX is an area mean: the anti-aliasing a shrink needs, at a fraction of a Gaussian's cost.
        small = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BOX))
        coarse = _slic_2018(small, n_segments, compactness, sigma * fast_scale)
        return Segmentation.from_labels(_enlarge_nearest(coarse, height, width))
    raise ValueError(f"unknown segmentation mode {mode!r}: expected 'reference' or 'fast'")


def segmenter_label(mode: str) -> str:
    """The segmentation's name in superpixel messages: `mode` and the SLIC parameters, such as
    ``slic-reference/n30-c35-s1``."""
    return f"slic-{mode}/n{N_SEGMENTS}-c{COMPACTNESS:g}-s{SIGMA:g}"


def superpixel_mask(segmentation: Segmentation, index: int) -> NDArray[np.bool_]:
    """The pixels of one superpixel.

    Args:
        segmentation: The tile's segmentation.
        index: Which superpixel.

    Returns:
        (H, W) bool, True on the superpixel.

    Raises:
        IndexError: `index` is not a superpixel of `segmentation`.
    """
    if not 0 <= index < len(segmentation.superpixels):
        raise IndexError(f"superpixel {index} of {len(segmentation.superpixels)}")
    mask: NDArray[np.bool_] = segmentation.labels == index
    return mask


def boundaries(segmentation: Segmentation) -> NDArray[np.bool_]:
    """Pixels on the edge of their superpixel (next to another one), for drawing outlines.

    Args:
        segmentation: The tile's segmentation.

    Returns:
        (H, W) bool: the pixels with a 4-neighbour in another superpixel, a 1-px line inside
        each superpixel (skimage's ``find_boundaries(mode="inner")``).
    """
    # background=-1: label 0 is a superpixel like any other, not background to leave out.
    edges: NDArray[np.bool_] = find_boundaries(  # type: ignore[no-untyped-call]
        segmentation.labels, mode="inner", background=-1
    )
    return edges


def best_match_iou(reference: Segmentation, other: Segmentation) -> NDArray[np.float64]:
    """For each reference superpixel, the IoU of the `other` superpixel that overlaps it best.

    Args:
        reference: The segmentation to score against.
        other: A segmentation of the same image.

    Returns:
        (n_reference,) float64 in [0, 1]. Its mean is the agreement of the two; weighting by
        area gives the pixel-weighted agreement.

    Raises:
        ValueError: The two label images differ in shape.
    """
    a, b = reference.labels, other.labels
    if a.shape != b.shape:
        raise ValueError(f"segmentations of different shapes: {a.shape} and {b.shape}")
    na, nb = len(reference.superpixels), len(other.superpixels)
    pairs = a.astype(np.int64).ravel() * nb + b.ravel()
    overlap = np.bincount(pairs, minlength=na * nb).reshape(na, nb)
    union = overlap.sum(axis=1)[:, None] + overlap.sum(axis=0)[None, :] - overlap
    best: NDArray[np.float64] = (overlap / union).max(axis=1)
    return best


def encode_rle(mask: NDArray[np.bool_]) -> bytes:
    """Run-length encode a 2-D mask compactly, for carrying it in a message.

    The mask is flattened in C order and cut into runs that alternate False, True, False, ...;
    the first run is of False and has length 0 when the mask starts with True. Each run length
    is written as an unsigned LEB128 varint (protobuf's encoding). The shape is not included:
    the message carries it (the superpixel's bbox).

    Args:
        mask: 2-D bool array (any array whose nonzero entries are True).

    Returns:
        The encoded runs; empty for an empty mask.
    """
    flat = np.asarray(mask, dtype=bool).ravel()
    if flat.size == 0:
        return b""
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    edges = np.concatenate(([0], changes, [flat.size]))
    runs = np.diff(edges).astype(np.uint64)
    if flat[0]:
        runs = np.concatenate((np.zeros(1, dtype=np.uint64), runs))
    return _uvarints(runs)


def decode_rle(data: bytes, shape: tuple[int, int], source: str = "mask RLE") -> NDArray[np.bool_]:
    """Decode what `encode_rle` made back into a mask of the given shape.

    Args:
        data: The encoded runs.
        shape: (rows, cols) of the mask.
        source: What the mask is ("tile 120330211 superpixel 7"); it starts every error message.

    Returns:
        The (rows, cols) bool mask.

    Raises:
        InvalidMask: The data is malformed or its runs do not cover exactly rows * cols
            pixels: a message carrying it can never be processed.
        ValueError: `shape` is not two non-negative integers.
    """
    if len(shape) != 2 or min(shape) < 0:
        raise ValueError(f"shape must be (rows, cols), got {shape}")
    total = int(shape[0]) * int(shape[1])
    runs = _read_uvarints(data, source)
    # Bound each run first: their sum then cannot wrap around 64 bits.
    if (runs > total).any() or int(runs.sum()) != total:
        covered = sum(int(run) for run in runs)
        raise InvalidMask(
            f"{source}: runs cover {covered} pixels, a {shape[0]}x{shape[1]} mask has {total}"
        )
    values = np.arange(runs.size) % 2 == 1
    mask: NDArray[np.bool_] = np.repeat(values, runs.astype(np.intp)).reshape(shape)
    return mask


def slic_2018_input(
    image: NDArray[np.uint8],
    n_segments: int = N_SEGMENTS,
    compactness: float = COMPACTNESS,
    sigma: float = SIGMA,
) -> tuple[NDArray[np.float64], dict[str, Any]]:
    """What today's slic is given to make the 2018 segmentation of `image`: the Lab image and
    the keyword arguments of `slic_labels` (which scikit-image's ``slic`` takes too)."""
    # rgb2lab(gaussian_filter(img_as_float(image), (sigma, sigma, 0))), every bit, faster.
    lab = smoothed_lab(image, sigma)
    # Today's slic divides its input by (max - min); dividing compactness too cancels it, since
    # colour distances are scaled by 1 / compactness.
    spread = float(lab.max() - lab.min())
    effective = compactness / spread if spread > 0 else compactness
    # Today's slic sizes segments by the seeds on the grid, 0.14 by n_segments.
    seeds = grid_seeds(image.shape[0], image.shape[1], n_segments)
    return lab, {
        "n_segments": n_segments,
        "compactness": effective,
        "min_size_factor": _MIN_SIZE_FACTOR * seeds / n_segments,
        "max_size_factor": _MAX_SIZE_FACTOR * seeds / n_segments,
    }


def _slic_2018(
    image: NDArray[np.uint8], n_segments: int, compactness: float, sigma: float
) -> NDArray[np.intp]:
    """scikit-image 0.14's ``slic(img_as_float(image), n_segments, compactness, sigma)``."""
    lab, arguments = slic_2018_input(image, n_segments, compactness, sigma)
    # Today's slic (vision/slic.py runs it, label for label, twice as fast).
    return slic_labels(lab, **arguments)


def _enlarge_nearest(labels: NDArray[np.intp], height: int, width: int) -> NDArray[np.intp]:
    """Labels resized to (height, width) by nearest neighbour, pixel centre to pixel centre."""
    rows = ((np.arange(height) + 0.5) * labels.shape[0] / height).astype(np.intp)
    cols = ((np.arange(width) + 0.5) * labels.shape[1] / width).astype(np.intp)
    enlarged: NDArray[np.intp] = labels[rows[:, None], cols[None, :]]
    return enlarged


def _uvarints(values: NDArray[np.uint64]) -> bytes:
    """Unsigned LEB128 of each value, concatenated; vectorised over the values."""
    if values.size == 0:
        return b""
    # One byte per started group of 7 bits; counted with integer comparisons, exact to 2**63.
    thresholds = np.uint64(1) << (np.arange(1, 10, dtype=np.uint64) * np.uint64(7))
    lengths = 1 + (values[:, None] >= thresholds[None, :]).sum(axis=1)
    width = int(lengths.max())
    shifts = np.arange(width, dtype=np.uint64) * np.uint64(7)
    groups = (values[:, None] >> shifts[None, :]) & np.uint64(0x7F)
    position = np.arange(width)[None, :]
    more = position < (lengths[:, None] - 1)
    encoded = (groups | (more.astype(np.uint64) << np.uint64(7))).astype(np.uint8)
    return bytes(encoded[position < lengths[:, None]].tobytes())


def _read_uvarints(data: bytes, source: str) -> NDArray[np.uint64]:
    raw = np.frombuffer(data, dtype=np.uint8)
    if raw.size == 0:
        return np.zeros(0, dtype=np.uint64)
    last = (raw & 0x80) == 0
    if not last[-1]:
        raise InvalidMask(f"{source}: the last run length is cut off")
    ends = np.flatnonzero(last)
    starts = np.concatenate(([0], ends[:-1] + 1))
    if (ends - starts).max() >= 9:
        # 9 groups of 7 bits exceed any mask size and would overflow 64 bits.
        raise InvalidMask(f"{source}: a run length is longer than 9 bytes")
    position = np.arange(raw.size) - np.repeat(starts, ends - starts + 1)
    parts = (raw & 0x7F).astype(np.uint64) << (position.astype(np.uint64) * np.uint64(7))
    values: NDArray[np.uint64] = np.add.reduceat(parts, starts)
    return values

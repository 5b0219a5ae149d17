"""Segmenter core: a tile image → its SLIC superpixels and their messages. Pure.

A superpixel message names its tile's blob and its box and mask in it: the feature stage cuts the
crop from the tile itself, so no crop is encoded, stored or fetched on the way.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from amberscan.v1 import messages_pb2 as pb
from amberscan.vision.segment import N_SEGMENTS, Segmentation, encode_rle, segment


def segment_tile(
    image: NDArray[np.uint8], *, mode: str = "reference", n_segments: int = N_SEGMENTS
) -> Segmentation:
    """The SLIC superpixels of `image` (the 2018 call, in `mode`)."""
    return segment(image, n_segments=n_segments, mode=mode)  # type: ignore[arg-type]


def superpixel_messages(
    tile: pb.Tile,
    segmentation: Segmentation,
    labels_key: str,
    segmenter: str,
) -> list[pb.Superpixel]:
    """One message per superpixel, carrying everything later stages need to find it again."""
    count = len(segmentation.superpixels)
    messages = []
    for sp in segmentation.superpixels:
        row0, col0, row1, col1 = sp.bbox
        mask = segmentation.labels[row0:row1, col0:col1] == sp.index
        ref = pb.SuperpixelRef(
            tile_id=tile.tile_id,
            scan_id=tile.scan_id,
            tile=tile.tile,
            provider=tile.provider,
            imagery_date=tile.imagery_date,
            image_key=tile.image_key,
            image_width=segmentation.labels.shape[1],
            image_height=segmentation.labels.shape[0],
            segment_index=sp.index,
            segment_count=count,
            bbox=pb.PixelBox(row0=row0, col0=col0, row1=row1, col1=col1),
            area_px=sp.area_px,
            mask_rle=encode_rle(mask),
            demo=tile.demo,
            tiles_expected=tile.tiles_expected,
            labels_key=labels_key,
            models=tile.models,
        )
        messages.append(pb.Superpixel(ref=ref, segmenter=segmenter))
    return messages

"""Feature core: the crop of a superpixel cut from its tile, what it is called, and which
backbone version it is sent to. Pure: arrays and protobuf values in and out.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from amberscan.errors import PoisonMessage
from amberscan.v1 import messages_pb2 as pb
from amberscan.vision.crops import crop_superpixel


def superpixel_name(ref: pb.SuperpixelRef) -> str:
    """How every message about a superpixel names it: its index, its tile and the tile's blob."""
    return f"superpixel {ref.segment_index} of tile {ref.tile_id} ({ref.image_key})"


def cut_crop(image: NDArray[np.uint8], ref: pb.SuperpixelRef, size: int) -> NDArray[np.uint8]:
    """The superpixel's crop, as the segmenter's bbox names it in the tile it segmented, cut at
    `size` px (the served model's crop size).

    Raises:
        PoisonMessage: the tile is not the size the superpixel was cut from, or the box is off it.
    """
    height, width = image.shape[:2]
    if (ref.image_height, ref.image_width) != (height, width):
        raise PoisonMessage(
            f"{superpixel_name(ref)}: tile is {width}x{height}, the superpixel was cut from "
            f"{ref.image_width}x{ref.image_height}"
        )
    box = ref.bbox
    try:
        return crop_superpixel(image, (box.row0, box.col0, box.row1, box.col1), size)
    except ValueError as error:
        raise PoisonMessage(f"{superpixel_name(ref)}: {error}") from None


def backbone_version(label: str, model_name: str) -> int | None:
    """N of a backbone label `name/N` (as `ServedBackbone.label` writes it) naming `model_name`,
    else None."""
    name, _, version = label.rpartition("/")
    return int(version) if name == model_name and version.isdigit() else None


def requested_version(ref: pb.SuperpixelRef, model_name: str) -> int | None:
    """The backbone version the tile was stamped for (`name/N` in `ref.models.backbone`), or None
    when it names none or another model (the newest served version then)."""
    return backbone_version(ref.models.backbone, model_name)


def features_message(
    ref: pb.SuperpixelRef, vector: NDArray[np.float32], backbone: str
) -> pb.SuperpixelFeatures:
    """The features message of the superpixel `ref`: its vector, labelled (and its ref stamped)
    with the `backbone` (`name/version`) that computed it."""
    out_ref = pb.SuperpixelRef()
    out_ref.CopyFrom(ref)
    out_ref.models.backbone = backbone
    return pb.SuperpixelFeatures(ref=out_ref, vector=vector.tolist(), backbone=backbone)

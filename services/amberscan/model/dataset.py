"""Labelled superpixel crops on disk: `DIR/positive/*.png` and `DIR/negative/*.png`.

File names follow the texty data set, `LAT_LON_DD_Mon_YYYY_GMT_super_N.png`; the tile id is
everything before `_super_`, and crops of one tile must never straddle train and test.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from amberscan.errors import AmberscanError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# A crop of the texty data set: the tile's centre (WGS84 degrees), its capture date, the segment.
CROP_NAME = re.compile(
    r"(?P<tile>-?\d+(?:\.\d+)?_-?\d+(?:\.\d+)?_\d{1,2}_[A-Z][a-z]{2}_\d{4}_GMT)"
    r"_super_(?P<segment>\d+)"
)


class DatasetError(AmberscanError):
    """A labelled-data folder that is missing or malformed."""


@dataclass(frozen=True)
class LabelledCrop:
    path: Path
    label: int  # 1 = mining
    tile_id: str


def tile_id_of(name: str) -> str:
    """The tile id of a crop file name (the part before `_super_`, or the stem without it)."""
    stem = Path(name).stem
    return stem.split("_super_", 1)[0]


def parse_crop_name(name: str) -> str:
    """The tile id of a crop file named as the texty data set names them, strictly.

    Raises:
        DatasetError: the name is not `LAT_LON_DD_Mon_YYYY_GMT_super_N` with an image suffix.
    """
    path = Path(name)
    match = CROP_NAME.fullmatch(path.stem)
    if match is None or path.suffix.lower() not in IMAGE_SUFFIXES:
        raise DatasetError(
            f"{name}: not a crop name of the data set (LAT_LON_DD_Mon_YYYY_GMT_super_N.png)"
        )
    return match["tile"]


def list_labelled(data_dir: Path) -> list[LabelledCrop]:
    """Every crop under `data_dir/positive` and `data_dir/negative`, sorted by path.

    Raises:
        DatasetError: if either folder is missing or holds no images.
    """
    crops: list[LabelledCrop] = []
    for folder, label in (("positive", 1), ("negative", 0)):
        directory = data_dir / folder
        if not directory.is_dir():
            raise DatasetError(
                f"{data_dir}: no {folder}/ folder (expected positive/ and negative/)"
            )
        found = sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise DatasetError(f"{directory}: no images ({', '.join(IMAGE_SUFFIXES)})")
        crops += [LabelledCrop(p, label, tile_id_of(p.name)) for p in found]
    return crops


def fingerprint(crops: list[LabelledCrop]) -> str:
    """A sha256 over the labels and bytes of the crops: names the training data exactly."""
    digest = hashlib.sha256()
    for crop in sorted(crops, key=lambda c: (c.label, c.path.name)):
        digest.update(f"{crop.label}:{crop.path.name}:".encode())
        digest.update(hashlib.sha256(crop.path.read_bytes()).digest())
    return digest.hexdigest()

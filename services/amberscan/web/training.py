"""Reviewed superpixels → labelled crops on disk, for `amberscan train --from-reviews`.

The labels, with their provenance (`PROVENANCE`, one JSON line per crop: source, reviewer, when,
model): every superpixel a person labelled (tile debugger relabel, labelling page, a rejection
that marked them), and the positive superpixels of every reviewed tile (those of the detection
the verdict was made on): a rejected tile's are not mining (hard negatives), a confirmed tile's
mining (`core.labels_from_verdict`); a person's label of a superpixel overrides its tile's
verdict. Each is cropped from its tile image as its bounding box, unresized (as the 2018 crop
files are: `load_crop` then cuts it at whatever size the served model takes, the same pixels as
cutting it from the tile), and written to `DIR/positive/` or `DIR/negative/`, named `<tile_id>-<imagery_date>_super_<index>.png`
so `model.dataset.tile_id_of` groups crops of one tile into one cross-validation fold.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from amberscan.common.blobstore import BlobStore
from amberscan.common.db import Database
from amberscan.common.settings import WebSettings
from amberscan.model.dataset import LabelledCrop
from amberscan.vision.imageio import decode_image, encode_png
from amberscan.vision.labels import decode_labels
from amberscan.vision.segment import Segmentation
from amberscan.web.core import labels_from_verdict
from amberscan.web.review_queries import (
    ReviewedSuperpixel,
    reviewed_superpixels,
    reviewed_tiles,
)

_UNSAFE = re.compile(r"[^A-Za-z0-9.-]+")
PROVENANCE = "provenance.jsonl"


def review_labels(
    relabelled: list[ReviewedSuperpixel], verdicts: list[dict[str, Any]]
) -> list[ReviewedSuperpixel]:
    """Every superpixel's training label: derived from its tile's verdict, overridden by a
    person's own label of it (one per labels image and segment)."""
    chosen: dict[tuple[str, int], ReviewedSuperpixel] = {}
    for v in verdicts:
        derived = labels_from_verdict(v["verdict"], v["scores"] or [], int(v["positives"]))
        at = v["reviewed_at"].isoformat() if v["reviewed_at"] else ""
        for index, label in derived.items():
            chosen[(v["labels_key"], index)] = ReviewedSuperpixel(
                v["tile_id"], v["imagery_date"], v["image_key"], v["labels_key"], index, label,
                v["verdict"], v["reviewer"], at, v["model_version"],
            )  # fmt: skip
    for item in relabelled:
        chosen[(item.labels_key, item.segment_index)] = item
    return [chosen[k] for k in sorted(chosen)]


@dataclass(frozen=True)
class ReviewedCrop(LabelledCrop):
    """A crop written from a review, with its label's provenance."""

    source: str = "relabelled"  # or "confirmed", "rejected": derived from the tile's verdict
    reviewer: str = ""
    at: str = ""
    model_version: str = ""


def crop_name(item: ReviewedSuperpixel) -> str:
    """File name of a reviewed crop; the part before `_super_` is its tile id."""
    tile = _UNSAFE.sub("-", f"{item.tile_id}-{item.imagery_date or 'undated'}")
    return f"{tile}_super_{item.segment_index}.png"


async def export_reviewed_crops(
    db: Database, store: BlobStore, out_dir: Path
) -> list[LabelledCrop]:
    """Write the crop of every reviewed superpixel under `out_dir/{positive,negative}/`.

    Args:
        db: Where the labels are.
        store: Where the tile images and label images are.
        out_dir: Folder to write into (created).

    Returns:
        The crops written, as the training command lists labelled data.
    """
    items = review_labels(await reviewed_superpixels(db), await reviewed_tiles(db))
    for folder in ("positive", "negative"):
        (out_dir / folder).mkdir(parents=True, exist_ok=True)
    written: list[LabelledCrop] = []
    by_tile: dict[tuple[str, str], list[ReviewedSuperpixel]] = {}
    for item in items:
        by_tile.setdefault((item.image_key, item.labels_key), []).append(item)
    for (image_key, labels_key), group in by_tile.items():
        image_bytes, label_bytes = await asyncio.gather(store.get(image_key), store.get(labels_key))
        written += await asyncio.to_thread(
            _write_crops, image_bytes, label_bytes, image_key, group, out_dir
        )
    return written


def provenance(crops: list[LabelledCrop]) -> dict[str, int]:
    """How many reviewed crops came from each source (relabelled, confirmed, rejected)."""
    counts: dict[str, int] = {}
    for crop in crops:
        source = getattr(crop, "source", "relabelled")
        counts[source] = counts.get(source, 0) + 1
    return dict(sorted(counts.items()))


def _write_crops(
    image_bytes: bytes,
    label_bytes: bytes,
    image_key: str,
    group: list[ReviewedSuperpixel],
    out_dir: Path,
) -> list[LabelledCrop]:
    """Crop the labelled superpixels of one tile and write them as PNGs."""
    image = decode_image(image_bytes, image_key)
    segmentation = Segmentation.from_labels(decode_labels(label_bytes))
    out: list[LabelledCrop] = []
    lines = []
    for item in group:
        if item.segment_index >= len(segmentation.superpixels):
            continue  # a label of a segment the label image does not have
        row0, col0, row1, col1 = segmentation.superpixels[item.segment_index].bbox
        crop = image[row0:row1, col0:col1]
        folder = "positive" if item.label == 1 else "negative"
        path = out_dir / folder / crop_name(item)
        path.write_bytes(encode_png(np.ascontiguousarray(crop)))
        tile_id = path.stem.split("_super_", 1)[0]
        out.append(
            ReviewedCrop(
                path, item.label, tile_id, item.source, item.reviewer, item.at, item.model_version
            )
        )
        lines.append(json.dumps({"file": f"{folder}/{path.name}", **asdict(item)}) + "\n")
    with (out_dir / PROVENANCE).open("a", encoding="utf-8") as log:
        log.writelines(lines)
    return out


async def reviewed_crops(settings: WebSettings, out_dir: Path) -> list[LabelledCrop]:
    """`export_reviewed_crops` with the database and blob store the settings name."""
    async with Database(settings.database) as db:
        return await export_reviewed_crops(db, BlobStore(settings.s3), out_dir)

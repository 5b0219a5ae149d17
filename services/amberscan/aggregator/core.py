"""Aggregator core: join a tile's superpixel scores, apply the rule, measure the damage. Pure.

`TileJoin` holds the scores of tiles not yet complete, remembers where each one started in its
partition, and says how far offsets may be committed: never past the first score of a tile
still open, so a restart re-reads every tile it had not finished.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
from shapely import geometry as sg
from shapely.ops import unary_union

from amberscan.geo.tiles import Tile, pixel_area_m2, pixel_to_lonlat
from amberscan.v1 import messages_pb2 as pb
from amberscan.vision.segment import decode_rle

TileKey = tuple[str, str, str]  # (tile id, scan id, classifier version)


def tile_key(score: pb.SuperpixelScore) -> TileKey:
    return (score.ref.tile_id, score.ref.scan_id, score.models.classifier)


@dataclass
class OpenTile:
    count: int
    scores: dict[int, pb.SuperpixelScore] = field(default_factory=dict)
    first: dict[int, int] = field(default_factory=dict)  # partition → first offset seen
    updated: float = 0.0


class TileJoin:
    """Collects scores per tile until all `segment_count` of them are in."""

    def __init__(self, min_positives: int, max_open: int, stale_s: float) -> None:
        self.min_positives = min_positives
        self.max_open = max_open
        self.stale_s = stale_s
        self.open: dict[TileKey, OpenTile] = {}
        self.dropped = 0

    def add(
        self, score: pb.SuperpixelScore, partition: int, offset: int, now: float
    ) -> pb.Detection | None:
        """Add one score; the tile's detection once its last score arrived, else None."""
        key = tile_key(score)
        entry = self.open.get(key)
        if entry is None:
            entry = self.open[key] = OpenTile(count=score.ref.segment_count)
        entry.first.setdefault(partition, offset)
        entry.scores[score.ref.segment_index] = score  # a redelivered score replaces itself
        entry.updated = now
        if len(entry.scores) >= entry.count:
            del self.open[key]
            return build_detection(
                [entry.scores[i] for i in sorted(entry.scores)], self.min_positives
            )
        if len(self.open) > self.max_open:
            self._drop(min(self.open, key=lambda k: self.open[k].updated))
        return None

    def safe_offset(self, partition: int, next_offset: int) -> int:
        """The offset that may be committed on `partition`: before any open tile's first score."""
        firsts = [e.first[partition] for e in self.open.values() if partition in e.first]
        return min([next_offset, *firsts])

    def evict_stale(self, now: float) -> list[TileKey]:
        """Drop tiles that waited longer than `stale_s` for a missing score (it was dead-lettered
        upstream, so they can never complete); they must not hold commits back forever."""
        stale = [k for k, e in self.open.items() if now - e.updated > self.stale_s]
        for key in stale:
            self._drop(key)
        return stale

    def drop_partitions(self, partitions: set[int]) -> None:
        """Forget tiles read from partitions this instance no longer owns."""
        for key in [k for k, e in self.open.items() if set(e.first) & partitions]:
            del self.open[key]

    def _drop(self, key: TileKey) -> None:
        del self.open[key]
        self.dropped += 1


def mask_polygon(mask: np.ndarray, row0: int, col0: int) -> sg.base.BaseGeometry:
    """Outline of a boolean mask in tile pixel-corner coordinates (x=col, y=row).

    Exact: the union of the mask's horizontal pixel runs, so the polygon's area is the pixel
    count the hectares come from; then staircase vertices are thinned (area changes < 1 px per
    edge), which keeps the GeoJSON small.
    """
    boxes = []
    for r, row in enumerate(np.asarray(mask, dtype=bool)):
        edges = np.flatnonzero(np.diff(np.concatenate(([0], row.view(np.int8), [0]))))
        for start, stop in zip(edges[::2], edges[1::2], strict=True):
            boxes.append(sg.box(col0 + start, row0 + r, col0 + stop, row0 + r + 1))
    if not boxes:
        return sg.Polygon()
    return unary_union(boxes).simplify(0.5, preserve_topology=True)


def build_detection(scores: list[pb.SuperpixelScore], min_positives: int) -> pb.Detection:
    """The verdict on one tile from all its scores: the rule, the area, the polygons."""
    first = scores[0]
    ref = first.ref
    tile = Tile(ref.tile.x, ref.tile.y, ref.tile.z)
    width, height = ref.image_width, ref.image_height
    positive = [s for s in scores if s.positive]
    flagged = len(positive) > min_positives
    # Damage is reported where the tile rule fires: a stray positive superpixel or two on an
    # unflagged tile is not counted as damaged land (the scores keep them for review).
    damaged = positive if flagged else []
    area_m2 = sum(s.ref.area_px for s in damaged) * pixel_area_m2(tile, width)
    shapes = []
    for s in damaged:
        box = s.ref.bbox
        mask = decode_rle(s.ref.mask_rle, (box.row1 - box.row0, box.col1 - box.col0))
        shapes.append(mask_polygon(mask, box.row0, box.col0))
    positives_geojson = ""
    if shapes:
        merged = unary_union(shapes)
        polygons = [
            g
            for g in getattr(merged, "geoms", [merged])
            if isinstance(g, sg.Polygon) and not g.is_empty
        ]
        lonlat = [
            [
                [list(pixel_to_lonlat(tile, width, height, x, y)) for x, y in p.exterior.coords],
                *[
                    [list(pixel_to_lonlat(tile, width, height, x, y)) for x, y in hole.coords]
                    for hole in p.interiors
                ],
            ]
            for p in polygons
        ]
        positives_geojson = json.dumps({"type": "MultiPolygon", "coordinates": lonlat})
    return pb.Detection(
        tile_id=ref.tile_id,
        scan_id=ref.scan_id,
        tile=ref.tile,
        provider=ref.provider,
        imagery_date=ref.imagery_date,
        flagged=flagged,
        positives=len(positive),
        segment_count=ref.segment_count,
        min_positives=min_positives,
        hectares=area_m2 / 10_000,
        tile_geojson=json.dumps(tile.polygon()),
        positives_geojson=positives_geojson,
        scores=[s.score for s in scores],
        models=first.models,
        demo=ref.demo,
        image_key=ref.image_key,
        tiles_expected=ref.tiles_expected,
        labels_key=ref.labels_key,
    )

"""Aggregator core: join a tile's superpixel scores, apply the rule, measure the damage. Pure.

`TileJoin` holds the scores of tiles not yet complete, remembers where each one started in its
partition, and says how far offsets may be committed: never past the first score of a tile
still open, so a restart re-reads every tile it had not finished. A failed publish is handled
as a restart of the partition (the runner forgets it and reads it again from its last commit).

A tile that can never complete (a superpixel of it was dead-lettered upstream) must not hold
commits back forever, nor vanish: it is dropped with a reason once it has waited `stale_s` of
its partition's *activity*, or when more than `max_open` tiles are open, and the runner turns
each drop into a dead letter so the tile ends as failed. Time during which a partition receives
nothing (the model server down, every stage paused) does not count as waiting, so the tiles such
an outage held up complete when the stream resumes. Scores of a tile already finished (a partial
redelivery) or already dropped (late scores) are ignored, so they cannot open an entry that would
hold the partition's commits back.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
from shapely import geometry as sg
from shapely.ops import unary_union

from amberscan.geo.tiles import Tile, pixel_area_m2, pixel_to_lonlat
from amberscan.v1 import messages_pb2 as pb
from amberscan.vision.segment import decode_rle

# (tile id, scan id, classifier version, imagery date): a replay's scan holds every vintage of a
# tile, so the date keeps them apart.
TileKey = tuple[str, str, str, str]

# A gap between two records of a partition counts as at most this much waiting (or a quarter of
# the stale limit, when that is shorter): a pause of the whole stream (an outage upstream) does
# not make the tiles it held up stale.
ACTIVE_GAP_S = 5.0


def tile_key(score: pb.SuperpixelScore) -> TileKey:
    return (
        score.ref.tile_id,
        score.ref.scan_id,
        score.models.classifier,
        score.ref.imagery_date,
    )


@dataclass
class OpenTile:
    count: int
    scores: dict[int, pb.SuperpixelScore] = field(default_factory=dict)
    first: dict[int, int] = field(default_factory=dict)  # partition → first offset seen
    updated: float = 0.0  # the partition's activity clock at the tile's last score


@dataclass(frozen=True)
class DroppedTile:
    """A tile given up on, and why: the runner dead-letters it so the sink marks it failed."""

    key: TileKey
    reason: str
    cause: str  # "stale" or "overflow" (the metric's label)
    partition: int
    offset: int  # its first score's offset on that partition
    received: int
    expected: int

    @property
    def tile_id(self) -> str:
        return self.key[0]

    @property
    def scan_id(self) -> str:
        return self.key[1]


@dataclass
class Added:
    """What one score did: the tile's detection when it completed it, the tiles dropped
    meanwhile, and whether the score was ignored (its tile already finished or dropped)."""

    detection: pb.Detection | None = None
    dropped: list[DroppedTile] = field(default_factory=list)
    ignored: str = ""  # "", "finished" or "dropped"


class _Recent:
    """A bounded set of keys, forgetting the oldest first."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._keys: OrderedDict[TileKey, None] = OrderedDict()

    def add(self, key: TileKey) -> None:
        self._keys[key] = None
        self._keys.move_to_end(key)
        while len(self._keys) > self.size:
            self._keys.popitem(last=False)

    def __contains__(self, key: object) -> bool:
        return key in self._keys


class TileJoin:
    """Collects scores per tile until all `segment_count` of them are in."""

    def __init__(self, min_positives: int, max_open: int, stale_s: float) -> None:
        self.min_positives = min_positives
        self.max_open = max_open
        self.stale_s = stale_s
        self.open: dict[TileKey, OpenTile] = {}
        self.dropped = 0
        # Tiles whose detection or dead letter went out, to ignore their later scores. A key
        # is pending (partition, offset of the record it went out with, which memory) until the
        # runner says that record's outputs were acknowledged; if they are not (a failed
        # publish), the runner forgets the partition (`drop_partitions`) and reads it again
        # from its last commit, so the tile is joined again from its first score.
        self.finished = _Recent(max_open)
        self.given_up = _Recent(max_open)
        self._pending: dict[TileKey, tuple[int, int, _Recent]] = {}
        # Per partition: the activity clock (waiting time that counts) and the wall time of its
        # last record.
        self._clock: dict[int, float] = {}
        self._seen: dict[int, float] = {}

    def add(self, score: pb.SuperpixelScore, partition: int, offset: int, now: float) -> Added:
        """Add one score read at `offset` of `partition` at monotonic time `now`."""
        clock = self._tick(partition, now)
        result = Added(dropped=self._evict_stale(partition, offset, clock))
        key = tile_key(score)
        memory = self._pending[key][2] if key in self._pending else None
        if key in self.finished or memory is self.finished:
            result.ignored = "finished"  # a redelivered part of a tile already out
            return result
        if key in self.given_up or memory is self.given_up:
            result.ignored = "dropped"  # a late score of a tile already failed
            return result
        entry = self.open.get(key)
        if entry is None:
            entry = self.open[key] = OpenTile(count=score.ref.segment_count)
        entry.first.setdefault(partition, offset)
        entry.scores[score.ref.segment_index] = score  # a redelivered score replaces itself
        entry.updated = clock
        if len(entry.scores) >= entry.count:
            del self.open[key]
            self._pending[key] = (partition, offset, self.finished)
            result.detection = build_detection(
                [entry.scores[i] for i in sorted(entry.scores)], self.min_positives
            )
            return result
        while len(self.open) > self.max_open:
            oldest = min(self.open, key=lambda k: self.open[k].updated)
            result.dropped.append(
                self._drop(
                    oldest,
                    "overflow",
                    f"more than {self.max_open} tiles open at once "
                    "(AMBERSCAN_AGGREGATOR_MAX_OPEN_TILES)",
                    (partition, offset),
                )
            )
        return result

    def acknowledged(self, partition: int, next_offset: int) -> None:
        """The outputs of every record of `partition` before `next_offset` are acknowledged."""
        for key, (part, offset, memory) in list(self._pending.items()):
            if part == partition and offset < next_offset:
                memory.add(key)
                del self._pending[key]

    def safe_offset(self, partition: int, next_offset: int) -> int:
        """The offset that may be committed on `partition`: before any open tile's first score."""
        firsts = [e.first[partition] for e in self.open.values() if partition in e.first]
        return min([next_offset, *firsts])

    def drop_partitions(self, partitions: set[int]) -> None:
        """Forget what was read from `partitions` since their last commit: tiles open, and
        outputs not yet acknowledged. They are read again from that commit — by their new owner
        after a revoke, or by this instance after a failed publish — so none of it is failed or
        lost: those tiles are joined again from their first score."""
        for key in [k for k, e in self.open.items() if set(e.first) & partitions]:
            del self.open[key]
        self._pending = {k: v for k, v in self._pending.items() if v[0] not in partitions}
        for partition in partitions:
            self._clock.pop(partition, None)
            self._seen.pop(partition, None)

    def _tick(self, partition: int, now: float) -> float:
        last = self._seen.get(partition, now)
        gap = min(max(now - last, 0.0), ACTIVE_GAP_S, self.stale_s / 4)
        clock = self._clock.get(partition, 0.0) + gap
        self._clock[partition], self._seen[partition] = clock, now
        return clock

    def _evict_stale(self, partition: int, offset: int, clock: float) -> list[DroppedTile]:
        stale = [
            k
            for k, e in self.open.items()
            if partition in e.first and clock - e.updated > self.stale_s
        ]
        return [
            self._drop(
                key,
                "stale",
                f"no score for {self.stale_s:.0f}s while its partition kept streaming "
                "(a superpixel was lost upstream; AMBERSCAN_AGGREGATOR_STALE_S)",
                (partition, offset),
            )
            for key in stale
        ]

    def _drop(self, key: TileKey, cause: str, why: str, at: tuple[int, int]) -> DroppedTile:
        """Drop `key`, its dead letter going out with the record at (partition, offset) `at`."""
        entry = self.open.pop(key)
        self.dropped += 1
        self._pending[key] = (*at, self.given_up)
        partition, offset = min(entry.first.items(), key=lambda item: item[1])
        tile_id, scan_id, classifier, _ = key
        return DroppedTile(
            key=key,
            reason=(
                f"tile {tile_id} of scan {scan_id} (classifier {classifier}) dropped with "
                f"{len(entry.scores)} of {entry.count} superpixel scores: {why}"
            ),
            cause=cause,
            partition=partition,
            offset=offset,
            received=len(entry.scores),
            expected=entry.count,
        )


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

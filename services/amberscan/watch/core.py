"""Watch core: cadences, what a round enqueues, and the requests it sends.

Pure: strings, numbers, dataclasses and protobuf values in and out. A round compares what the
provider offers now (the newest imagery date of each scan tile) with what watch enqueued before
(one record per tile, imagery date and model): a tile is enqueued when its date is new, or when
its last enqueue failed (or was sent and has had no status for `UNANSWERED_AFTER_S`) and its
backoff has passed; nothing else.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from amberscan.geo.tiles import DEFAULT_FETCH_ZOOM, DEFAULT_SCAN_ZOOM, Tile
from amberscan.v1 import messages_pb2 as pb

WATCHABLE = ("geotiff", "stac", "wmts")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_EVERY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.I)
MAX_BACKOFF_S = 7 * 86400.0
# A tile sent this long ago whose scan has no status for it is taken as lost on the way and
# enqueued again like a failed one (#26, defect 5): far beyond a tile's time through the
# pipeline, even behind a backlog; a late answer still lands on its own scan's row.
UNANSWERED_AFTER_S = 6 * 3600.0


def parse_every(text: str) -> float:
    """A cadence such as "1d", "12h", "30m", "2w" or "45s", in seconds.

    Raises:
        ValueError: naming the text and the accepted form.
    """
    match = _EVERY.match(text)
    if not match or float(match.group(1)) <= 0:
        raise ValueError(
            f"cadence {text!r}: expected a positive number and s, m, h, d or w (e.g. 1d)"
        )
    return float(match.group(1)) * _UNITS[match.group(2).lower()]


def describe_every(seconds: float) -> str:
    """The shortest "1d"-style text for a cadence in seconds."""
    for unit in ("w", "d", "h", "m"):
        if seconds >= _UNITS[unit] and seconds % _UNITS[unit] == 0:
            return f"{_number(seconds / _UNITS[unit])}{unit}"
    return f"{_number(seconds)}s"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


@dataclass(frozen=True)
class Watch:
    """A watched region and the source it is scanned from."""

    watch_id: int
    geojson: str
    provider: str
    every_s: float
    sources: tuple[str, ...] = ()
    collection: str = ""
    layers: tuple[str, ...] = ()
    imagery_date: str = ""
    cursor: str = ""
    name: str = ""


@dataclass(frozen=True)
class Enqueued:
    """What watch recorded of one (tile, imagery date): its last enqueue and how it ended.

    Attributes:
        failed: The tile failed in the scan it was last enqueued in (the sink's scan_tiles row).
        since_s: Seconds since that enqueue.
        unanswered: It was sent, and that scan has no status for it yet.
    """

    tile_id: str
    imagery_date: str
    model: str
    scan_id: str
    attempts: int
    failed: bool
    since_s: float
    unanswered: bool = False


def backoff_s(attempts: int, base_s: float) -> float:
    """How long after its `attempts`-th enqueue a failed tile waits: base, 2×base, 4×base…"""
    return float(min(base_s * 2 ** max(attempts - 1, 0), MAX_BACKOFF_S))


@dataclass(frozen=True)
class RoundPlan:
    """What one round enqueues: new (tile id, date) pairs, and failed records to retry."""

    new: tuple[tuple[str, str], ...]
    retries: tuple[Enqueued, ...]
    given_up: tuple[Enqueued, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.new and not self.retries


def plan_round(
    offered: Mapping[str, str],
    known: Iterable[Enqueued],
    *,
    retry_base_s: float,
    max_attempts: int,
    unanswered_after_s: float = UNANSWERED_AFTER_S,
) -> RoundPlan:
    """What a round enqueues.

    Args:
        offered: tile id → the newest imagery date the provider has for it.
        known: Watch's records for those tiles (any date, any model).
        retry_base_s: The first backoff of a failed tile (doubling).
        max_attempts: Enqueues of one (tile, date) at most; then it is given up (and reported).
        unanswered_after_s: A record sent this long ago without a status counts as failed.

    Returns:
        New pairs: offered dates no record has (a model change alone does not rescan: replay
        re-scores retained features). Retries: records of an offered date whose tile failed (or
        has had no status for `unanswered_after_s`), once their backoff has passed, while
        attempts remain.
    """
    by_key: dict[tuple[str, str], list[Enqueued]] = {}
    for record in known:
        by_key.setdefault((record.tile_id, record.imagery_date), []).append(record)
    new, retries, given_up = [], [], []
    for tile_id, date in sorted(offered.items()):
        records = by_key.get((tile_id, date))
        if not records:
            new.append((tile_id, date))
            continue
        for record in records:
            lost = record.unanswered and record.since_s >= unanswered_after_s
            if not (record.failed or lost):
                continue
            if record.attempts >= max_attempts:
                given_up.append(record)
            elif record.since_s >= backoff_s(record.attempts, retry_base_s):
                retries.append(record)
    return RoundPlan(tuple(new), tuple(retries), tuple(given_up))


def tile_request(watch: Watch, scan_id: str, tile: Tile, date: str, tiles: int) -> pb.ScanRequest:
    """The one-tile scan request of a round: the watch's source, read at `date`."""
    return pb.ScanRequest(
        scan_id=scan_id,
        tile=pb.TileCoord(z=tile.z, x=tile.x, y=tile.y, quadkey=tile.quadkey),
        zoom=DEFAULT_SCAN_ZOOM,
        fetch_zoom=DEFAULT_FETCH_ZOOM,
        provider=watch.provider,
        sources=list(watch.sources),
        collection=watch.collection,
        layers=list(watch.layers),
        imagery_date=watch.imagery_date,
        vintage=date,
        tiles_expected=tiles,
    )

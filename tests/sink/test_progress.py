"""Scan progress rules on the real PostGIS: a tile's done status is final (#10, defect 6).

Whoever writes a tile's status later — a dead letter of a redelivered record, or the tiler
skipping a redelivered request because the tile's detection now exists — must not turn done
into failed or skipped.
"""

from __future__ import annotations

import json

import pytest

from amberscan.common.db import Database
from amberscan.common.settings import Settings
from amberscan.geo.tiles import Tile
from amberscan.sink.core import UPSERT_SCAN_TILE, failed_row
from amberscan.tiler.service import DatabaseHistory
from amberscan.v1 import messages_pb2 as pb

pytestmark = pytest.mark.stack

TILE = Tile(38012, 22100, 16)


async def status(db: Database, scan: str) -> list[tuple]:
    return await db.fetch(
        "SELECT status, flagged, hectares FROM scan_tiles WHERE scan_id = %s", scan
    )


async def mark_done(db: Database, scan: str) -> None:
    row = {
        "scan_id": scan,
        "tile_id": TILE.quadkey,
        "status": "done",
        "flagged": True,
        "hectares": 2.5,
        "reason": "",
    }
    async with db.pool.connection() as conn:
        await conn.execute(UPSERT_SCAN_TILE.encode(), row)


async def test_done_is_final(stack_settings: Settings, database: Database) -> None:
    await database.execute(
        "INSERT INTO detections (tile_id, imagery_date, model_version, backbone_version, scan_id, "
        "z, x, y, provider, flagged, positives, segment_count, min_positives, hectares, scores, "
        "tile_geom) VALUES (%s, '2015-06-01', 'm1', 'b1', 's1', 16, %s, %s, 'demo', true, 3, 30, "
        "2, 2.5, '{0.9}', ST_SetSRID(ST_GeomFromGeoJSON(%s), 4326))",
        TILE.quadkey,
        TILE.x,
        TILE.y,
        json.dumps(TILE.polygon()),
    )
    await mark_done(database, "s1")
    # A redelivered scan request: the tiler now finds the tile scanned and marks it skipped.
    history = DatabaseHistory(stack_settings, database)
    await history.mark_skipped("s1", TILE.quadkey, "2015-06-01", "m1", "already scanned")
    assert await status(database, "s1") == [("done", True, 2.5)]
    # Nor does a redelivered request whose imagery check now finds the tile not covered.
    await history.mark_not_covered("s1", TILE.quadkey, "imagery covers 10 % of the tile")
    assert await status(database, "s1") == [("done", True, 2.5)]
    # A dead letter of a redelivered record of the same tile.
    row = failed_row(
        pb.DeadLetter(reason="x", service="feature", tile_id=TILE.quadkey, scan_id="s1")
    )
    async with database.pool.connection() as conn:
        await conn.execute(UPSERT_SCAN_TILE.encode(), row)
    assert await status(database, "s1") == [("done", True, 2.5)]
    # In another scan the same skip is recorded, with the earlier verdict.
    await history.mark_skipped("s2", TILE.quadkey, "2015-06-01", "m1", "already scanned")
    assert await status(database, "s2") == [("skipped", True, 2.5)]

"""The map's summary the moment a scan ends (#27): right after `make run` it said 0 tiles until
the aggregates' next refresh, while the scan's own last line counted them."""

from __future__ import annotations

import json

import pytest

from amberscan import scanning
from amberscan.common.db import Database
from amberscan.common.settings import Settings, replace
from amberscan.sink.service import write_detection
from amberscan.v1 import messages_pb2 as pb
from amberscan.web import vector_tiles
from amberscan.web.app import make_app
from tests.streams import served
from tests.web.client import get
from tests.web.conftest import MODEL, TILES
from tests.web.routes.test_map import REGION_Z8, tile

pytestmark = pytest.mark.stack


def detection(name: str, scan_id: str) -> pb.Detection:
    """A detection of one of the four test tiles, as the aggregator sends it to the sink."""
    where, date, mining = TILES[name]
    return pb.Detection(
        tile_id=where.quadkey,
        scan_id=scan_id,
        tile=pb.TileCoord(x=where.x, y=where.y, z=where.z),
        provider="xyz",
        imagery_date=date,
        flagged=mining,
        positives=5 if mining else 1,
        segment_count=40,
        min_positives=2,
        hectares=2.25 if mining else 0.0,
        tile_geojson=json.dumps(where.polygon()),
        scores=[0.9] * (5 if mining else 1) + [0.1] * (35 if mining else 39),
        models=pb.ModelVersions(classifier=MODEL, backbone="efficientnet_lite1@1"),
    )


async def test_summary_matches_a_scan_the_moment_it_ends(
    stack_settings: Settings, database: Database
) -> None:
    """The app's aggregates refreshed at start (empty) and not again for an hour; the sink writes
    a scan's four detections; the scan is complete, and the summary and the overview tile count
    what the scan's last line says, at once."""
    settings = replace(stack_settings, web={"map_refresh_s": 3600})
    async with served(make_app(settings)) as base:
        _, before = await get(f"{base}/api/summary")
        assert before["tiles"] == 0
        scan_id = "scan-fresh"
        await database.execute(
            "INSERT INTO scans (scan_id, tiles_expected) VALUES (%s, %s)", scan_id, len(TILES)
        )
        for name in TILES:
            await write_detection(database, detection(name, scan_id))
        ended = await scanning.follow(
            database, scan_id, len(TILES), timeout_s=10, progress=False, poll_s=0.05
        )
        assert ended.complete and not ended.error and ended.done == 4 and ended.flagged == 2

        _, after = await get(f"{base}/api/summary")
        assert (after["tiles"], after["flagged"]) == (ended.done, ended.flagged), after
        assert after["hectares"] == pytest.approx(ended.hectares)
        assert after["aggregates_at"] > before["aggregates_at"]  # refreshed on the way
        _, layers, _ = await tile(base, REGION_Z8)
        cells = layers["cells"]
        assert sum(c["properties"]["tiles"] for c in cells) == ended.done
        assert sum(c["properties"]["flagged"] for c in cells) == ended.flagged


async def test_many_detections_are_read_from_the_aggregates(
    stack_settings: Settings, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Above LIVE_ROWS the summary reads the aggregates (refreshed on their timer), so a large
    survey's summary stays cheap: the rows written after the refresh are not counted yet."""
    monkeypatch.setattr(vector_tiles, "LIVE_ROWS", 1)
    for name in ("positive1", "negative1"):
        await write_detection(database, detection(name, "scan-big"))
    settings = replace(stack_settings, web={"map_refresh_s": 3600})
    async with served(make_app(settings)) as base:
        _, first = await get(f"{base}/api/summary")
        assert first["tiles"] == 2 and first["aggregates_at"] is not None
        await write_detection(database, detection("positive2", "scan-big"))
        _, later = await get(f"{base}/api/summary")
        assert later["tiles"] == 2  # the aggregates of the start

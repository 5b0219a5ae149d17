"""The map API against the real stack: detections in view as GeoJSON, filters, paging, the summary, pages."""

from __future__ import annotations

import aiohttp
import pytest

from tests.web.client import get
from tests.web.conftest import BBOX, MODEL, Seeded

pytestmark = pytest.mark.stack


async def test_detections_geojson(server: str, seeded: Seeded) -> None:
    status, fc = await get(f"{server}/api/detections", bbox=BBOX)
    assert status == 200
    assert fc["type"] == "FeatureCollection"
    assert fc["numberMatched"] == 4 and len(fc["features"]) == 4
    by_tile = {f["properties"]["tile_id"]: f for f in fc["features"]}
    positive = by_tile[seeded.tiles["positive1"].tile_id]
    assert positive["geometry"]["type"] == "Polygon"
    ring = positive["geometry"]["coordinates"][0]
    assert ring[0] == ring[-1] and len(ring) == 5
    props = positive["properties"]
    assert props["flagged"] is True and props["positives"] == 5
    assert props["demo"] is True and props["review"] == "unreviewed"
    assert props["model_version"] == MODEL and props["imagery_date"] == "2014-10-11"
    assert len(props["scores"]) == props["segment_count"]
    assert not by_tile[seeded.tiles["negative1"].tile_id]["properties"]["flagged"]


async def test_detections_filters_and_paging(server: str) -> None:
    pages, offset = [], 0
    while offset is not None:
        _, fc = await get(f"{server}/api/detections", bbox=BBOX, limit="3", offset=str(offset))
        pages.append(fc["features"])
        offset = fc["next_offset"]
    assert [len(p) for p in pages] == [3, 1]
    assert len({f["id"] for p in pages for f in p}) == 4
    _, fc = await get(f"{server}/api/detections", bbox=BBOX, year="2014")
    assert {f["properties"]["year"] for f in fc["features"]} == {"2014"} and len(
        fc["features"]
    ) == 2
    _, fc = await get(f"{server}/api/detections", bbox=BBOX, model="other-model")
    assert fc["features"] == []
    # A bbox away from the tiles finds nothing.
    _, fc = await get(f"{server}/api/detections", bbox="10,10,11,11")
    assert fc["numberMatched"] == 0


@pytest.mark.parametrize(
    ("bbox", "words"),
    [
        ("", "required"),
        ("1,2,3", "four numbers"),
        ("a,b,c,d", "four numbers"),
        ("10,0,5,1", "west must be less than east"),
        ("0,5,1,2", "south must be less than north"),
        ("0,0,nan,1", "finite"),
    ],
)
async def test_bad_bbox_is_400(server: str, bbox: str, words: str) -> None:
    status, body = await get(f"{server}/api/detections", bbox=bbox)
    assert status == 400
    assert words in body["error"]


async def test_a_newer_model_supersedes_on_the_map_unless_a_model_is_chosen(
    server: str, seeded: Seeded
) -> None:
    from amberscan.sink.core import UPSERT_DETECTION, detection_row
    from amberscan.v1 import messages_pb2 as pb

    old = seeded.tiles["positive1"]
    newer = pb.Detection()
    newer.CopyFrom(old)
    newer.models.classifier = "clf-test-2"
    newer.flagged, newer.positives, newer.hectares = False, 1, 0.0
    async with seeded.db.pool.connection() as conn:  # written after the seed: the latest run
        await conn.execute(UPSERT_DETECTION.encode(), detection_row(newer))

    status, latest = await get(f"{server}/api/detections", bbox=BBOX)
    assert status == 200 and len(latest["features"]) == 4  # one verdict per tile
    mine = [f for f in latest["features"] if f["properties"]["tile_id"] == old.tile_id]
    assert [f["properties"]["model_version"] for f in mine] == ["clf-test-2"]
    assert mine[0]["properties"]["flagged"] is False

    status, chosen = await get(f"{server}/api/detections", bbox=BBOX, model=MODEL)
    mine = [f for f in chosen["features"] if f["properties"]["tile_id"] == old.tile_id]
    assert [f["properties"]["model_version"] for f in mine] == [MODEL]
    assert mine[0]["properties"]["flagged"] is True


async def test_map_page_and_assets_are_served(server: str) -> None:
    for path in ("/", "/static/vendor/leaflet/leaflet.js", "/api/config"):
        async with aiohttp.ClientSession() as s, s.get(server + path) as r:
            assert r.status == 200, path
            assert "script-src 'self'" in r.headers["Content-Security-Policy"]
            assert r.headers["X-Content-Type-Options"] == "nosniff"

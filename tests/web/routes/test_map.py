"""The map API against the real stack: detections in view as GeoJSON, filters, paging, the summary, pages."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from amberscan.common.settings import replace
from amberscan.v1 import messages_pb2 as pb
from tests.web import client, mvt
from tests.web.client import AUTH, get, post
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
    for path in ("/", "/static/vendor/maplibre-gl/maplibre-gl.mjs", "/api/config"):
        async with aiohttp.ClientSession() as s, s.get(server + path) as r:
            assert r.status == 200, path
            if path.endswith(".mjs"):  # a browser runs an ES module only served as JavaScript
                assert r.content_type in ("text/javascript", "application/javascript")
            assert "script-src 'self'" in r.headers["Content-Security-Policy"]
            assert r.headers["X-Content-Type-Options"] == "nosniff"


# The seeded zoom-16 tiles (x 37626-37627, y 22003-22004) lie in these tiles of coarser zooms.
DETAIL = "/tiles/detections/12/2351/1375.mvt"
POSITIVES_Z14 = "/tiles/detections/14/9406/5500.mvt"  # the row of the two positive tiles
REGION_Z8 = "/tiles/detections/8/146/85.mvt"


async def tile(server: str, path: str, **query: str) -> tuple[int, dict[str, Any], Any]:
    async with aiohttp.ClientSession() as s, s.get(server + path, params=query) as r:
        body = await r.read()
        assert r.status != 200 or r.content_type == "application/vnd.mapbox-vector-tile"
        return r.status, (mvt.decode(body) if r.status == 200 else {}), r.headers.copy()


async def test_vector_tiles_detail_aggregate_and_damage(server: str, seeded: Seeded) -> None:
    status, layers, _ = await tile(server, DETAIL)
    assert status == 200 and set(layers) == {"detections"}  # no damage layer below zoom 14
    props = {f["properties"]["tile_id"]: f["properties"] for f in layers["detections"]}
    assert set(props) == {d.tile_id for d in seeded.tiles.values()}
    p1 = props[seeded.tiles["positive1"].tile_id]
    assert p1["flagged"] is True and p1["positives"] == 5 and p1["review"] == "unreviewed"
    assert p1["model_version"] == MODEL and p1["demo"] is True and p1["synthetic"] is False
    for feature in layers["detections"]:
        (ring,) = feature["rings"]
        xs, ys = zip(*ring, strict=True)
        assert 0 <= min(xs) < max(xs) <= 4096 and 0 <= min(ys) < max(ys) <= 4096

    status, layers, _ = await tile(server, POSITIVES_Z14)
    damaged = {f["properties"]["tile_id"] for f in layers["damage"]}
    assert damaged == {seeded.tiles["positive1"].tile_id, seeded.tiles["positive2"].tile_id}
    # The damaged areas lie inside their tiles' squares (in tile pixel coordinates).
    squares = {
        f["properties"]["tile_id"]: [min(c) for c in zip(*f["rings"][0], strict=True)]
        + [max(c) for c in zip(*f["rings"][0], strict=True)]
        for f in layers["detections"]
    }
    for f in layers["damage"]:
        x0, y0, x1, y1 = squares[f["properties"]["tile_id"]]
        for x, y in (p for ring in f["rings"] for p in ring):
            assert x0 - 1 <= x <= x1 + 1 and y0 - 1 <= y <= y1 + 1

    status, layers, _ = await tile(server, REGION_Z8)
    cells = layers["cells"]
    assert sum(c["properties"]["tiles"] for c in cells) == 4
    assert sum(c["properties"]["flagged"] for c in cells) == 2
    assert sum(c["properties"]["hectares"] for c in cells) == pytest.approx(15.0)
    assert all(0 <= c["properties"]["flagged_share"] <= 1 for c in cells)
    # Far away: an empty tile, not an error.
    status, layers, _ = await tile(server, "/tiles/detections/12/0/0.mvt")
    assert status == 200 and layers == {}


async def test_vector_tiles_filter_and_revalidate(server: str, seeded: Seeded) -> None:
    _, layers, _ = await tile(server, DETAIL, year="2014")
    assert {f["properties"]["imagery_date"] for f in layers["detections"]} == {"2014-10-11"}
    assert len(layers["detections"]) == 2
    _, layers, _ = await tile(server, REGION_Z8, year="2014")
    assert sum(c["properties"]["tiles"] for c in layers["cells"]) == 2
    _, layers, _ = await tile(server, DETAIL, model="other-model")
    assert layers == {}

    status, _, headers = await tile(server, DETAIL)
    etag = headers["ETag"]
    async with aiohttp.ClientSession() as s:
        async with s.get(server + DETAIL, headers={"If-None-Match": etag}) as r:
            assert r.status == 304 and await r.read() == b""
        target = seeded.tiles["positive1"]
        body = {
            **client.target(target),
            "verdict": "rejected",
        }
        assert (await post(f"{server}/api/reviews", body, AUTH))[0] == 200
        async with s.get(server + DETAIL, headers={"If-None-Match": etag}) as r:
            assert r.status == 200 and r.headers["ETag"] != etag  # the review changed the tile
    _, layers, _ = await tile(server, DETAIL, review="rejected")
    assert [f["properties"]["tile_id"] for f in layers["detections"]] == [target.tile_id]

    for path, words in (
        ("/tiles/detections/12/9999/1375.mvt", "from 0 to 4095"),
        ("/tiles/detections/30/0/0.mvt", "zoom"),
    ):
        status, answer = await get(server + path)
        assert status == 400 and words in answer["error"]
    status, answer = await get(f"{server}/tiles/detections/12/2351/1375.mvt", bbox="0,0,1,1")
    assert status == 400 and "bbox" in answer["error"]


async def test_aggregates_follow_new_detections(
    seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The low-zoom cells and the summary catch up with rows the sink writes, by polling."""
    import asyncio

    from amberscan.sink.core import UPSERT_DETECTION, detection_row
    from amberscan.web import vector_tiles
    from amberscan.web.app import make_app
    from tests import streams

    monkeypatch.setattr(vector_tiles, "LIVE_ROWS", 0)  # read the aggregates, however few rows
    settings = replace(seeded.settings, web={"map_refresh_s": 0.2})
    async with streams.served(make_app(settings)) as base:
        _, before = await get(f"{base}/api/summary")
        assert before["tiles"] == 4
        newer = pb.Detection()
        newer.CopyFrom(seeded.tiles["negative2"])
        newer.imagery_date = "2017-05-01"
        newer.flagged, newer.positives, newer.hectares = True, 4, 3.0
        async with seeded.db.pool.connection() as conn:
            await conn.execute(UPSERT_DETECTION.encode(), detection_row(newer))
        for _ in range(100):
            _, after = await get(f"{base}/api/summary")
            if after["flagged"] == 3:
                break
            await asyncio.sleep(0.1)
        assert after["flagged"] == 3 and after["tiles"] == 4  # negative2's newest vintage
        assert after["hectares"] == pytest.approx(18.0)
        _, layers, _ = await tile(base, REGION_Z8)
        assert sum(c["properties"]["flagged"] for c in layers["cells"]) == 3

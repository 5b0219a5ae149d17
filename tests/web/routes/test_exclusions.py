"""Exclusion areas against the real stack: stored in PostGIS through the API (behind the token),
detections inside kept but marked excluded, left out of the flagged hectares, listed by reason."""

from __future__ import annotations

import asyncio
import csv
import io
from typing import Any

import aiohttp
import pytest

from amberscan.geo.tiles import Tile
from tests.web import mvt
from tests.web.client import AUTH, get, post
from tests.web.conftest import BBOX, Seeded

pytestmark = pytest.mark.stack
DETAIL = "/tiles/detections/12/2351/1375.mvt"


def around(tile: Tile, reason: str, shrink: float = 0.25) -> dict[str, Any]:
    """A square Feature over the middle of `tile` (its centre inside, its corners outside)."""
    west, south, east, north = tile.bounds()
    dx, dy = (east - west) * shrink, (north - south) * shrink
    ring = [
        [west + dx, south + dy],
        [east - dx, south + dy],
        [east - dx, north - dy],
        [west + dx, north - dy],
        [west + dx, south + dy],
    ]
    return {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "properties": {"reason": reason, "name": "Klesiv pit 3", "region": "demo"},
    }


async def send(method: str, url: str, body: object, headers: dict[str, str]) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as s,
        s.request(method, url, json=body, headers=headers) as r,
    ):
        return r.status, await r.json()


async def summary_when(server: str, ready: Any) -> dict[str, Any]:
    """The summary once `ready(summary)` holds (the aggregates follow a write within seconds)."""
    for _ in range(100):
        _, summary = await get(f"{server}/api/summary")
        if ready(summary):
            return summary  # type: ignore[no-any-return]
        await asyncio.sleep(0.1)
    raise AssertionError(f"the summary did not follow: {summary}")


async def test_exclusion_areas_mark_detections_and_leave_their_hectares_out(
    server: str, seeded: Seeded
) -> None:
    quarry = seeded.tiles["positive1"]
    tile = Tile(quarry.tile.x, quarry.tile.y, quarry.tile.z)
    feature = around(tile, "licensed quarry")
    assert (await post(f"{server}/api/exclusions", feature))[0] == 401
    status, created = await post(f"{server}/api/exclusions", feature, AUTH)
    assert status == 201 and len(created["ids"]) == 1
    area_id = created["ids"][0]

    _, fc = await get(f"{server}/api/detections", bbox=BBOX)
    marks = {f["properties"]["tile_id"]: f["properties"] for f in fc["features"]}
    assert marks[quarry.tile_id]["excluded"] is True
    assert marks[quarry.tile_id]["exclusion_reason"] == "licensed quarry"
    assert [t for t, p in marks.items() if p["excluded"]] == [quarry.tile_id]

    summary = await summary_when(server, lambda s: s["flagged"] == 1)
    assert summary["hectares"] == pytest.approx(7.5)  # positive2 alone
    assert summary["excluded"]["flagged"] == 1 and summary["excluded"]["hectares"] == 7.5
    assert summary["excluded"]["by_reason"] == [
        {"reason": "licensed quarry", "areas": 1, "tiles": 1, "flagged": 1, "hectares": 7.5}
    ]
    async with aiohttp.ClientSession() as s, s.get(server + DETAIL) as r:
        layers = mvt.decode(await r.read())
    shown = {f["properties"]["tile_id"]: f["properties"] for f in layers["detections"]}
    assert shown[quarry.tile_id]["excluded"] is True
    assert shown[quarry.tile_id]["exclusion_reason"] == "licensed quarry"
    _, areas = await get(f"{server}/api/exclusions")
    (area,) = areas["features"]
    assert area["id"] == area_id and area["geometry"]["type"] == "MultiPolygon"
    assert (area["properties"]["tiles"], area["properties"]["flagged"]) == (1, 1)
    assert area["properties"]["name"] == "Klesiv pit 3" and area["properties"]["region"] == "demo"
    status, text = await get(f"{server}/api/export.csv")
    rows = {r["tile_id"]: r for r in csv.DictReader(io.StringIO(text))}
    assert rows[quarry.tile_id]["excluded"] == "true"

    # Moved onto the negative tile beside it: positive1 counts again.
    other = seeded.tiles["negative1"]
    moved = around(Tile(other.tile.x, other.tile.y, other.tile.z), "sand pit")
    status, _ = await send("PUT", f"{server}/api/exclusions/{area_id}", moved, AUTH)
    assert status == 200
    summary = await summary_when(server, lambda s: s["flagged"] == 2)
    assert summary["excluded"]["flagged"] == 0
    assert summary["excluded"]["by_reason"] == [
        {"reason": "sand pit", "areas": 1, "tiles": 1, "flagged": 0, "hectares": 0.0}
    ]
    assert (await send("DELETE", f"{server}/api/exclusions/{area_id}", {}, AUTH))[0] == 200
    assert (await send("DELETE", f"{server}/api/exclusions/{area_id}", {}, AUTH))[0] == 404
    _, areas = await get(f"{server}/api/exclusions")
    assert areas["features"] == [] and areas["by_reason"] == []


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"geometry": {"type": "Point", "coordinates": [26.6, 50.8]}}, "Polygon or MultiPolygon"),
        ({"properties": {"name": "no reason"}}, "properties.reason"),
        (
            {
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]],
                }
            },
            "Self-intersection",
        ),
        (
            {
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [[[500, 0], [501, 0], [501, 1], [500, 0]]],
                }
            },
            "WGS84",
        ),
    ],
)
async def test_bad_exclusion_areas_are_refused(
    server: str, seeded: Seeded, change: dict[str, Any], words: str
) -> None:
    tile = seeded.tiles["positive1"].tile
    feature = {**around(Tile(tile.x, tile.y, tile.z), "quarry"), **change}
    status, answer = await post(f"{server}/api/exclusions", feature, AUTH)
    assert status == 400 and words in answer["error"], answer

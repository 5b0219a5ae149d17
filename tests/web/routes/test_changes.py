"""Change between vintages and models against the real stack: two vintages of the four real
tiles in PostGIS (and a second model's run of one), listed by the web API and by `amberscan
diff`, and shown by the map's change view (vector tiles) and the summary."""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from amberscan.cli import diff
from amberscan.common.settings import replace
from amberscan.sink.core import UPSERT_DETECTION, detection_row
from amberscan.v1 import messages_pb2 as pb
from amberscan.web.app import make_app
from tests import streams
from tests.web import mvt
from tests.web.client import get
from tests.web.conftest import MODEL, Seeded

pytestmark = pytest.mark.stack
OTHER = "clf-test-2"
# The 2017 vintage of each seeded tile (flagged or not); 2014-2016 are the seeded rows.
VINTAGE_2017 = {"positive1": False, "negative1": True, "positive2": True, "negative2": False}
DETAIL = "/tiles/detections/12/2351/1375.mvt"
REGION_Z8 = "/tiles/detections/8/146/85.mvt"


async def upsert(seeded: Seeded, detection: pb.Detection) -> None:
    async with seeded.db.pool.connection() as conn:
        await conn.execute(UPSERT_DETECTION.encode(), detection_row(detection))


@pytest.fixture
async def vintages(seeded: Seeded) -> AsyncIterator[tuple[str, Seeded]]:
    """The seeded tiles again on 2017 imagery, and model OTHER's later run of positive1's
    2014 imagery, which does not flag it; then the app (its map aggregates include them)."""
    for name, flagged in VINTAGE_2017.items():
        row = pb.Detection()
        row.CopyFrom(seeded.tiles[name])
        row.imagery_date = "2017-07-01"
        row.flagged, row.positives = flagged, 5 if flagged else 1
        row.hectares = 2.5 if flagged else 0.0
        row.positives_geojson = row.positives_geojson if flagged else ""
        await upsert(seeded, row)
    rerun = pb.Detection()
    rerun.CopyFrom(seeded.tiles["positive1"])
    rerun.models.classifier = OTHER
    rerun.flagged, rerun.positives, rerun.hectares = False, 2, 0.0
    await upsert(seeded, rerun)
    settings = replace(seeded.settings, web={"token": "t"})
    async with streams.served(make_app(settings)) as base:
        yield base, seeded


def ids(seeded: Seeded, *names: str) -> set[str]:
    return {seeded.tiles[n].tile_id for n in names}


async def changes_geojson(base: str, query: list[tuple[str, str]]) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"{base}/api/changes.geojson", params=query) as r,
    ):
        return r.status, await r.json(content_type=None)


async def test_change_list_between_vintages_and_models(vintages: tuple[str, Seeded]) -> None:
    base, seeded = vintages
    status, fc = await changes_geojson(base, [("from", "2014"), ("to", "2017"), ("model", MODEL)])
    assert status == 200 and fc["comparison"] == f"vintage 2014 → 2017 (model {MODEL})"
    kinds = {f["id"]: f["properties"]["change"] for f in fc["features"]}
    assert kinds == {
        seeded.tiles["positive1"].tile_id: "gone",
        seeded.tiles["negative1"].tile_id: "new",
    }
    new = next(f for f in fc["features"] if f["properties"]["change"] == "new")
    assert new["properties"]["hectares"] == 2.5 and new["geometry"]["type"] == "Polygon"
    assert (new["properties"]["before_date"], new["properties"]["after_date"]) == (
        "2014-10-11",
        "2017-07-01",
    )
    # Without a model each vintage is the newest run: OTHER's rerun unflagged positive1 in 2014.
    _, fc = await changes_geojson(base, [("from", "2014"), ("to", "2017")])
    assert {f["id"] for f in fc["features"]} == ids(seeded, "negative1")
    # positive2 was flagged in 2015 and in 2017: no change.
    _, fc = await changes_geojson(base, [("from", "2015"), ("to", "2017")])
    assert fc["features"] == []
    _, fc = await changes_geojson(base, [("model", MODEL), ("model", OTHER)])
    assert [(f["id"], f["properties"]["change"]) for f in fc["features"]] == [
        (seeded.tiles["positive1"].tile_id, "gone")
    ]
    async with (
        aiohttp.ClientSession() as s,
        s.get(
            f"{base}/api/changes.csv", params={"from": "2014", "to": "2017", "model": MODEL}
        ) as r,
    ):
        rows = list(csv.DictReader(io.StringIO(await r.text())))
    assert {(r["tile_id"], r["change"], r["after_flagged"]) for r in rows} == {
        (seeded.tiles["positive1"].tile_id, "gone", "false"),
        (seeded.tiles["negative1"].tile_id, "new", "true"),
    }
    for query, words in (
        ([("from", "2014")], "four-digit"),
        ([("from", "2014"), ("to", "2014")], "both 2014"),
        ([("model", MODEL)], "two models"),
    ):
        status, answer = await changes_geojson(base, query)
        assert status == 400 and words in answer["error"], answer


async def test_change_view_on_the_map_and_in_the_summary(vintages: tuple[str, Seeded]) -> None:
    base, seeded = vintages

    async def features(path: str, **query: str) -> dict[str, list[dict[str, Any]]]:
        async with aiohttp.ClientSession() as s, s.get(base + path, params=query) as r:
            assert r.status == 200
            return mvt.decode(await r.read())

    layers = await features(DETAIL, year="2017", change="changed")
    assert {f["properties"]["tile_id"] for f in layers["detections"]} == ids(seeded, "negative1")
    assert layers["detections"][0]["properties"]["change"] == "new"
    layers = await features(DETAIL, year="2017", change="changed", model=MODEL)
    changed = {f["properties"]["tile_id"]: f["properties"]["change"] for f in layers["detections"]}
    assert changed == {
        seeded.tiles["positive1"].tile_id: "gone",
        seeded.tiles["negative1"].tile_id: "new",
    }
    # The vintage view (no change filter) labels every tile with its change.
    layers = await features(DETAIL, year="2017")
    labels = {f["properties"]["tile_id"]: f["properties"]["change"] for f in layers["detections"]}
    assert labels == {
        seeded.tiles["positive1"].tile_id: "same",  # 2014's newest run did not flag it either
        seeded.tiles["negative1"].tile_id: "new",
        seeded.tiles["positive2"].tile_id: "same",
        seeded.tiles["negative2"].tile_id: "same",
    }
    layers = await features(REGION_Z8, year="2017", change="new")
    assert sum(c["properties"]["tiles"] for c in layers["cells"]) == 1
    layers = await features(REGION_Z8, year="2017", change="gone", model=MODEL)  # not aggregated
    assert sum(c["properties"]["tiles"] for c in layers["cells"]) == 1

    status, summary = await get(f"{base}/api/summary")
    assert status == 200
    assert summary["by_year"]["2017"]["tiles"] == 4 and summary["by_year"]["2017"]["flagged"] == 2
    assert summary["by_year"]["2017"]["new_tiles"] == 1
    assert summary["by_year"]["2017"]["new_hectares"] == 2.5
    assert summary["tiles"] == 4 and summary["years"] == ["2014", "2015", "2016", "2017"]


async def test_diff_command_lists_the_same(
    vintages: tuple[str, Seeded], capsys: pytest.CaptureFixture[str]
) -> None:
    _, seeded = vintages

    async def run(*argv: str) -> str:
        parser = argparse.ArgumentParser()
        diff.add_parser(parser.add_subparsers())
        args = parser.parse_args(["diff", *argv])
        # The command runs its own event loop, as from the shell.
        assert await asyncio.to_thread(diff.run, args, seeded.settings) == 0
        return capsys.readouterr().out

    document = json.loads(
        await run("--from", "2014", "--to", "2017", "--model", MODEL, "--geojson")
    )
    assert {f["id"]: f["properties"]["change"] for f in document["features"]} == {
        seeded.tiles["positive1"].tile_id: "gone",
        seeded.tiles["negative1"].tile_id: "new",
    }
    text = await run("--from", "2014", "--to", "2017", "--model", MODEL)
    assert "new: 1 tiles, 2.50 ha" in text and "gone: 1 tiles" in text
    rows = list(csv.DictReader(io.StringIO(await run("--model", MODEL, "--model", OTHER, "--csv"))))
    assert [(r["tile_id"], r["change"]) for r in rows] == [
        (seeded.tiles["positive1"].tile_id, "gone")
    ]

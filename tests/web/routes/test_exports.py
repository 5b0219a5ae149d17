"""The exports against the real stack, each file read back with GDAL's own reader (pyogrio, GDAL
inside): GeoJSON, CSV, GeoPackage and FlatGeobuf, their layers, fields, geometry types and row
counts against the database, and the filters."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import aiohttp
import pyogrio
import pyogrio.raw
import pytest
import shapely
import shapely.geometry

from amberscan.web import gdal_files
from amberscan.web.core import implied_threshold
from amberscan.web.exporting import FIELDS
from tests.web.client import AUTH, fetch, get, post, target
from tests.web.conftest import BBOX, MODEL, TILES, Seeded

pytestmark = pytest.mark.stack

FIELD_NAMES = [name for name, _ in FIELDS]
DAMAGED = "flagged AND positives_geom IS NOT NULL"


async def db_count(seeded: Seeded, where: str, *params: Any) -> int:
    """Rows of the seeded detections (one per tile) meeting `where`, counted by the database."""
    rows = await seeded.db.fetch(f"SELECT count(*) FROM detections WHERE {where}", *params)
    return int(rows[0][0])


async def download(url: str, path: Path, **params: str) -> Path:
    status, body, content_type = await fetch(url, **params)
    assert status == 200, body
    # `fetch` decodes JSON and text by their content type: written back as the server sent them.
    if isinstance(body, bytes):
        path.write_bytes(body)
    else:
        path.write_text(body if isinstance(body, str) else json.dumps(body))
    return path


def read(path: Path, layer: str | None = None) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """(layer info, {field: values} with the geometries as shapely under "geometry")."""
    # Counted by reading: an empty FlatGeobuf's header says "unknown" (-1), as its spec has it.
    info = pyogrio.read_info(path, layer=layer, force_feature_count=True)
    meta, _, geometry, values = pyogrio.raw.read(path, layer=layer)
    columns = {str(k): list(v) for k, v in zip(meta["fields"], values, strict=True)}
    columns["geometry"] = list(shapely.from_wkb(geometry))
    return info, columns


async def test_geopackage_holds_both_layers_with_every_field(
    server: str, seeded: Seeded, tmp_path: Path
) -> None:
    async with aiohttp.ClientSession() as s, s.get(f"{server}/api/export.gpkg") as r:
        assert r.content_type == "application/geopackage+sqlite3"
        assert 'filename="amberscan.gpkg"' in r.headers["Content-Disposition"]
        (tmp_path / "all.gpkg").write_bytes(await r.read())
    path = tmp_path / "all.gpkg"
    assert {str(n): str(t) for n, t in pyogrio.list_layers(path)} == {
        "tiles": "Polygon",
        "damaged_areas": "MultiPolygon",
        "area_estimate": "MultiPolygon",  # no design drawn: an empty layer
    }
    assert pyogrio.read_info(path, layer="area_estimate", force_feature_count=True)["features"] == 0
    damaged_in_db = await db_count(seeded, DAMAGED)
    assert 0 < damaged_in_db < len(TILES)  # both layers, and the second one a subset
    for layer, where in (("tiles", "true"), ("damaged_areas", DAMAGED)):
        info, columns = read(path, layer)
        assert list(info["fields"]) == FIELD_NAMES, layer
        assert info["crs"] == "EPSG:4326" and info["driver"] == "GPKG"
        assert info["features"] == await db_count(seeded, where), layer
        tiles = {d.tile_id: d for d in seeded.tiles.values()}
        for i, tile_id in enumerate(columns["tile_id"]):
            d = tiles[tile_id]
            assert columns["imagery_date"][i] == d.imagery_date
            assert columns["model_version"][i] == MODEL
            assert columns["backbone_version"][i] == "efficientnet_lite0@1"
            assert columns["scan_id"][i] == "scan-test" and columns["provider"][i] == d.provider
            assert columns["positives"][i] == d.positives
            assert columns["max_score"][i] == pytest.approx(max(d.scores), abs=1e-4)
            # The test model is in no registry: the threshold its scores and count imply.
            assert columns["threshold_source"][i] == "implied"
            assert columns["threshold"][i] == pytest.approx(
                implied_threshold(list(d.scores), d.positives), abs=1e-6
            )
            assert columns["review"][i] == "unreviewed"
            assert str(columns["detected_at"][i]).startswith("20")
    # The damaged areas are the positive superpixels' polygons, not the tiles'.
    _, damaged = read(path, "damaged_areas")
    for tile_id, shape in zip(damaged["tile_id"], damaged["geometry"], strict=True):
        (area,) = await seeded.db.fetch(
            "SELECT ST_Area(positives_geom), ST_Area(tile_geom) FROM detections WHERE tile_id = %s",
            tile_id,
        )
        assert shape.area == pytest.approx(area[0], rel=1e-6) and shape.area < area[1]


@pytest.mark.parametrize("layer", ["tiles", "damaged_areas"])
async def test_flatgeobuf_one_layer_per_file(
    server: str, seeded: Seeded, tmp_path: Path, layer: str
) -> None:
    path = await download(f"{server}/api/export.fgb", tmp_path / f"{layer}.fgb", layer=layer)
    assert [str(n) for n, _ in pyogrio.list_layers(path)] == [layer]
    info, columns = read(path)
    assert info["driver"] == "FlatGeobuf" and list(info["fields"]) == FIELD_NAMES
    assert info["geometry_type"] == ("Polygon" if layer == "tiles" else "MultiPolygon")
    where = "true" if layer == "tiles" else DAMAGED
    assert info["features"] == await db_count(seeded, where)
    assert all(isinstance(t, str) and t for t in columns["scan_id"])


async def test_a_large_flatgeobuf_is_written_without_its_index(
    server: str, seeded: Seeded, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GDAL holds a FlatGeobuf's spatial index in memory: past FGB_INDEX_MAX features there is
    none, and every feature is still there."""
    indexed = await download(f"{server}/api/export.fgb", tmp_path / "indexed.fgb")
    assert pyogrio.read_info(indexed)["capabilities"]["fast_spatial_filter"]
    monkeypatch.setattr(gdal_files, "FGB_INDEX_MAX", len(TILES) - 1)
    path = await download(f"{server}/api/export.fgb", tmp_path / "large.fgb")
    info = pyogrio.read_info(path, force_feature_count=True)
    assert not info["capabilities"]["fast_spatial_filter"]
    assert info["features"] == len(TILES)


async def test_csv_and_geojson_read_by_gdal(server: str, seeded: Seeded, tmp_path: Path) -> None:
    status, text = await get(f"{server}/api/export.csv", year="2014")
    assert status == 200
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == await db_count(seeded, "left(imagery_date, 4) = '2014'") == 2
    for row in rows:
        assert row["imagery_date"] == "2014-10-11" and row["model_version"] == MODEL
        assert len(row["scores"].split(";")) == int(row["segment_count"])
        assert float(row["west"]) < float(row["east"])
    path = tmp_path / "tiles.csv"
    path.write_text(text)
    info, columns = read(path)
    assert info["features"] == 2
    # GDAL's CSV reader takes the WKT column as the geometry: the tiles' own squares (to the
    # WKT's 7 decimals).
    quadkeys = {tile.quadkey: tile for tile, _, _ in TILES.values()}
    for tile_id, shape in zip(columns["tile_id"], columns["geometry"], strict=True):
        expected = shapely.geometry.shape(quadkeys[tile_id].polygon())
        assert shape.hausdorff_distance(expected) < 1e-6

    async with aiohttp.ClientSession() as s, s.get(f"{server}/api/export.geojson") as r:
        assert r.content_type == "application/geo+json"
        # Streamed as the rows arrive: chunked, no length known in advance.
        assert r.headers.get("Transfer-Encoding") == "chunked" and "Content-Length" not in r.headers
        body = await r.read()
    fc = json.loads(body)
    assert fc["layer"] == "tiles" and len(fc["features"]) == 4
    path = tmp_path / "damaged.geojson"
    await download(f"{server}/api/export.geojson", path, layer="damaged_areas")
    info, columns = read(path)
    assert info["geometry_type"] == "MultiPolygon"
    assert info["features"] == await db_count(seeded, DAMAGED)
    assert set(FIELD_NAMES) <= set(info["fields"])


async def test_filters_reach_every_format(server: str, seeded: Seeded, tmp_path: Path) -> None:
    confirmed = seeded.tiles["positive1"]
    status, _ = await post(
        f"{server}/api/reviews", {**target(confirmed), "verdict": "confirmed"}, AUTH
    )
    assert status == 200
    tile, _, _ = TILES["negative2"]
    west, south, east, north = tile.bounds()
    # A triangle inside negative2's square only.
    region = {
        "type": "Polygon",
        "coordinates": [
            [
                [west + (east - west) * 0.2, south + (north - south) * 0.2],
                [west + (east - west) * 0.8, south + (north - south) * 0.2],
                [west + (east - west) * 0.5, south + (north - south) * 0.8],
                [west + (east - west) * 0.2, south + (north - south) * 0.2],
            ]
        ],
    }
    cases: list[tuple[dict[str, str], str, tuple[Any, ...]]] = [
        ({"flagged": "true"}, "flagged", ()),
        ({"year": "2015"}, "left(imagery_date, 4) = '2015'", ()),
        ({"model": "some-other-model"}, "model_version = 'some-other-model'", ()),
        ({"review": "confirmed"}, "tile_id = %s", (confirmed.tile_id,)),
        (
            {"review": "unreviewed", "flagged": "true"},
            "flagged AND tile_id <> %s",
            (confirmed.tile_id,),
        ),
        ({"region": json.dumps(region)}, "tile_id = %s", (tile.quadkey,)),
    ]
    for query, where, params in cases:
        expected = await db_count(seeded, where, *params)
        damaged = await db_count(seeded, f"{where} AND {DAMAGED}", *params)
        gpkg = await download(f"{server}/api/export.gpkg", tmp_path / "f.gpkg", **query)
        assert pyogrio.read_info(gpkg, layer="tiles")["features"] == expected, query
        assert pyogrio.read_info(gpkg, layer="damaged_areas")["features"] == damaged, query
        fgb = await download(f"{server}/api/export.fgb", tmp_path / "f.fgb", **query)
        assert pyogrio.read_info(fgb, force_feature_count=True)["features"] == expected, query
        status, text = await get(f"{server}/api/export.csv", layer="damaged_areas", **query)
        assert len(list(csv.DictReader(io.StringIO(text)))) == damaged, query
        status, fc = await get(f"{server}/api/export.geojson", **query)
        assert len(fc["features"]) == expected, query
    # Which filters hit something at all: the cases are not all empty.
    assert await db_count(seeded, "flagged") > 0


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ({"layer": "cells"}, "layer='cells'"),
        ({"flagged": "maybe"}, "flagged='maybe'"),
        ({"region": '{"type": "Point", "coordinates": [1, 2]}'}, "region: GeoJSON region"),
        ({"review": "pending"}, "review='pending'"),
    ],
)
async def test_bad_export_parameters_are_named(
    server: str, seeded: Seeded, query: dict[str, str], problem: str
) -> None:
    for fmt in ("gpkg", "fgb", "csv", "geojson"):
        status, body = await get(f"{server}/api/export.{fmt}", **query)
        assert status == 400 and problem in body["error"], (fmt, body)


async def test_area_estimate_layer_in_every_format_and_the_command(
    server: str, seeded: Seeded, tmp_path: Path
) -> None:
    """The sample-based area estimate (#28) travels with the exports: one row per design of the
    vintage and model in the region, its region as the geometry, the figures of
    GET /api/area/designs/ID; read back with GDAL (pyogrio), from the API and `amberscan export`."""
    import argparse
    import asyncio

    from amberscan.cli import export as export_command
    from amberscan.web.exporting import ESTIMATE_FIELDS

    status, design = await post(f"{server}/api/area/designs", {"bbox": BBOX, "n": 4}, AUTH)
    assert status == 201 and design["sampled"] == 4  # a census of the four seeded tiles
    for t in design["tiles"]:
        body = {k: t[k] for k in ("tile_id", "imagery_date", "model_version")}
        verdict = "confirmed" if t["tile_id"] == seeded.tiles["positive1"].tile_id else "rejected"
        status, _ = await post(
            f"{server}/api/reviews", {**body, "verdict": verdict, "reviewer": "tester"}, AUTH
        )
        assert status == 200
    status, report = await get(f"{server}/api/area/designs/{design['id']}")
    assert status == 200 and report["reviewed"] == 4
    mining = report["estimate"]["mining_ha"]
    assert mining["estimate"] > 0 and mining["se"] == 0  # a census: no sampling error

    names = [name for name, _ in ESTIMATE_FIELDS]
    gpkg = await download(f"{server}/api/export.gpkg", tmp_path / "all.gpkg")
    fgb = await download(
        f"{server}/api/export.fgb", tmp_path / "e.fgb", layer="area_estimate", model=MODEL
    )
    geojson = await download(
        f"{server}/api/export.geojson", tmp_path / "e.geojson", layer="area_estimate"
    )
    csv_file = await download(
        f"{server}/api/export.csv", tmp_path / "e.csv", layer="area_estimate", bbox=BBOX
    )
    parser = argparse.ArgumentParser()
    export_command.add_parser(parser.add_subparsers())
    written = tmp_path / "command.gpkg"
    args = parser.parse_args(["export", str(written), "--layer", "area_estimate"])
    assert await asyncio.to_thread(export_command.run, args, seeded.settings) == 0
    region = shapely.geometry.shape(report["region"])
    for path in (gpkg, fgb, geojson, csv_file, written):
        layer = "area_estimate" if path.suffix == ".gpkg" else None
        info, columns = read(path, layer)
        assert info["features"] == 1, path
        assert set(names) <= set(info["fields"]), path
        assert int(columns["design_id"][0]) == design["id"]
        assert float(columns["mining_ha"][0]) == pytest.approx(mining["estimate"], abs=1e-4)
        assert float(columns["mining_ha_low"][0]) == pytest.approx(mining["low"], abs=1e-4)
        assert int(columns["reviewed"][0]) == 4 and int(columns["sampled"][0]) == 4
        assert float(columns["mapped_ha"][0]) == pytest.approx(
            report["estimate"]["mapped_ha"], abs=1e-4
        )
        assert str(columns["page"][0]) == f"/area/{design['id']}"
        assert columns["geometry"][0].equals(region) or columns["geometry"][0].geoms[0].equals(
            region
        ), path
    # No design of another vintage or elsewhere: the layer is empty.
    for params in ({"year": "2013"}, {"bbox": "10,10,10.1,10.1"}):
        path = await download(
            f"{server}/api/export.geojson",
            tmp_path / "none.geojson",
            layer="area_estimate",
            **params,
        )
        assert json.loads(path.read_text())["features"] == [], params

"""The PostGIS access layer against a real PostgreSQL with PostGIS."""

import json

import pytest

from amberscan.common.settings import Settings

pytestmark = pytest.mark.stack


async def test_geometry_written_and_queried(database) -> None:  # type: ignore[no-untyped-def]
    polygon = {
        "type": "Polygon",
        "coordinates": [
            [[26.69, 50.78], [26.70, 50.78], [26.70, 50.79], [26.69, 50.79], [26.69, 50.78]]
        ],
    }
    await database.execute(
        """INSERT INTO detections (tile_id, imagery_date, model_version, backbone_version, scan_id,
               z, x, y, provider, flagged, positives, segment_count, min_positives, hectares, scores, tile_geom)
           VALUES (%s, '2014-10-11', 'm1', 'b1', 's1', 16, 1, 2, 'demo', true, 3, 30, 2, 1.5,
                   %s, ST_SetSRID(ST_GeomFromGeoJSON(%s), 4326))""",
        "q1",
        [0.9, 0.1],
        json.dumps(polygon),
    )
    rows = await database.fetch(
        """SELECT tile_id, ST_AsGeoJSON(tile_geom), ST_Area(tile_geom::geography) / 10000
           FROM detections WHERE ST_Intersects(tile_geom, ST_MakeEnvelope(26.695, 50.785, 26.8, 50.9, 4326))"""
    )
    assert len(rows) == 1
    tile_id, geojson, hectares = rows[0]
    assert tile_id == "q1"
    assert json.loads(geojson)["coordinates"][0][0] == [26.69, 50.78]
    assert 70 < hectares < 90  # 0.01° × 0.01° at 50.78° N is about 78 ha
    assert await database.fetch(
        "SELECT count(*) FROM detections WHERE ST_Intersects(tile_geom, ST_MakeEnvelope(0, 0, 1, 1, 4326))"
    ) == [(0,)]


async def test_schema_isolated_per_test(stack_settings: Settings, database) -> None:  # type: ignore[no-untyped-def]
    rows = await database.fetch("SELECT current_schema()")
    assert rows == [(stack_settings.database.schema_name,)]

"""`amberscan survey-fixture`: synthetic detections in a schema of their own, never mixed."""

from __future__ import annotations

import numpy as np
import pytest

from amberscan import survey
from amberscan.common.db import Database
from amberscan.common.settings import Settings
from amberscan.errors import AmberscanError
from amberscan.geo.tiles import Tile


def test_layout_is_the_study_area_block() -> None:
    lay = survey.layout(450_000)
    assert (lay.columns, lay.rows) == (900, 500) and lay.count == 450_000
    west, _, _, north = Tile(lay.x0, lay.y0, 16).bounds()
    assert west == pytest.approx(25.0, abs=0.01) and north == pytest.approx(52.0, abs=0.01)
    x = np.array([lay.x0, lay.x0 + 17])
    y = np.array([lay.y0, lay.y0 + 3])
    assert list(survey.quadkeys(x, y)) == [
        Tile(int(a), int(b), 16).quadkey for a, b in zip(x, y, strict=True)
    ]


@pytest.mark.stack
async def test_fixture_fills_its_own_schema_and_never_mixes(stack_settings: Settings) -> None:
    schema = stack_settings.database.schema_name + "_synthetic"
    db = Database(stack_settings.database, schema=schema)
    await db.open()
    expected = survey.layout(2000).count  # 60 × 33
    try:
        result = await survey.fill(stack_settings, schema, 2000, seed=3)
        assert result["tiles"] == expected and 0 < result["flagged"] < result["tiles"]
        rows = await db.fetch(
            "SELECT count(*) FILTER (WHERE provider = 'synthetic' AND scan_id = 'synthetic-survey'),"
            " count(*) FILTER (WHERE flagged AND positives_geom IS NOT NULL),"
            " count(*) FILTER (WHERE flagged), count(DISTINCT tile_id) FROM detections"
        )
        assert rows[0] == (expected, result["flagged"], result["flagged"], expected)
        again = await survey.fill(stack_settings, schema, 2000, seed=3)  # replaces, not appends
        assert again["tiles"] == expected and again["flagged"] == result["flagged"]
        with pytest.raises(AmberscanError, match="AMBERSCAN_DATABASE_SCHEMA"):
            await survey.fill(stack_settings, stack_settings.database.schema_name, 10, seed=0)
        await db.execute(
            "UPDATE detections SET provider = 'demo' WHERE tile_id = (SELECT min(tile_id) FROM detections)"
        )
        with pytest.raises(AmberscanError, match="1 detections that are not synthetic"):
            await survey.fill(stack_settings, schema, 10, seed=0)
    finally:
        await db.drop_schema()
        await db.close()

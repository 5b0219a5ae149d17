"""The exports against the real stack: CSV and GeoJSON of the filtered detections."""

from __future__ import annotations

import csv
import io

import aiohttp
import pytest

from tests.web.client import get
from tests.web.conftest import MODEL, Seeded

pytestmark = pytest.mark.stack


async def test_export_csv_and_geojson(server: str, seeded: Seeded) -> None:
    status, text = await get(f"{server}/api/export.csv", year="2014")
    assert status == 200
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 2
    assert {r["imagery_date"] for r in rows} == {"2014-10-11"}
    for row in rows:
        assert row["model_version"] == MODEL
        assert len(row["scores"].split(";")) == int(row["segment_count"])
        assert float(row["west"]) < float(row["east"])
        assert float(row["hectares"]) >= 0
    async with aiohttp.ClientSession() as s, s.get(f"{server}/api/export.geojson") as r:
        assert r.content_type == "application/geo+json"
        # Streamed as the rows arrive: chunked, no length known in advance.
        assert r.headers.get("Transfer-Encoding") == "chunked" and "Content-Length" not in r.headers
        fc = await r.json(content_type=None)
    assert len(fc["features"]) == 4

"""Invalid regions: a clear CLI error before anything is submitted, and, for a request that
reaches the bus anyway, a dead letter the scan's summary shows as its error (#10)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from amberscan import cli
from amberscan.common import topics
from amberscan.common.settings import Settings
from amberscan.v1 import messages_pb2 as pb
from tests.poison.conftest import running
from tests.streams import produce

BAD_GEOJSON = {
    "not json": "{type: Polygon",
    "a point": json.dumps({"type": "Point", "coordinates": [26.9, 51.3]}),
    "self-intersecting": json.dumps(
        {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]}
    ),
}


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--bbox", "179.5,10,-179.5,11"], "west < east"),  # across the antimeridian
        (["--bbox", "26.8,85.2,26.9,85.4"], "south < north <= 85.05"),  # beyond the mercator limit
        (["--bbox", "26.8,-86,26.9,-85.5"], "-85.05"),
        (["--bbox", "26.8,51.2,26.9"], "expected four numbers"),
    ],
)
def test_an_invalid_bbox_is_a_clear_cli_error(
    args: list[str], reason: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["scan", *args, "--provider", "demo"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("amberscan: error: ") and reason in err, err


@pytest.mark.parametrize("name", list(BAD_GEOJSON))
def test_an_invalid_geojson_is_a_clear_cli_error(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    region = tmp_path / "region.geojson"
    region.write_text(BAD_GEOJSON[name])
    assert cli.main(["scan", "--geojson", str(region), "--provider", "demo"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("amberscan: error: GeoJSON region") and "\n" == err[-1:], err


BAD_REQUESTS = {
    "across the antimeridian": (
        pb.ScanRequest(bbox=pb.BoundingBox(west=179.5, south=10, east=-179.5, north=11)),
        "west < east",
    ),
    "beyond 85 degrees": (
        pb.ScanRequest(bbox=pb.BoundingBox(west=26.8, south=85.2, east=26.9, north=85.4)),
        "south < north",
    ),
    "invalid GeoJSON": (pb.ScanRequest(geojson=BAD_GEOJSON["a point"]), "only Polygon"),
    "zoom out of range": (
        pb.ScanRequest(
            bbox=pb.BoundingBox(west=26.80, south=51.20, east=26.8001, north=51.2001), zoom=25
        ),
        "scan zoom 25",
    ),
    "fetch zoom out of range": (
        pb.ScanRequest(
            bbox=pb.BoundingBox(west=26.80, south=51.20, east=26.81, north=51.21),
            zoom=16,
            fetch_zoom=24,
        ),
        "fetch zoom 24",
    ),
}


@pytest.mark.stack
async def test_an_invalid_request_on_the_bus_ends_the_scan_with_its_reason(
    stack_settings: Settings,
) -> None:
    async with running(stack_settings) as pipeline:
        for name, (request, _) in BAD_REQUESTS.items():
            request.scan_id = f"bad-{name.replace(' ', '-')}"
            request.provider = "demo"
            await pipeline.db.execute(
                "INSERT INTO scans (scan_id, tiles_expected) VALUES (%s, 1)", request.scan_id
            )
            await produce(
                pipeline.settings,
                topics.SCAN_REQUESTS,
                [(request.scan_id.encode(), request.SerializeToString())],
            )

        async def all_ended() -> bool:
            for request, _ in BAD_REQUESTS.values():
                if not (await pipeline.progress(request.scan_id, 1)).error:
                    return False
            return True

        await pipeline.until("every bad request to end its scan", all_ended, timeout=120)
        summaries = {
            name: await pipeline.progress(request.scan_id, 1)
            for name, (request, _) in BAD_REQUESTS.items()
        }
        letters = await pipeline.letters(expect=len(BAD_REQUESTS))
        pipeline.check_alive()
    for name, (request, reason) in BAD_REQUESTS.items():
        summary = summaries[name]
        assert summary.complete and summary.error.startswith("tiler: "), (name, summary)
        assert request.scan_id in summary.error and reason in summary.error, (name, summary.error)
    assert {m.scan_id for m in letters} == {r.scan_id for r, _ in BAD_REQUESTS.values()}
    assert all(m.service == "tiler" and m.tile_id == "" for m in letters)

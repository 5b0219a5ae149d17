"""An output too large for its topic, through the running pipeline (#10).

With topics limited to 4 KiB (`AMBERSCAN_TOPIC_MAX_MESSAGE_BYTES`), a superpixel's feature
vector (1280 floats) cannot be produced: each such record must become a dead letter saying so,
not crash-loop the stage, and the tile must end failed with that reason. (Each output must
also fit in a producer batch the topic accepts: the broker checks max.message.bytes per record
batch.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from amberscan.common.settings import Settings, replace
from amberscan.tiler import demo
from amberscan.v1 import messages_pb2 as pb
from tests.pipeline.test_faults import tile_server
from tests.poison.conftest import running

pytestmark = pytest.mark.stack


async def test_an_output_too_large_for_its_topic_fails_the_tile(
    stack_settings: Settings, shared_data: Path
) -> None:
    tile = demo.demo_tiles()[0]
    west, south, east, north = tile.bounds()
    dx, dy = (east - west) / 4, (north - south) / 4
    async with tile_server(shared_data) as url:
        settings = replace(
            stack_settings, imagery={"demo_tiles_url": url}, kafka={"max_message_bytes": 4096}
        )
        async with running(settings) as pipeline:
            request = demo.demo_scan_request()
            request.bbox.CopyFrom(
                pb.BoundingBox(west=west + dx, south=south + dy, east=east - dx, north=north - dy)
            )
            summary = await pipeline.scan(request, timeout=300)
            letters = await pipeline.letters(expect=1)
            pipeline.check_alive()
    assert summary.complete and (summary.tiles, summary.failed) == (1, 1), summary
    [failure] = summary.failures
    assert failure["tile_id"] == tile.quadkey
    assert "max.message.bytes" in failure["reason"], failure["reason"]
    assert all("max.message.bytes" in m.reason for m in letters), [m.reason for m in letters]
    assert {m.tile_id for m in letters} == {tile.quadkey}

"""Poison on the bus, through the running pipeline (#10, "What to build" 3).

A malformed protobuf on each topic, and messages naming blobs the store does not have: each
ends as a dead letter from the stage that read it, with its reason and origin (topic, partition,
offset); a missing blob names its tile and scan, so the scan's progress shows the tile failed;
a malformed dead letter has nowhere further to go and is counted by the sink; every stage keeps
running.
"""

from __future__ import annotations

import pytest

from amberscan.common import metrics, topics
from amberscan.common.settings import Settings
from amberscan.geo.tiles import Tile
from amberscan.v1 import messages_pb2 as pb
from tests.poison.conftest import CONSUMER, running
from tests.streams import produce

pytestmark = pytest.mark.stack

GARBAGE = b"not a protobuf message"  # 'n' starts a field with an invalid wire type
MESSAGE = {
    topics.SCAN_REQUESTS: "ScanRequest",
    topics.TILES: "Tile",
    topics.SUPERPIXELS: "Superpixel",
    topics.FEATURES: "SuperpixelFeatures",
    topics.SCORES: "SuperpixelScore",
    topics.DETECTIONS: "Detection",
}
TILE = Tile(38012, 22100, 16)


async def test_a_malformed_message_on_each_topic_is_dead_lettered(
    stack_settings: Settings,
) -> None:
    unrecorded = metrics.UNRECORDED_DEAD_LETTERS._value.get()
    async with running(stack_settings) as pipeline:
        for topic in (*CONSUMER, topics.DEAD_LETTERS):
            await produce(pipeline.settings, topic, [(f"key-{topic}".encode(), GARBAGE)])
        letters = await pipeline.letters(expect=1 + len(CONSUMER))  # ours, and theirs
        await pipeline.until(
            "the sink to count the malformed dead letter",
            lambda: _counted(unrecorded),
        )
        pipeline.check_alive()
    mine = [letter for letter in letters if letter.value == GARBAGE]
    by_origin = {letter.origin_topic: letter for letter in mine}
    assert len(mine) == len(CONSUMER), [(m.origin_topic, m.reason) for m in mine]
    for topic, service in CONSUMER.items():
        name = topics.topic_name(stack_settings.kafka.topic_prefix, topic)
        letter = by_origin[name]
        assert letter.service == service, (topic, letter.service)
        assert f"not a {MESSAGE[topic]} message" in letter.reason, letter.reason
        assert letter.reason.startswith(f"{name}/{letter.origin_partition}@{letter.origin_offset}")
        assert letter.key == f"key-{topic}".encode()


async def _counted(before: float) -> bool:
    return bool(metrics.UNRECORDED_DEAD_LETTERS._value.get() > before)


async def test_messages_naming_missing_blobs_fail_their_tiles(stack_settings: Settings) -> None:
    missing = "tiles/00/" + "0" * 64 + ".png"
    other_image = "tiles/11/" + "1" * 64 + ".png"
    tile = pb.Tile(
        tile_id=TILE.quadkey,
        scan_id="s-missing",
        tile=pb.TileCoord(z=TILE.z, x=TILE.x, y=TILE.y, quadkey=TILE.quadkey),
        provider="demo",
        image_key=missing,
        width=1024,
        height=1024,
        tiles_expected=2,
    )
    other = Tile(38013, 22100, 16)
    superpixel = pb.Superpixel(
        ref=pb.SuperpixelRef(
            tile_id=other.quadkey,
            scan_id="s-missing",
            tile=pb.TileCoord(z=other.z, x=other.x, y=other.y, quadkey=other.quadkey),
            segment_index=0,
            segment_count=1,
            image_key=other_image,  # the feature stage cuts the crop from the tile
            image_width=1024,
            image_height=1024,
            bbox=pb.PixelBox(row0=0, col0=0, row1=10, col1=10),
            area_px=100,
        ),
    )
    async with running(stack_settings) as pipeline:
        await pipeline.db.execute(
            "INSERT INTO scans (scan_id, tiles_expected) VALUES ('s-missing', 2)"
        )
        await produce(
            pipeline.settings, topics.TILES, [(TILE.quadkey.encode(), tile.SerializeToString())]
        )
        await produce(
            pipeline.settings,
            topics.SUPERPIXELS,
            [(other.quadkey.encode(), superpixel.SerializeToString())],
        )

        async def both_failed() -> bool:
            return (await pipeline.progress("s-missing", 2)).complete

        await pipeline.until("both tiles failed", both_failed)
        summary = await pipeline.progress("s-missing", 2)
        letters = await pipeline.letters(expect=2)
        pipeline.check_alive()
    assert (summary.done, summary.failed) == (0, 2), summary
    reasons = {f["tile_id"]: f["reason"] for f in summary.failures}
    assert reasons[TILE.quadkey].startswith("segmenter: ") and missing in reasons[TILE.quadkey]
    assert reasons[other.quadkey].startswith("feature: ") and other_image in reasons[other.quadkey]
    assert "not found" in reasons[TILE.quadkey] and "not found" in reasons[other.quadkey]
    assert {(m.service, m.tile_id, m.scan_id) for m in letters} == {
        ("segmenter", TILE.quadkey, "s-missing"),
        ("feature", other.quadkey, "s-missing"),
    }

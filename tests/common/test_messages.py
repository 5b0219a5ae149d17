"""Round trips of the bus messages: what a producer writes, a consumer reads back unchanged."""

import pytest
from google.protobuf.message import DecodeError

from amberscan.v1 import messages_pb2 as pb


def _ref() -> pb.SuperpixelRef:
    return pb.SuperpixelRef(
        tile_id="1202032113220312",
        scan_id="scan-1",
        tile=pb.TileCoord(z=16, x=38012, y=22100, quadkey="1202032113220312"),
        provider="demo",
        imagery_date="2015-10-05",
        image_key="tiles/ab/" + "ab" * 32 + ".png",
        image_width=1024,
        image_height=1024,
        segment_index=7,
        segment_count=29,
        bbox=pb.PixelBox(row0=10, col0=20, row1=210, col1=250),
        area_px=31_415,
        mask_rle=b"\x00\x05\x03",
    )


@pytest.mark.parametrize(
    "message",
    [
        pb.ScanRequest(
            scan_id="s",
            bbox=pb.BoundingBox(west=26.6, south=50.7, east=26.7, north=50.8),
            zoom=16,
            fetch_zoom=18,
            provider="xyz",
        ),
        pb.ScanRequest(scan_id="s", geojson='{"type":"Polygon","coordinates":[]}', provider="bing"),
        pb.Tile(
            tile_id="12020321",
            tile=pb.TileCoord(z=8, x=1, y=2, quadkey="12020321"),
            image_key="k",
            imagery_date="2014-10-11",
        ),
        pb.Superpixel(ref=_ref(), segmenter="slic-reference"),
        pb.SuperpixelFeatures(
            ref=_ref(), vector=[0.5, -1.25, 3.0], backbone="efficientnet_lite0/1"
        ),
        pb.SuperpixelScore(
            ref=_ref(),
            score=0.75,
            positive=True,
            threshold=0.5,
            models=pb.ModelVersions(backbone="b/1", classifier="c/2"),
        ),
        pb.Detection(
            tile_id="q",
            flagged=True,
            positives=3,
            hectares=1.5,
            scores=[0.1, 0.9],
            models=pb.ModelVersions(classifier="c"),
        ),
        pb.DeadLetter(
            reason="tile q: PNG truncated",
            origin_topic="tiles",
            origin_partition=1,
            origin_offset=42,
            value=b"\xff",
        ),
    ],
)
def test_round_trip(message) -> None:  # type: ignore[no-untyped-def]
    decoded = type(message).FromString(message.SerializeToString())
    assert decoded == message


def test_messages_carry_no_image_bytes() -> None:
    # Blobs travel by key; only the dead letter may carry raw (poison) bytes.
    for name, descriptor in pb.DESCRIPTOR.message_types_by_name.items():
        if name == "DeadLetter":
            continue
        for field in descriptor.fields:
            assert not (field.type == field.TYPE_BYTES and "image" in field.name), name


def test_truncated_message_does_not_parse() -> None:
    data = pb.Superpixel(ref=_ref(), segmenter="slic-fast").SerializeToString()
    with pytest.raises(DecodeError):
        pb.Superpixel.FromString(data[:40])  # cut inside the nested ref

import pytest

from amberscan.errors import InvalidRegion
from amberscan.scanning import region_tiles, summarize
from amberscan.v1 import messages_pb2 as pb


def test_summary_counts_each_outcome() -> None:
    rows = [
        ("a", "done", True, 1.5, ""),
        ("b", "done", False, 0.0, ""),
        ("c", "skipped", True, 2.0, ""),
        ("d", "failed", False, 0.0, "segmenter: PNG truncated"),
    ]
    summary = summarize("s", 4, rows, 3.0)
    assert (summary.done, summary.skipped, summary.failed, summary.flagged) == (2, 1, 1, 2)
    assert summary.hectares == 3.5 and summary.complete
    assert summary.failures == [{"tile_id": "d", "reason": "segmenter: PNG truncated"}]
    assert [v["tile_id"] for v in summary.verdicts] == ["a", "b", "c", "d"]


def test_incomplete_until_every_tile_reported() -> None:
    assert not summarize("s", 3, [("a", "done", True, 1.0, "")], 1.0).complete


def test_request_failure_completes_with_error() -> None:
    summary = summarize("s", 3, [("", "failed", False, 0.0, "tiler: invalid region")], 1.0)
    assert summary.complete and "invalid region" in summary.error


def test_region_tiles_of_a_request() -> None:
    request = pb.ScanRequest(
        scan_id="s", zoom=16, bbox=pb.BoundingBox(west=26.86, south=51.29, east=26.87, north=51.30)
    )
    tiles = region_tiles(request)
    assert 6 <= len(tiles) <= 16 and all(t.z == 16 for t in tiles)
    with pytest.raises(InvalidRegion, match="no bbox"):
        region_tiles(pb.ScanRequest(scan_id="s"))

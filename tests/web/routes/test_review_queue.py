"""The review queue against the real stack: its order follows `queue.py`'s rule on the stored
scores, its filters, and what leaves and joins it (a verdict, another model, a new vintage)."""

from __future__ import annotations

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from amberscan.geo.tiles import Tile
from amberscan.v1 import messages_pb2 as pb
from amberscan.web import queue
from amberscan.web.core import implied_threshold
from tests.web import client
from tests.web.client import AUTH, get, post
from tests.web.conftest import Seeded
from tests.web.routes.test_changes import upsert

pytestmark = pytest.mark.stack


def expected_order(seeded: Seeded, names: list[str]) -> list[str]:
    """The rule applied to the seeded detections (none in the registry: implied thresholds)."""
    tiles = []
    for name in names:
        d = seeded.tiles[name]
        tiles.append(
            queue.Candidate(
                d.tile_id, d.imagery_date, d.models.classifier, d.flagged, list(d.scores),
                implied_threshold(list(d.scores), d.positives), d.min_positives,
            )
        )  # fmt: skip
    return [t.tile_id for t, _ in queue.order(tiles)]


async def test_the_queue_follows_its_rule_and_filters(server: str, seeded: Seeded) -> None:
    url = f"{server}/api/review-queue"
    status, answer = await get(url)
    assert status == 200, answer
    assert "decisive score" in answer["rule"] and answer["matched"] == 4
    tiles = answer["tiles"]
    assert [t["tile_id"] for t in tiles] == expected_order(seeded, list(seeded.tiles))
    priorities = [t["priority"] for t in tiles]
    assert priorities == sorted(priorities, reverse=True)
    flagged = [t for t in tiles if t["flagged"]]
    assert len(flagged) == 2 and all("flagged, nobody" in " ".join(t["reasons"]) for t in flagged)
    assert all(t["previous"] is None and t["other_model"] == "" for t in tiles)

    _, one = await get(url, limit="1")
    assert len(one["tiles"]) == 1 and one["matched"] == 4
    _, vintage = await get(url, year="2014")
    assert {t["tile_id"] for t in vintage["tiles"]} == {
        seeded.tiles[n].tile_id for n in ("positive1", "negative1")
    }
    _, scan = await get(url, scan="scan-test")
    assert scan["matched"] == 4
    _, other = await get(url, scan="another-scan")
    assert other["matched"] == 0
    target = seeded.tiles["negative2"]
    west, south, east, north = Tile(target.tile.x, target.tile.y, target.tile.z).bounds()
    inside = f"{west + 1e-4},{south + 1e-4},{east - 1e-4},{north - 1e-4}"
    _, region = await get(url, bbox=inside)
    assert [t["tile_id"] for t in region["tiles"]] == [target.tile_id]
    for bad in ({"limit": "0"}, {"scan": "<x>"}, {"bbox": "1,2,3"}, {"year": "20x4"}):
        status, error = await get(url, **bad)
        assert status == 400 and error["error"], bad


async def test_verdicts_models_and_vintages_move_tiles(server: str, seeded: Seeded) -> None:
    url = f"{server}/api/review-queue"
    rejected = seeded.tiles["positive1"]
    body = {**client.target(rejected), "verdict": "rejected", "reviewer": "ana"}
    assert (await post(f"{server}/api/reviews", body, AUTH))[0] == 200
    _, answer = await get(url)
    assert answer["matched"] == 3 and rejected.tile_id not in [
        t["tile_id"] for t in answer["tiles"]
    ]

    later = Timestamp()
    later.GetCurrentTime()
    # A candidate model's replay flags negative1 (the current model did not): it disagrees.
    replay = pb.Detection()
    replay.CopyFrom(seeded.tiles["negative1"])
    replay.models.classifier, replay.flagged, replay.positives = "clf-candidate", True, 3
    replay.detected_at.CopyFrom(later)
    await upsert(seeded, replay)
    # negative2 on 2017 imagery, flagged: its previous vintage (2016) was not.
    newer = pb.Detection()
    newer.CopyFrom(seeded.tiles["negative2"])
    newer.imagery_date, newer.flagged, newer.positives = "2017-07-01", True, 3
    await upsert(seeded, newer)
    # positive1 flagged again by a later model after its rejection: reflagged, back in the queue.
    again = pb.Detection()
    again.CopyFrom(rejected)
    again.models.classifier = "clf-candidate"
    again.detected_at.CopyFrom(later)
    await upsert(seeded, again)

    _, answer = await get(url)
    shown = {t["tile_id"]: t for t in answer["tiles"]}
    assert answer["matched"] == 4
    candidate = shown[replay.tile_id]
    assert (
        candidate["model_version"] == "clf-candidate" and candidate["other_model"] == "clf-test-1"
    )
    assert candidate["other_flagged"] is False
    assert "another model disagrees on the flag" in candidate["reasons"]
    vintage = shown[newer.tile_id]
    assert vintage["imagery_date"] == "2017-07-01"
    assert vintage["previous"] == {
        "imagery_date": "2016-04-20", "model_version": "clf-test-1", "flagged": False,
    }  # fmt: skip
    assert "the previous vintage disagrees on the flag" in vintage["reasons"]
    back = shown[rejected.tile_id]
    assert back["review"] == "reflagged"
    assert "rejected by a reviewer, flagged again by a later model" in back["reasons"]
    # The disputed flagged tiles first: 1 + 1 + closeness 1 (its implied threshold is its
    # decisive score), then 1 + 0.5 + 1; the others at most 1 + 1.
    order = [t["tile_id"] for t in answer["tiles"]]
    assert order[:2] == [replay.tile_id, newer.tile_id]


async def test_the_review_page_is_served(server: str) -> None:
    from tests.web.client import fetch

    status, body, kind = await fetch(f"{server}/review")
    assert status == 200 and kind == "text/html"
    assert "/static/review.js" in body and 'id="current"' in body

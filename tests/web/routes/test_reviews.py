"""Reviews against the real stack: the token, verdicts and what they change."""

from __future__ import annotations

import pytest

from amberscan.common.settings import Settings
from amberscan.web.app import make_app
from tests.web import client
from tests.web.client import AUTH, get, post
from tests.web.conftest import BBOX, MODEL, Seeded

pytestmark = pytest.mark.stack


async def test_writes_need_the_token(server: str, seeded: Seeded) -> None:
    target = seeded.tiles["positive1"]
    body = {
        **client.target(target),
        "verdict": "confirmed",
    }
    status, answer = await post(f"{server}/api/reviews", body)
    assert status == 401 and "Bearer" in answer["error"]
    status, _ = await post(f"{server}/api/reviews", body, {"Authorization": "Bearer wrong"})
    assert status == 401
    status, _ = await post(f"{server}/api/audits", {"n": 2})
    assert status == 401


async def test_writes_refused_without_configured_token(seeded: Seeded) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    async with TestClient(TestServer(make_app(seeded.settings))) as client:
        r = await client.post("/api/reviews", json={}, headers=AUTH)
        assert r.status == 403
        assert "AMBERSCAN_WEB_TOKEN" in (await r.json())["error"]


async def test_review_changes_summary_and_state(server: str, seeded: Seeded) -> None:
    _, before = await get(f"{server}/api/summary")
    assert before["tiles"] == 4 and before["flagged"] == 2
    assert before["hectares"] == pytest.approx(15.0)
    assert set(before["by_year"]) == {"2014", "2015", "2016"}
    assert before["reviews"]["unreviewed_flagged"] == 2 and before["demo"] == 4
    target = seeded.tiles["positive1"]
    body = {
        **client.target(target),
        "verdict": "rejected",
        "reviewer": "ana",
    }
    status, saved = await post(f"{server}/api/reviews", body, AUTH)
    assert status == 200 and saved["review"] == "rejected" and saved["reviewer"] == "ana"
    _, after = await get(f"{server}/api/summary")
    assert after["reviews"] == {
        "confirmed": 0,
        "rejected": 1,
        "reflagged": 0,
        "unreviewed_flagged": 1,
        "confirmed_hectares": 0.0,
    }
    _, fc = await get(f"{server}/api/detections", bbox=BBOX)
    states = {f["properties"]["tile_id"]: f["properties"]["review"] for f in fc["features"]}
    assert states[target.tile_id] == "rejected"
    assert list(states.values()).count("unreviewed") == 3
    status, bad = await post(f"{server}/api/reviews", {**body, "verdict": "maybe"}, AUTH)
    assert status == 400 and "verdict" in bad["error"]
    status, bad = await post(f"{server}/api/reviews", {**body, "tile_id": "<script>"}, AUTH)
    assert status == 400


async def test_a_review_survives_a_model_change_and_a_rejection_flagged_again_shows(
    server: str, seeded: Seeded
) -> None:
    """A review belongs to the tile's imagery, not to the model: under the next model the map
    still shows it, and a tile a reviewer rejected that the new model flags again is shown as
    such (a filter, and a count in the summary)."""
    from google.protobuf.timestamp_pb2 import Timestamp

    from amberscan.sink.core import UPSERT_DETECTION, detection_row

    rejected, confirmed = seeded.tiles["positive1"], seeded.tiles["positive2"]
    for target, verdict in ((rejected, "rejected"), (confirmed, "confirmed")):
        body = {**client.target(target), "verdict": verdict, "reviewer": "ana"}
        status, _ = await post(f"{server}/api/reviews", body, AUTH)
        assert status == 200
    # A replay with a new model: both tiles flagged again, as new rows beside the old ones.
    later = Timestamp()
    later.GetCurrentTime()
    async with seeded.db.pool.connection() as conn:
        for target in (rejected, confirmed):
            again = type(target)()
            again.CopyFrom(target)
            again.models.classifier = "clf-test-2"
            again.scan_id = "replay-clf-test-2"
            again.detected_at.CopyFrom(later)
            await conn.execute(UPSERT_DETECTION.encode(), detection_row(again))
    _, fc = await get(f"{server}/api/detections", bbox=BBOX)
    shown = {f["properties"]["tile_id"]: f["properties"] for f in fc["features"]}
    assert shown[rejected.tile_id]["model_version"] == "clf-test-2"  # the newest run shows
    assert shown[rejected.tile_id]["review"] == "reflagged"
    assert shown[rejected.tile_id]["reviewed_model"] == MODEL
    assert shown[confirmed.tile_id]["review"] == "confirmed"
    _, summary = await get(f"{server}/api/summary")
    assert summary["reviews"]["reflagged"] == 1
    assert summary["reviews"]["confirmed"] == 1
    _, only = await get(f"{server}/api/detections", bbox=BBOX, review="reflagged")
    assert [f["properties"]["tile_id"] for f in only["features"]] == [rejected.tile_id]
    # Under the model the reviewer saw, the verdict is as it was.
    _, old = await get(f"{server}/api/detections", bbox=BBOX, model=MODEL)
    states = {f["properties"]["tile_id"]: f["properties"]["review"] for f in old["features"]}
    assert states[rejected.tile_id] == "rejected"
    # The history of the tile's imagery lists the verdicts with the model each was made on.
    _, history = await get(f"{server}/api/tiles/{rejected.tile_id}/history")
    assert [(e["action"], e["model_version"]) for e in history["events"]] == [("rejected", MODEL)]
    assert history["state"] == "reflagged"


def test_settings_default_has_no_token() -> None:
    assert Settings().web.token == ""


async def test_review_history_keeps_every_action_and_the_latest_decides(
    server: str, seeded: Seeded
) -> None:
    target = seeded.tiles["positive2"]
    base = client.target(target)
    for verdict, who in (
        ("confirmed", "ana"),
        ("rejected", "bo"),
        ("clear", "ana"),
        ("confirmed", "cy"),
    ):
        status, _ = await post(
            f"{server}/api/reviews", {**base, "verdict": verdict, "reviewer": who}, AUTH
        )
        assert status == 200
    status, _ = await post(
        f"{server}/api/labels", {**base, "segment": 3, "label": "mining", "reviewer": "bo"}, AUTH
    )
    assert status == 200
    q = {"imagery_date": target.imagery_date, "model": MODEL}
    status, history = await get(f"{server}/api/tiles/{target.tile_id}/history", **q)
    assert status == 200 and history["current"] == "confirmed"
    assert [(e["action"], e["reviewer"], e["segment"]) for e in history["events"]] == [
        ("confirmed", "ana", None),
        ("rejected", "bo", None),
        ("cleared", "ana", None),
        ("confirmed", "cy", None),
        ("mining", "bo", 3),
    ]
    times = [e["at"] for e in history["events"]]
    assert times == sorted(times)
    _, detail = await get(f"{server}/api/tiles/{target.tile_id}", **q)
    assert detail["review"] == "confirmed" and detail["reviewer"] == "cy"  # the latest decides


async def test_reject_and_mark_positives_not_mining_feeds_training(
    server: str, seeded: Seeded
) -> None:
    from amberscan.web import review_queries

    target = seeded.tiles["positive1"]
    base = client.target(target)
    status, bad = await post(
        f"{server}/api/reviews", {**base, "verdict": "confirmed", "mark_not_mining": True}, AUTH
    )
    assert status == 400 and "rejected" in bad["error"]
    status, saved = await post(
        f"{server}/api/reviews",
        {**base, "verdict": "rejected", "mark_not_mining": True, "reviewer": "ana"},
        AUTH,
    )
    assert status == 200 and saved["review"] == "rejected"
    # No classifier of that version is published: the threshold is the one its scores imply,
    # so exactly the stored positives are marked.
    expected = sorted(range(len(target.scores)), key=lambda i: -target.scores[i])[
        : target.positives
    ]
    assert sorted(saved["marked_not_mining"]) == sorted(expected)
    reviewed = await review_queries.reviewed_superpixels(seeded.db)
    assert {(r.segment_index, r.label) for r in reviewed} == {(i, 0) for i in expected}
    q = {"imagery_date": target.imagery_date, "model": MODEL}
    _, history = await get(f"{server}/api/tiles/{target.tile_id}/history", **q)
    actions = [(e["action"], e["segment"]) for e in history["events"]]
    assert actions[0] == ("rejected", None)
    assert sorted(s for a, s in actions[1:] if a == "not_mining") == sorted(expected)
    _, detail = await get(f"{server}/api/tiles/{target.tile_id}", **q)
    labels = {sp["index"]: sp["label"] for sp in detail["superpixels"]}
    assert {i for i, lab in labels.items() if lab == "not_mining"} == set(expected)


async def test_a_verdict_says_what_it_replaced(server: str, seeded: Seeded) -> None:
    """The answer to a verdict carries the earlier verdict (who, note, when) and each marked
    superpixel's earlier label: what an undo puts back instead of clearing."""
    target = seeded.tiles["positive1"]
    base = client.target(target)
    status, first = await post(
        f"{server}/api/reviews",
        {**base, "verdict": "confirmed", "reviewer": "bo", "note": "pit"},
        AUTH,
    )
    assert status == 200 and first["previous"] is None
    strongest = max(range(len(target.scores)), key=lambda i: target.scores[i])
    status, _ = await post(
        f"{server}/api/labels",
        {**base, "segment": strongest, "label": "mining", "reviewer": "bo"},
        AUTH,
    )
    assert status == 200
    status, second = await post(
        f"{server}/api/reviews",
        {**base, "verdict": "rejected", "mark_not_mining": True, "reviewer": "ana"},
        AUTH,
    )
    assert status == 200
    before = second["previous"]
    assert (before["verdict"], before["reviewer"], before["note"]) == ("confirmed", "bo", "pit")
    assert before["reviewed_at"] == first["reviewed_at"]
    labels = second["previous_labels"]
    assert set(labels) == {str(i) for i in second["marked_not_mining"]}
    assert labels[str(strongest)] == "mining"
    assert all(v is None for k, v in labels.items() if k != str(strongest))

"""The web API against the real stack: GeoJSON, CSV, paging, validation, auth, reviews, audits."""

from __future__ import annotations

import csv
import io
from typing import Any

import aiohttp
import pytest

from amberscan.common.settings import Settings
from amberscan.web import queries
from amberscan.web.app import make_app
from tests.web.conftest import BBOX, MODEL, TOKEN, Seeded

pytestmark = pytest.mark.stack
AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def get(url: str, **params: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.get(url, params=params) as r:
        body = await r.json() if "json" in r.content_type else await r.text()
        return r.status, body


async def post(url: str, body: object, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.post(url, json=body, headers=headers or {}) as r:
        return r.status, await r.json()


async def test_detections_geojson(server: str, seeded: Seeded) -> None:
    status, fc = await get(f"{server}/api/detections", bbox=BBOX)
    assert status == 200
    assert fc["type"] == "FeatureCollection"
    assert fc["numberMatched"] == 4 and len(fc["features"]) == 4
    by_tile = {f["properties"]["tile_id"]: f for f in fc["features"]}
    positive = by_tile[seeded.tiles["positive1"].tile_id]
    assert positive["geometry"]["type"] == "Polygon"
    ring = positive["geometry"]["coordinates"][0]
    assert ring[0] == ring[-1] and len(ring) == 5
    props = positive["properties"]
    assert props["flagged"] is True and props["positives"] == 5
    assert props["demo"] is True and props["review"] == "unreviewed"
    assert props["model_version"] == MODEL and props["imagery_date"] == "2014-10-11"
    assert len(props["scores"]) == props["segment_count"]
    assert not by_tile[seeded.tiles["negative1"].tile_id]["properties"]["flagged"]


async def test_detections_filters_and_paging(server: str) -> None:
    pages, offset = [], 0
    while offset is not None:
        _, fc = await get(f"{server}/api/detections", bbox=BBOX, limit="3", offset=str(offset))
        pages.append(fc["features"])
        offset = fc["next_offset"]
    assert [len(p) for p in pages] == [3, 1]
    assert len({f["id"] for p in pages for f in p}) == 4
    _, fc = await get(f"{server}/api/detections", bbox=BBOX, year="2014")
    assert {f["properties"]["year"] for f in fc["features"]} == {"2014"} and len(
        fc["features"]
    ) == 2
    _, fc = await get(f"{server}/api/detections", bbox=BBOX, model="other-model")
    assert fc["features"] == []
    # A bbox away from the tiles finds nothing.
    _, fc = await get(f"{server}/api/detections", bbox="10,10,11,11")
    assert fc["numberMatched"] == 0


@pytest.mark.parametrize(
    ("bbox", "words"),
    [
        ("", "required"),
        ("1,2,3", "four numbers"),
        ("a,b,c,d", "four numbers"),
        ("10,0,5,1", "west must be less than east"),
        ("0,5,1,2", "south must be less than north"),
        ("0,0,nan,1", "finite"),
    ],
)
async def test_bad_bbox_is_400(server: str, bbox: str, words: str) -> None:
    status, body = await get(f"{server}/api/detections", bbox=bbox)
    assert status == 400
    assert words in body["error"]


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
        fc = await r.json(content_type=None)
    assert len(fc["features"]) == 4


async def test_writes_need_the_token(server: str, seeded: Seeded) -> None:
    target = seeded.tiles["positive1"]
    body = {
        "tile_id": target.tile_id,
        "imagery_date": target.imagery_date,
        "model_version": MODEL,
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
        "tile_id": target.tile_id,
        "imagery_date": target.imagery_date,
        "model_version": MODEL,
        "verdict": "rejected",
        "reviewer": "ana",
    }
    status, saved = await post(f"{server}/api/reviews", body, AUTH)
    assert status == 200 and saved["review"] == "rejected" and saved["reviewer"] == "ana"
    _, after = await get(f"{server}/api/summary")
    assert after["reviews"] == {
        "confirmed": 0,
        "rejected": 1,
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


async def test_relabel_superpixel_and_reviewed_superpixels(server: str, seeded: Seeded) -> None:
    target = seeded.tiles["positive2"]
    base = {"tile_id": target.tile_id, "imagery_date": target.imagery_date, "model_version": MODEL}
    # By pixel position: the label image says which superpixel is there.
    status, a = await post(
        f"{server}/api/labels", {**base, "row": 10, "col": 10, "label": "mining"}, AUTH
    )
    assert status == 200
    status, b = await post(
        f"{server}/api/labels", {**base, "segment": 7, "label": "not_mining"}, AUTH
    )
    assert status == 200 and b["segment"] == 7
    status, _ = await post(
        f"{server}/api/labels", {**base, "segment": 999, "label": "mining"}, AUTH
    )
    assert status == 400
    q = {"imagery_date": target.imagery_date, "model": MODEL}
    _, hit = await get(f"{server}/api/tiles/{target.tile_id}/segment", row="10", col="10", **q)
    assert hit == {"segment": a["segment"], "score": hit["score"], "label": "mining"}
    reviewed = await queries.reviewed_superpixels(seeded.db)
    assert {(r.segment_index, r.label) for r in reviewed} == {(a["segment"], 1), (7, 0)}
    assert all(
        r.image_key == target.image_key and r.labels_key == target.labels_key for r in reviewed
    )
    _, detail = await get(f"{server}/api/tiles/{target.tile_id}", **q)
    assert detail["superpixels"][7]["label"] == "not_mining"
    assert detail["backbone_version"] == "efficientnet_lite0@1"
    assert "more than 2" in detail["rule"]


async def test_overlay_png(server: str, seeded: Seeded) -> None:
    from PIL import Image

    target = seeded.tiles["positive1"]
    for view, size in (("scores", None), ("labels", None), ("image", "128")):
        params = {"imagery_date": target.imagery_date, "model": MODEL, "view": view}
        if size:
            params["size"] = size
        async with (
            aiohttp.ClientSession() as s,
            s.get(f"{server}/api/tiles/{target.tile_id}/overlay.png", params=params) as r,
        ):
            assert r.status == 200 and r.content_type == "image/png"
            image = Image.open(io.BytesIO(await r.read()))
        assert image.size == ((998, 975) if size is None else (128, 125))
    status, body = await get(f"{server}/api/tiles/nope/overlay.png")
    assert status == 404


async def test_audit_precision_interval(server: str, seeded: Seeded) -> None:
    status, audit = await post(f"{server}/api/audits", {"n": 10}, AUTH)
    assert status == 201
    assert audit["sampled"] == 2 and audit["reviewed"] == 0
    assert audit["precision"] is None and audit["ci95"] is None
    for tile, verdict in zip(audit["tiles"], ("confirmed", "rejected"), strict=True):
        status, _ = await post(
            f"{server}/api/reviews",
            {
                "tile_id": tile["tile_id"],
                "imagery_date": tile["imagery_date"],
                "model_version": tile["model_version"],
                "verdict": verdict,
            },
            AUTH,
        )
        assert status == 200
    status, report = await get(f"{server}/api/audits/{audit['id']}")
    assert status == 200 and report["complete"] and report["reviewed"] == 2
    assert report["precision"] == 0.5
    low, high = report["ci95"]
    assert low == pytest.approx(0.0945, abs=1e-3) and high == pytest.approx(0.9055, abs=1e-3)
    status, bad = await post(f"{server}/api/audits", {"n": 0}, AUTH)
    assert status == 400
    status, _ = await get(f"{server}/api/audits/999999")
    assert status == 404


async def test_explore_without_features_says_so(server: str, seeded: Seeded) -> None:
    # The seeded detections put nothing on the features topic: an empty plot that says why.
    status, data = await get(f"{server}/api/explore")
    assert status == 200 and data["scan_id"] == "scan-test" and data["points"] == []
    assert "no superpixel features of scan scan-test" in data["about"]


async def test_pages_are_served(server: str, seeded: Seeded) -> None:
    tile = seeded.tiles["positive1"].tile_id
    for path in (
        "/",
        "/explore",
        f"/tile/{tile}",
        f"/label/{tile}",
        "/static/vendor/leaflet/leaflet.js",
    ):
        async with aiohttp.ClientSession() as s, s.get(server + path) as r:
            assert r.status == 200, path
            assert "script-src 'self'" in r.headers["Content-Security-Policy"]


def test_settings_default_has_no_token() -> None:
    assert getattr(Settings(), "web_token", "") == ""


async def test_a_newer_model_supersedes_on_the_map_unless_a_model_is_chosen(
    server: str, seeded: Seeded
) -> None:
    from amberscan.sink.core import UPSERT_DETECTION, detection_row
    from amberscan.v1 import messages_pb2 as pb

    old = seeded.tiles["positive1"]
    newer = pb.Detection()
    newer.CopyFrom(old)
    newer.models.classifier = "clf-test-2"
    newer.flagged, newer.positives, newer.hectares = False, 1, 0.0
    async with seeded.db.pool.connection() as conn:  # written after the seed: the latest run
        await conn.execute(UPSERT_DETECTION.encode(), detection_row(newer))

    status, latest = await get(f"{server}/api/detections", bbox=BBOX)
    assert status == 200 and len(latest["features"]) == 4  # one verdict per tile
    mine = [f for f in latest["features"] if f["properties"]["tile_id"] == old.tile_id]
    assert [f["properties"]["model_version"] for f in mine] == ["clf-test-2"]
    assert mine[0]["properties"]["flagged"] is False

    status, chosen = await get(f"{server}/api/detections", bbox=BBOX, model=MODEL)
    mine = [f for f in chosen["features"] if f["properties"]["tile_id"] == old.tile_id]
    assert [f["properties"]["model_version"] for f in mine] == [MODEL]
    assert mine[0]["properties"]["flagged"] is True


async def test_debugger_threshold_comes_from_the_registry(server: str, seeded: Seeded) -> None:
    import numpy as np

    from amberscan.common.registry import publish
    from amberscan.model.classifier import train_classifier

    tile = seeded.tiles["positive1"].tile_id
    _, before = await get(f"{server}/api/tiles/{tile}")
    assert before["threshold_source"] == "implied"  # nothing published for clf-test-1 yet

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(int)
    classifier, _, _ = train_classifier(x, y, [f"t{i % 12}" for i in range(60)], folds=3)
    classifier.metadata["version"] = MODEL
    classifier.threshold = 0.8123
    await publish(seeded.settings, classifier)
    _, after = await get(f"{server}/api/tiles/{tile}")  # a miss is not remembered: found now
    assert after["threshold_source"] == "registry" and after["threshold"] == pytest.approx(0.8123)
    positive = [s["index"] for s in after["superpixels"] if s["positive"]]
    assert positive == [s["index"] for s in after["superpixels"] if s["score"] >= 0.8123]

"""The explore API against the real stack: a scan's features read back from the features topic,
a small labelled set through the model server, crops for the tooltips."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from amberscan.common import features_reader, topics
from amberscan.common.db import Database
from amberscan.common.served_features import client_for, extract, served_backbone
from amberscan.common.settings import Settings, replace
from amberscan.model.dataset import list_labelled
from amberscan.v1 import messages_pb2 as pb
from amberscan.vision.crops import load_crop
from amberscan.web.app import make_app
from tests import streams
from tests.web.client import fetch, get
from tests.web.conftest import TOKEN, Seeded
from tests.web.scan_features import produce_scan_features, publish_classifier

pytestmark = pytest.mark.stack
DIGEST = "ab" + "0" * 62


async def test_explore_without_features_says_so(server: str, seeded: Seeded) -> None:
    # The seeded detections put nothing on the features topic: an empty plot that says why.
    status, data = await get(f"{server}/api/explore")
    assert status == 200 and data["scan_id"] == "scan-test" and data["points"] == []
    assert "no superpixel features of scan scan-test" in data["about"]


async def test_explore_page_is_served(server: str) -> None:
    async with aiohttp.ClientSession() as s, s.get(server + "/explore") as r:
        assert r.status == 200
        assert "script-src 'self'" in r.headers["Content-Security-Policy"]


@asynccontextmanager
async def serve(settings: Settings) -> AsyncIterator[str]:
    async with streams.served(make_app(settings)) as base:
        yield base


def web_settings(settings: Settings, **explore: object) -> Settings:
    # Patient with the model server, which may restart while its model is rebuilt.
    return replace(settings, web={"token": TOKEN}, retry={"backoff_s": 1.0}, explore=explore)


async def test_scan_features_projected_with_outcomes(seeded: Seeded) -> None:
    messages = await produce_scan_features(seeded)
    # Another scan's superpixel on the same topic is not plotted.
    other = pb.SuperpixelFeatures()
    other.CopyFrom(messages[0])
    other.ref.scan_id = "another-scan"
    await streams.produce(seeded.settings, topics.FEATURES, [(b"x", other.SerializeToString())])
    # A person labelled superpixel 0 of positive1 as mining: its point gets TP or FN.
    labelled = seeded.tiles["positive1"]
    await seeded.db.execute(
        "INSERT INTO superpixel_labels (labels_key, segment_index, image_key, tile_id, "
        "imagery_date, label, reviewer) VALUES (%s, 0, %s, %s, %s, 1, 'test')",
        labelled.labels_key,
        labelled.image_key,
        labelled.tile_id,
        labelled.imagery_date,
    )
    async with serve(web_settings(seeded.settings)) as base:
        status, data, _ = await fetch(f"{base}/api/explore", scan_id="scan-test")
        assert status == 200, data
        assert isinstance(data, dict)
        assert data["n"] == len(messages) == 12 and data["method"] == "PCA"
        assert data["about"].startswith(
            f"PCA of 12 superpixel feature vectors from backbone {messages[0].backbone}, "
            "scan scan-test"
        )
        by_key = {(p["tile_id"], p["segment_index"]): p for p in data["points"]}
        assert set(by_key) == {(m.ref.tile_id, m.ref.segment_index) for m in messages}
        for p in data["points"]:
            assert 0 <= p["x"] <= 1 and 0 <= p["y"] <= 1 and 0 <= p["score"] <= 1
            assert p["link"].startswith(f"/tile/{p['tile_id']}?imagery_date=")
        mark = by_key[(labelled.tile_id, 0)]
        assert mark["class"] == "mining" and mark["outcome"] in ("TP", "FN")
        others = [p for k, p in by_key.items() if k != (labelled.tile_id, 0)]
        assert {p["class"] for p in others} == {"unlabelled"}
        assert {p["outcome"] for p in others} <= {"positive", "negative"}

        # Without scan_id: the latest scan, here the seeded detections' scan.
        status, latest, _ = await fetch(f"{base}/api/explore")
        assert status == 200 and isinstance(latest, dict) and latest["scan_id"] == "scan-test"

        status, crop, kind = await fetch(base + mark["image"])
        assert status == 200 and kind == "image/png" and bytes(crop)[:4] == b"\x89PNG"
        key = labelled.image_key
        for params in (
            {"image_key": "../secret", "bbox": "0,0,5,5"},
            {"image_key": labelled.labels_key, "bbox": "0,0,5,5"},
            {"image_key": key, "bbox": "0,0,5"},
            {"image_key": key, "bbox": "0,0,5000,5"},
        ):
            status, body, _ = await fetch(f"{base}/api/explore/crop", **params)
            assert status == 400, (params, body)
        status, _, _ = await fetch(
            f"{base}/api/explore/crop", image_key=f"tiles/ab/{DIGEST}.png", bbox="0,0,5,5"
        )
        assert status == 404
        status, body, _ = await fetch(f"{base}/api/explore", scan_id="no such scan!")
        assert status == 400


async def test_labelled_crops_projected(
    stack_settings: Settings, database: Database, shared_data: Path, tmp_path: Path
) -> None:
    source = shared_data / "superpixels"
    for folder, count in (("positive", 4), ("negative", 8)):
        (tmp_path / folder).mkdir()
        for path in sorted((source / folder).glob("*.png"))[:count]:
            (tmp_path / folder / path.name).symlink_to(path)
    crops = list_labelled(tmp_path)
    async with client_for(stack_settings) as client:
        await client.wait_until_serving(180)
        served = await served_backbone(client)
        backbone = served.label
        vectors = await extract(
            client, [load_crop(c.path, served.crop_size) for c in crops], len(crops)
        )
    # The web's reader computes the same vectors as the training commands' extraction.
    label, read = await features_reader.crop_features(stack_settings, [c.path for c in crops])
    assert label == backbone
    np.testing.assert_allclose(read, vectors, rtol=1e-5, atol=1e-5)
    await publish_classifier(stack_settings, vectors, [c.label for c in crops], backbone)
    settings = web_settings(stack_settings, data_dir=tmp_path)
    async with serve(settings) as base:
        status, data, _ = await fetch(f"{base}/api/explore", source="labelled")
        assert status == 200, data
        assert isinstance(data, dict)
        assert data["source"] == "labelled" and data["n"] == 12 and data["method"] == "PCA"
        assert data["about"].startswith("PCA of 12 superpixel feature vectors from backbone ")
        assert data["counts"]["class"] == {"mining": 4, "not_mining": 8}
        assert {p["outcome"] for p in data["points"]} <= {"TP", "FP", "TN", "FN"}
        assert data["classifier"] == "explore-test-1"
        assert all(p["link"] == "" for p in data["points"])
        assert "no tile debugger" in data["notes"][0]
        status, again, _ = await fetch(f"{base}/api/explore", source="labelled")
        assert again == data  # cached features, deterministic projection
        status, png, kind = await fetch(base + data["points"][0]["image"])
        assert status == 200 and kind == "image/png" and bytes(png)[:4] == b"\x89PNG"
        assert (await fetch(f"{base}/api/explore/labelled/12.png"))[0] == 404
        assert (await fetch(f"{base}/api/explore/labelled/x1.png"))[0] == 400
        assert (await fetch(f"{base}/api/explore", source="elsewhere"))[0] == 400
    missing = web_settings(stack_settings, data_dir=tmp_path / "nowhere")
    async with serve(missing) as base:
        status, body, _ = await fetch(f"{base}/api/explore", source="labelled")
        assert status == 404 and f"{tmp_path / 'nowhere'} is not a folder" in body["error"]


async def test_explore_is_bounded(seeded: Seeded) -> None:
    from amberscan.web import state

    app = make_app(web_settings(seeded.settings, max_points=5))
    async with streams.served(app) as base:
        status, body, _ = await fetch(f"{base}/api/explore", points="6")
        assert status == 400 and "at most 5 (AMBERSCAN_EXPLORE_MAX_POINTS)" in body["error"]
        async with app[state.EXPLORE_SLOT]:  # a projection is running
            status, body, _ = await fetch(f"{base}/api/explore")
        assert status == 429 and "one at a time" in body["error"]
        status, body, _ = await fetch(f"{base}/api/explore", points="0")
        assert status == 400

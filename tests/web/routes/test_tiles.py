"""The tile debugger and labelling API against the real stack: superpixels, overlays, labels."""

from __future__ import annotations

import io

import aiohttp
import pytest

from amberscan.web import review_queries
from tests.web import client
from tests.web.client import AUTH, get, post
from tests.web.conftest import MODEL, Seeded

pytestmark = pytest.mark.stack


async def test_relabel_superpixel_and_reviewed_superpixels(server: str, seeded: Seeded) -> None:
    target = seeded.tiles["positive2"]
    base = client.target(target)
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
    reviewed = await review_queries.reviewed_superpixels(seeded.db)
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
    await publish(seeded.settings.s3, classifier)
    _, after = await get(f"{server}/api/tiles/{tile}")  # a miss is not remembered: found now
    assert after["threshold_source"] == "registry" and after["threshold"] == pytest.approx(0.8123)
    positive = [s["index"] for s in after["superpixels"] if s["positive"]]
    assert positive == [s["index"] for s in after["superpixels"] if s["score"] >= 0.8123]


async def test_tile_pages_are_served(server: str, seeded: Seeded) -> None:
    tile = seeded.tiles["positive1"].tile_id
    for path in (f"/tile/{tile}", f"/label/{tile}"):
        async with aiohttp.ClientSession() as s, s.get(server + path) as r:
            assert r.status == 200, path
            assert "script-src 'self'" in r.headers["Content-Security-Policy"]
    status, _ = await get(f"{server}/tile/<bad>")
    assert status == 400

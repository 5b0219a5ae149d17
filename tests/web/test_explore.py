"""The explore page's data: projection and outcomes (pure), then the API against the real stack:
a scan's features read back from the features topic, and a small labelled set."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from amberscan.common import kafka, registry, topics
from amberscan.common.blobstore import BlobStore
from amberscan.common.db import Database
from amberscan.common.settings import Settings
from amberscan.feature.extract import client_for, extract, load_crop, served_backbone
from amberscan.model.classifier import Classifier
from amberscan.model.dataset import list_labelled
from amberscan.v1 import messages_pb2 as pb
from amberscan.vision.crops import crop_superpixel
from amberscan.vision.imageio import decode_image
from amberscan.vision.labels import decode_labels
from amberscan.vision.segment import Segmentation
from amberscan.web import explore
from amberscan.web.app import make_app
from amberscan.web.core import BadRequest
from tests import streams
from tests.web.conftest import TOKEN, Seeded, WebSettings

DIGEST = "ab" + "0" * 62


# ---------------------------------------------------------------- pure


@pytest.mark.parametrize("n", [0, 1, 2, 3, 12])
def test_projection_shape_and_range(n: int) -> None:
    vectors = np.random.default_rng(n).normal(size=(n, 20))
    coords, method = explore.project(vectors)
    assert coords.shape == (n, 2)
    assert np.all((coords >= 0) & (coords <= 1))
    assert method == ("none" if n < 2 else "PCA")
    if n == 1:
        assert coords.tolist() == [[0.5, 0.5]]


def test_projection_uses_tsne_from_30_points_and_is_deterministic() -> None:
    rng = np.random.default_rng(0)
    # Two clusters far apart in 8 of 64 dimensions: they stay apart in the plot.
    vectors = rng.normal(size=(40, 64))
    vectors[20:, :8] += 12
    first, method = explore.project(vectors)
    again, _ = explore.project(vectors)
    assert method == "t-SNE"
    np.testing.assert_array_equal(first, again)
    a, b = first[:20].mean(axis=0), first[20:].mean(axis=0)
    spread = max(first[:20].std(axis=0).max(), first[20:].std(axis=0).max())
    assert np.linalg.norm(a - b) > 2 * spread


def test_projection_of_identical_or_constant_vectors() -> None:
    coords, _ = explore.project(np.ones((3, 5)))
    assert np.allclose(coords, 0.5)
    # A constant column next to a varying one: standardising must not divide by zero.
    coords, _ = explore.project(np.array([[1.0, 0.0], [1.0, 1.0], [1.0, 2.0]]))
    assert np.isfinite(coords).all() and coords[:, 0].tolist() == [0.0, 0.5, 1.0]


@pytest.mark.parametrize(
    ("positive", "label", "expected"),
    [
        (True, 1, "TP"),
        (False, 1, "FN"),
        (True, 0, "FP"),
        (False, 0, "TN"),
        (True, None, "positive"),
        (False, None, "negative"),
    ],
)
def test_outcome(positive: bool, label: int | None, expected: str) -> None:
    assert explore.outcome(positive, label) == expected


def test_image_key_must_be_a_tile_content_key() -> None:
    assert explore.parse_image_key(f"tiles/ab/{DIGEST}.png") == f"tiles/ab/{DIGEST}.png"
    for bad in (
        "",
        f"crops/ab/{DIGEST}.png",
        f"tiles/cd/{DIGEST}.png",  # the folder is the digest's first two characters
        f"tiles/ab/{DIGEST}.png/../../models/classifier/current.json",
        "tiles/ab/../x.png",
        f"tiles/ab/{DIGEST.upper()}.png",
    ):
        with pytest.raises(BadRequest):
            explore.parse_image_key(bad)


def test_pixel_box() -> None:
    assert explore.parse_pixel_box("0,1,20,30") == (0, 1, 20, 30)
    for bad in ("", "1,2,3", "0,0,0,5", "5,0,2,9", "-1,0,2,2", "a,b,c,d", "1.5,0,2,2"):
        with pytest.raises(BadRequest):
            explore.parse_pixel_box(bad)
    explore.check_box_inside((0, 0, 256, 256), 256, 256)
    with pytest.raises(BadRequest, match="outside the 256x256"):
        explore.check_box_inside((0, 0, 257, 10), 256, 256)


def test_describe_says_what_is_plotted() -> None:
    text = explore.describe("t-SNE", 40, "backbone/1", "scan s-1")
    assert text == "t-SNE of 40 superpixel feature vectors from backbone backbone/1, scan s-1"
    one = explore.describe("none", 1, "b/2", "scan s")
    assert one == "1 superpixel feature vector (too few to project) from backbone b/2, scan s"


# ---------------------------------------------------------------- against the stack


class ExploreSettings(WebSettings):
    """The web settings with the explore page's data folder (until `Settings` has it)."""

    explore_data_dir: Path | None = None


@asynccontextmanager
async def serve(settings: Settings) -> AsyncIterator[str]:
    async with streams.served(make_app(settings)) as base:
        yield base


def web_settings(settings: Settings, **extra: object) -> ExploreSettings:
    # Patient with the model server, which may restart while its model is rebuilt.
    values = {**settings.model_dump(), "web_token": TOKEN, "retry_backoff_s": 1.0, **extra}
    return ExploreSettings(**values)


async def publish_classifier(
    settings: Settings, vectors: np.ndarray, labels: list[int], backbone: str
) -> Classifier:
    """A small XGBoost model of these vectors, made the registry's current classifier: the tests
    then need neither the local model file (rebuilt now and then) nor a long training run."""
    import xgboost as xgb

    model = xgb.XGBClassifier(n_estimators=10, max_depth=2, n_jobs=1, random_state=0)
    model.fit(np.asarray(vectors, dtype=np.float32), np.asarray(labels))
    meta = {"version": "explore-test-1", "backbone": backbone}
    classifier = Classifier(model.get_booster(), 0.5, meta)
    await BlobStore(settings).ensure_bucket()
    await registry.publish(settings, classifier)
    return classifier


async def produce_scan_features(seeded: Seeded, per_tile: int = 3) -> list[pb.SuperpixelFeatures]:
    """Features of the first `per_tile` superpixels of each seeded tile, computed by the model
    server from their real crops, produced to the features topic as the feature stage does;
    a classifier of them (mining = superpixels of the positive tiles) is published."""
    settings = seeded.settings
    messages: list[pb.SuperpixelFeatures] = []
    mining: list[int] = []
    async with client_for(settings) as client:
        await client.wait_until_serving(180)
        backbone = (await served_backbone(client)).label
        for name, detection in seeded.tiles.items():
            image = decode_image(await seeded.store.get(detection.image_key), "tile")
            segmentation = Segmentation.from_labels(
                decode_labels(await seeded.store.get(detection.labels_key))
            )
            chosen = segmentation.superpixels[:per_tile]
            crops = np.stack([crop_superpixel(image, sp.bbox, 224) for sp in chosen])
            vectors = await client.predict(crops)
            for sp, vector in zip(chosen, vectors, strict=True):
                r0, c0, r1, c1 = sp.bbox
                ref = pb.SuperpixelRef(
                    tile_id=detection.tile_id,
                    scan_id=detection.scan_id,
                    imagery_date=detection.imagery_date,
                    image_key=detection.image_key,
                    labels_key=detection.labels_key,
                    image_width=image.shape[1],
                    image_height=image.shape[0],
                    segment_index=sp.index,
                    segment_count=len(segmentation.superpixels),
                    bbox=pb.PixelBox(row0=r0, col0=c0, row1=r1, col1=c1),
                    demo=detection.demo,
                )
                messages.append(
                    pb.SuperpixelFeatures(ref=ref, vector=vector.tolist(), backbone=backbone)
                )
                mining.append(int(name.startswith("positive")))
    vectors = np.array([m.vector for m in messages])
    await publish_classifier(settings, vectors, mining, backbone)
    await kafka.ensure_topics(settings, [topics.FEATURES])
    await streams.produce(
        settings,
        topics.FEATURES,
        [(m.ref.tile_id.encode(), m.SerializeToString()) for m in messages],
    )
    return messages


async def get(url: str, **params: str) -> tuple[int, object, str]:
    async with aiohttp.ClientSession() as s, s.get(url, params=params) as r:
        if "json" in r.content_type:
            return r.status, await r.json(), r.content_type
        return r.status, await r.read(), r.content_type


@pytest.mark.stack
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
        status, data, _ = await get(f"{base}/api/explore", scan_id="scan-test")
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
        status, latest, _ = await get(f"{base}/api/explore")
        assert status == 200 and isinstance(latest, dict) and latest["scan_id"] == "scan-test"

        status, crop, kind = await get(base + mark["image"])
        assert status == 200 and kind == "image/png" and bytes(crop)[:4] == b"\x89PNG"
        key = labelled.image_key
        for params in (
            {"image_key": "../secret", "bbox": "0,0,5,5"},
            {"image_key": labelled.labels_key, "bbox": "0,0,5,5"},
            {"image_key": key, "bbox": "0,0,5"},
            {"image_key": key, "bbox": "0,0,5000,5"},
        ):
            status, body, _ = await get(f"{base}/api/explore/crop", **params)
            assert status == 400, (params, body)
        status, _, _ = await get(
            f"{base}/api/explore/crop", image_key=f"tiles/ab/{DIGEST}.png", bbox="0,0,5,5"
        )
        assert status == 404
        status, body, _ = await get(f"{base}/api/explore", scan_id="no such scan!")
        assert status == 400


@pytest.mark.stack
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
        backbone = (await served_backbone(client)).label
        vectors = await extract(client, [load_crop(c.path) for c in crops], len(crops))
    await publish_classifier(stack_settings, vectors, [c.label for c in crops], backbone)
    settings = web_settings(stack_settings, explore_data_dir=tmp_path)
    async with serve(settings) as base:
        status, data, _ = await get(f"{base}/api/explore", source="labelled")
        assert status == 200, data
        assert isinstance(data, dict)
        assert data["source"] == "labelled" and data["n"] == 12 and data["method"] == "PCA"
        assert data["about"].startswith("PCA of 12 superpixel feature vectors from backbone ")
        assert data["counts"]["class"] == {"mining": 4, "not_mining": 8}
        assert {p["outcome"] for p in data["points"]} <= {"TP", "FP", "TN", "FN"}
        assert data["classifier"] == "explore-test-1"
        assert all(p["link"] == "" for p in data["points"])
        assert "no tile debugger" in data["notes"][0]
        status, again, _ = await get(f"{base}/api/explore", source="labelled")
        assert again == data  # cached features, deterministic projection
        status, png, kind = await get(base + data["points"][0]["image"])
        assert status == 200 and kind == "image/png" and bytes(png)[:4] == b"\x89PNG"
        assert (await get(f"{base}/api/explore/labelled/12.png"))[0] == 404
        assert (await get(f"{base}/api/explore/labelled/x1.png"))[0] == 400
        assert (await get(f"{base}/api/explore", source="elsewhere"))[0] == 400


def test_labelled_dir_defaults_to_the_shared_set() -> None:
    assert explore.labelled_dir(Settings()) == explore.SHARED_LABELLED
    assert explore.labelled_dir(ExploreSettings(explore_data_dir=Path("/x"))) == Path("/x")

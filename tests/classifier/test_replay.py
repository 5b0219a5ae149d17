"""Replay after a model update: a new classifier re-scores the retained features, then stops."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from amberscan.classifier.service import replay
from amberscan.common import topics
from amberscan.common.registry import publish
from amberscan.common.settings import Settings
from amberscan.common.topic_admin import ensure_topics
from amberscan.model.classifier import train_classifier
from amberscan.v1 import messages_pb2 as pb
from tests.streams import produce, read_all

pytestmark = pytest.mark.stack


def toy_classifier(seed: int):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(120, 4)).astype(np.float32)
    y = (x[:, 0] + 0.3 * rng.normal(size=120) > 0).astype(int)
    tiles = [f"t{i % 12}" for i in range(120)]
    classifier, _, _ = train_classifier(
        x, y, tiles, folds=3, seed=seed, metadata={"backbone": "toy/1", "feature_dim": 4}
    )
    return classifier


async def test_replay_rescores_every_retained_feature_with_the_new_model(
    stack_settings: Settings,
) -> None:
    settings = stack_settings
    await ensure_topics(settings.kafka)
    old, new = toy_classifier(1), toy_classifier(2)
    assert old.version != new.version
    await publish(settings.s3, old)
    await publish(settings.s3, new)
    rng = np.random.default_rng(7)
    features = []
    for tile in range(3):
        for index in range(5):
            ref = pb.SuperpixelRef(
                tile_id=f"tile{tile}", scan_id="s", segment_index=index, segment_count=5
            )
            ref.models.classifier = new.version  # stamped for the live model: a replay overrides
            vector = rng.normal(size=4).tolist()
            features.append(pb.SuperpixelFeatures(ref=ref, vector=vector, backbone="toy/1"))
    # The last tile lost a superpixel upstream: it cannot complete, so the replay leaves it out.
    features.append(
        pb.SuperpixelFeatures(
            ref=pb.SuperpixelRef(tile_id="partial", scan_id="s", segment_count=2),
            vector=[0.0] * 4,
            backbone="toy/1",
        )
    )
    await produce(
        settings,
        topics.FEATURES,
        [(f.ref.tile_id.encode(), f.SerializeToString()) for f in features],
    )

    # Replaying an older version ends by itself once every partition is read, as a scan of
    # its own: every score carries the replay's scan id.
    tiles = await asyncio.wait_for(replay(settings, old, "replay-1", asyncio.Event()), timeout=60)
    assert tiles == {"tile0", "tile1", "tile2"}
    scores = [
        pb.SuperpixelScore.FromString(r.value)
        for r in await read_all(settings, topics.SCORES, expect=len(features))
    ]
    assert len(scores) == len(features)
    assert {s.models.classifier for s in scores} == {old.version}
    assert {s.ref.scan_id for s in scores} == {"replay-1"}
    expected = old.score(np.array([f.vector for f in features], dtype=np.float32))
    got = {(s.ref.tile_id, s.ref.segment_index): s.score for s in scores}
    for f, e in zip(features, expected, strict=True):
        assert got[(f.ref.tile_id, f.ref.segment_index)] == pytest.approx(float(e), abs=1e-6)

    # Another replay reads the same features again, in a group of its own.
    await asyncio.wait_for(replay(settings, new, "replay-2", asyncio.Event()), timeout=60)
    scores = [
        pb.SuperpixelScore.FromString(r.value)
        for r in await read_all(settings, topics.SCORES, expect=2 * len(features))
    ]
    replayed = [s for s in scores if s.ref.scan_id == "replay-2"]
    assert len(replayed) == len(features)
    assert {s.models.classifier for s in replayed} == {new.version}

"""Replay after a model update: a new classifier re-scores the retained features, then stops."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from amberscan.classifier.service import replay
from amberscan.common import topics
from amberscan.common.kafka import ensure_topics
from amberscan.common.registry import publish
from amberscan.common.settings import Settings
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
    await ensure_topics(settings)
    old, new = toy_classifier(1), toy_classifier(2)
    assert old.version != new.version
    await publish(settings, old)
    await publish(settings, new)  # now current
    rng = np.random.default_rng(7)
    features = []
    for tile in range(3):
        for index in range(5):
            ref = pb.SuperpixelRef(
                tile_id=f"tile{tile}", scan_id="s", segment_index=index, segment_count=5
            )
            vector = rng.normal(size=4).tolist()
            features.append(pb.SuperpixelFeatures(ref=ref, vector=vector, backbone="toy/1"))
    await produce(
        settings,
        topics.FEATURES,
        [(f.ref.tile_id.encode(), f.SerializeToString()) for f in features],
    )

    # Replaying an older version ends by itself once every partition is read.
    version = await asyncio.wait_for(replay(settings, old.version, asyncio.Event()), timeout=60)
    assert version == old.version
    scores = [
        pb.SuperpixelScore.FromString(r.value)
        for r in await read_all(settings, topics.SCORES, expect=len(features))
    ]
    assert len(scores) == len(features)
    assert {s.models.classifier for s in scores} == {old.version}
    expected = old.score(np.array([f.vector for f in features], dtype=np.float32))
    got = {(s.ref.tile_id, s.ref.segment_index): s.score for s in scores}
    for f, e in zip(features, expected, strict=True):
        assert got[(f.ref.tile_id, f.ref.segment_index)] == pytest.approx(float(e), abs=1e-6)

    # The current model replays the same features again, in a group of its own.
    assert await asyncio.wait_for(replay(settings, "", asyncio.Event()), timeout=60) == new.version
    scores = [
        pb.SuperpixelScore.FromString(r.value)
        for r in await read_all(settings, topics.SCORES, expect=2 * len(features))
    ]
    assert sorted(s.models.classifier for s in scores).count(new.version) == len(features)

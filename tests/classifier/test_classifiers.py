"""The classifier stage's batch handler (no servers): one poll of tiles stamped with different
versions is scored by each tile's own classifier."""

from __future__ import annotations

import asyncio

import numpy as np

from amberscan.classifier.core import score_messages
from amberscan.classifier.service import make_stage
from amberscan.common.settings import Settings
from amberscan.v1 import messages_pb2 as pb
from tests.classifier.conftest import Registry, classifiers, toy


def test_one_batch_of_two_tiles_stamped_with_two_versions_scores_each_with_its_own() -> None:
    a, b = toy(1), toy(2)
    registry = Registry(a, b)
    registry.current = b.version
    stage = make_stage(Settings(), classifiers(registry, [0.0], b))
    rng = np.random.default_rng(0)
    messages = []
    for tile, version in (("t-old", a.version), ("t-new", b.version), ("t-unstamped", "")):
        ref = pb.SuperpixelRef(tile_id=tile, scan_id="s", segment_index=0, segment_count=1)
        ref.models.classifier = version
        vector = rng.normal(size=3).astype(np.float32)
        messages.append(pb.SuperpixelFeatures(ref=ref, vector=vector.tolist(), backbone="toy/1"))

    class Record:
        def __init__(self, value: bytes) -> None:
            self.value, self.topic, self.partition, self.offset = value, "features", 0, 0
            self.key = b""

    assert stage.batch_handler is not None
    results = asyncio.run(stage.batch_handler([Record(m.SerializeToString()) for m in messages]))  # type: ignore[list-item]
    scores = [pb.SuperpixelScore.FromString(r[0].value) for r in results]  # type: ignore[index]
    assert [s.models.classifier for s in scores] == [a.version, b.version, b.version]
    for message, score, model in zip(messages, scores, (a, b, b), strict=True):
        (expected,) = score_messages([message], model)
        assert score.score == expected.score  # type: ignore[union-attr]

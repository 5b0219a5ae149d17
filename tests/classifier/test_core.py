"""The classifier core (pure): which classifier scores a superpixel (the tile's stamped version,
else the current one, whose pointer is read again after the refresh interval), and the scores of
a batch of feature vectors."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from amberscan.classifier.core import Classifiers, score_messages
from amberscan.errors import PoisonMessage
from amberscan.v1 import messages_pb2 as pb
from tests.classifier.conftest import Registry, classifiers, toy


def test_the_current_model_is_followed_after_the_refresh_interval() -> None:
    a, b, file = toy(1), toy(2), toy(3)
    registry = Registry(a, b)
    clock = [0.0]
    models = classifiers(registry, clock, file)

    async def run() -> list[str]:
        seen = [(await models.get("")).version]  # nothing promoted yet: the file
        registry.current = a.version
        seen.append((await models.get("")).version)  # still within the interval
        clock[0] = 6.0
        seen.append((await models.get("")).version)
        registry.current = b.version
        clock[0] = 8.0
        seen.append((await models.get("")).version)
        clock[0] = 12.0
        seen.append((await models.get("")).version)
        return seen

    assert asyncio.run(run()) == [file.version, file.version, a.version, a.version, b.version]
    assert registry.pointer_reads == 3  # once per interval, not once per batch


def test_a_stamped_version_is_used_whatever_is_current_and_loaded_once() -> None:
    a, b = toy(1), toy(2)
    registry = Registry(a, b)
    registry.current = b.version
    models = classifiers(registry, [0.0], b)

    async def run() -> list[str]:
        return [(await models.get(a.version)).version for _ in range(3)]

    assert asyncio.run(run()) == [a.version] * 3
    assert registry.loads == [a.version]


def test_a_replay_pins_one_model_over_any_stamp() -> None:
    a, b = toy(1), toy(2)
    models = Classifiers.fixed(a)
    assert asyncio.run(models.get(b.version)) is a
    assert asyncio.run(models.get("")) is a


def features(index: int, vector: list[float], backbone: str = "toy/1") -> pb.SuperpixelFeatures:
    ref = pb.SuperpixelRef(tile_id="t1", scan_id="s", segment_index=index, segment_count=3)
    return pb.SuperpixelFeatures(ref=ref, vector=vector, backbone=backbone)


def test_scores_carry_the_classifier_its_threshold_and_the_ref() -> None:
    model = toy(1)
    rng = np.random.default_rng(0)
    messages = [features(i, rng.normal(size=3).tolist()) for i in range(3)]
    scores = score_messages(messages, model)
    vectors = np.array([m.vector for m in messages], dtype=np.float32)
    expected = model.score(vectors).tolist()
    assert [s.score for s in scores] == pytest.approx(expected)  # type: ignore[union-attr]
    for message, score in zip(messages, scores, strict=True):
        assert isinstance(score, pb.SuperpixelScore)
        assert score.ref.segment_index == message.ref.segment_index
        assert score.models.classifier == score.ref.models.classifier == model.version
        assert score.models.backbone == "toy/1"
        assert score.threshold == pytest.approx(model.threshold)
        assert score.positive == (score.score >= model.threshold)


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (features(1, [0.0, 0.0, 0.0], backbone="other/2"), "from backbone other/2"),
        (features(1, [0.0, 0.0]), "2-d features"),
    ],
)
def test_a_vector_the_classifier_cannot_take_is_poison_naming_it(
    message: pb.SuperpixelFeatures, reason: str
) -> None:
    model = toy(1)
    good = features(0, [0.1, 0.2, 0.3])
    scored, poison = score_messages([good, message], model)
    assert isinstance(scored, pb.SuperpixelScore)
    assert isinstance(poison, PoisonMessage)
    assert "superpixel 1 of tile t1" in str(poison) and reason in str(poison)

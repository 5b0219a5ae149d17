"""Which classifier scores a superpixel (pure): the tile's stamped version, else the current one,
whose pointer is read again after the refresh interval."""

from __future__ import annotations

import asyncio

import numpy as np

from amberscan.classifier.service import Classifiers, make_stage, score_messages
from amberscan.common.settings import Settings
from amberscan.model.classifier import Classifier, train_classifier
from amberscan.v1 import messages_pb2 as pb


def toy(seed: int) -> Classifier:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(60, 3)).astype(np.float32)
    y = (x[:, seed % 3] > 0).astype(int)
    classifier, _, _ = train_classifier(
        x, y, [f"t{i % 10}" for i in range(60)], folds=3, seed=seed,
        metadata={"backbone": "toy/1", "feature_dim": 3},
    )  # fmt: skip
    return classifier


class Registry:
    """The registry's answers, and how often each was asked."""

    def __init__(self, *models: Classifier) -> None:
        self.models = {m.version: m for m in models}
        self.current = ""
        self.loads: list[str] = []
        self.pointer_reads = 0

    async def load(self, version: str) -> Classifier:
        self.loads.append(version)
        return self.models[version]

    async def current_version(self) -> str:
        self.pointer_reads += 1
        return self.current


def classifiers(registry: Registry, clock: list[float], fallback: Classifier) -> Classifiers:
    async def file() -> Classifier:
        return fallback

    return Classifiers(
        registry.load, registry.current_version, file, refresh_s=5.0, clock=lambda: clock[0]
    )


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

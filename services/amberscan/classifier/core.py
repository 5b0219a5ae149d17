"""Classifier core: feature vectors → scores, and which classifier scores them. Pure.

`score_messages` scores a batch of feature messages with one XGBoost call; `Classifiers` keeps
the classifiers a stage scores with, by version, and follows the current one. Where the models
come from (the registry, a file) is the runner's business: `Classifiers` is given the loaders.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence

import numpy as np

from amberscan.errors import PoisonMessage
from amberscan.model.classifier import Classifier
from amberscan.v1 import messages_pb2 as pb


def score_messages(
    messages: Sequence[pb.SuperpixelFeatures], classifier: Classifier
) -> list[pb.SuperpixelScore | PoisonMessage]:
    """The score of each feature vector, from one XGBoost call (pure); a vector the classifier
    cannot take (another backbone, another width) is a PoisonMessage naming it."""
    results: list[pb.SuperpixelScore | PoisonMessage | None] = [None] * len(messages)
    usable: list[int] = []
    for i, message in enumerate(messages):
        ref = message.ref
        where = f"superpixel {ref.segment_index} of tile {ref.tile_id}"
        if classifier.backbone and message.backbone != classifier.backbone:
            results[i] = PoisonMessage(
                f"{where}: features from backbone {message.backbone}, classifier "
                f"{classifier.version} expects {classifier.backbone}"
            )
        elif len(message.vector) != classifier.feature_dim:
            results[i] = PoisonMessage(
                f"{where}: {len(message.vector)}-d features, classifier {classifier.version} "
                f"takes {classifier.feature_dim}"
            )
        else:
            usable.append(i)
    if usable:
        vectors = np.array([messages[i].vector for i in usable], dtype=np.float32)
        for i, score in zip(usable, classifier.score(vectors).tolist(), strict=True):
            message = messages[i]
            out_ref = pb.SuperpixelRef()
            out_ref.CopyFrom(message.ref)
            models = pb.ModelVersions(backbone=message.backbone, classifier=classifier.version)
            out_ref.models.CopyFrom(models)
            results[i] = pb.SuperpixelScore(
                ref=out_ref,
                score=score,
                positive=score >= classifier.threshold,
                threshold=classifier.threshold,
                models=models,
            )
    return [r for r in results if r is not None]


class Classifiers:
    """The classifiers a stage scores with, by version, and the current one.

    `current()` reads the registry's pointer again once `refresh_s` has passed (a small read),
    and loads the model only when the pointer names another version.
    """

    def __init__(
        self,
        load: Callable[[str], Awaitable[Classifier]],
        current_version: Callable[[], Awaitable[str]],
        fallback: Callable[[], Awaitable[Classifier]],
        *,
        refresh_s: float,
        keep: int = 4,
        clock: Callable[[], float] = time.monotonic,
        pinned: Classifier | None = None,
    ) -> None:
        self.pinned = pinned
        self._load = load
        self._current_version = current_version
        self._fallback = fallback
        self.refresh_s = refresh_s
        self.keep = keep
        self._clock = clock
        self._loaded: OrderedDict[str, Classifier] = OrderedDict()
        self._current: Classifier | None = None
        self._read_at = float("-inf")

    @classmethod
    def fixed(cls, classifier: Classifier) -> Classifiers:
        """Always `classifier`, whatever a message is stamped with (a replay)."""

        async def same(_: str = "") -> Classifier:
            return classifier

        async def version() -> str:
            return classifier.version

        return cls(same, version, same, refresh_s=float("inf"), pinned=classifier)

    async def get(self, version: str) -> Classifier:
        """Classifier `version` (the current one for "")."""
        if self.pinned is not None:
            return self.pinned
        if not version:
            return await self.current()
        if version in self._loaded:
            self._loaded.move_to_end(version)
            return self._loaded[version]
        if self._current is not None and self._current.version == version:
            return self._current
        classifier = await self._load(version)
        self._loaded[version] = classifier
        while len(self._loaded) > self.keep:
            self._loaded.popitem(last=False)
        return classifier

    async def current(self) -> Classifier:
        if self._current is not None and self._clock() - self._read_at < self.refresh_s:
            return self._current
        version = await self._current_version()
        if not version:
            self._current = await self._fallback()
        elif self._current is None or self._current.version != version:
            self._current = await self.get(version)
        self._read_at = self._clock()
        return self._current

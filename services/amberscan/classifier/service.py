"""Classifier service: `features` → `scores`, with XGBoost models from the registry.

At-least-once. Output keyed by tile id, one message per (tile id, segment index, model
version). A poll's vectors are scored in one XGBoost call per classifier version.

Which classifier scores a superpixel is decided once per tile, upstream: the tiler stamps the
registry's current version (and the backbone it needs) on each tile, and every superpixel of
it carries that stamp, so a promotion, a restart or a partition handed to another replica in
the middle of a tile never splits it between two models. Versions are loaded from the registry
on first use and kept (a few at once). A superpixel without a stamp (from before the stamp, or
a stack with no registry yet) gets the current model, whose pointer is read again every
`AMBERSCAN_CLASSIFIER_REFRESH_S`: a promotion reaches a running classifier without a restart.

Replaying `features` after a promotion (`amberscan replay`) re-scores old superpixels with one
given version, whatever they were stamped with, under a scan id of the replay's own: the new
scores flow through the aggregator to new detection rows keyed by the new model version, beside
the old ones, and past scans' progress rows are never touched.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence

import numpy as np
from aiokafka.structs import ConsumerRecord

from amberscan.common import topics
from amberscan.common.handling import Result
from amberscan.common.records import Output, decode_message, describer
from amberscan.common.settings import Settings
from amberscan.common.stage import Stage, StageConfig
from amberscan.errors import PoisonMessage
from amberscan.model.classifier import Classifier
from amberscan.v1 import messages_pb2 as pb


def decode_features(record: ConsumerRecord) -> pb.SuperpixelFeatures:
    return decode_message(
        record,
        pb.SuperpixelFeatures,
        lambda m: (
            "" if m.ref.tile_id and m.vector else "features message without tile_id or vector"
        ),
    )


describe_features = describer(pb.SuperpixelFeatures, lambda m: (m.ref.tile_id, m.ref.scan_id))


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


def registry_classifiers(settings: Settings) -> Classifiers:
    """`Classifiers` over the model registry (the file `AMBERSCAN_CLASSIFIER_PATH` while the
    registry has no current model)."""
    from amberscan.common import registry
    from amberscan.common.blobstore import MissingBlob

    async def load(version: str) -> Classifier:
        try:
            return await registry.load_version(settings, version)
        except registry.RegistryError as error:
            raise PoisonMessage(str(error)) from None

    async def current_version() -> str:
        try:
            return await registry.current_version(settings)
        except MissingBlob:
            return ""

    async def fallback() -> Classifier:
        return await asyncio.to_thread(Classifier.load, settings.classifier_path)

    return Classifiers(load, current_version, fallback, refresh_s=settings.classifier_refresh_s)


def make_stage(
    settings: Settings,
    classifiers: Classifiers,
    *,
    replay_scan: str = "",
) -> Stage:
    """The classifier stage; with `replay_scan`, a replay: every score is re-labelled with that
    scan id and the stage ends when it has read the retained features."""

    async def handle(records: list[ConsumerRecord]) -> list[Result]:
        results: list[Result | None] = [None] * len(records)
        by_version: dict[str, list[tuple[int, pb.SuperpixelFeatures]]] = {}
        for i, record in enumerate(records):
            try:
                message = decode_features(record)
            except PoisonMessage as error:
                results[i] = error
                continue
            by_version.setdefault(message.ref.models.classifier, []).append((i, message))
        for version, group in by_version.items():
            try:
                classifier = await classifiers.get(version)
            except PoisonMessage as error:
                for i, message in group:
                    ref = message.ref
                    results[i] = PoisonMessage(
                        f"superpixel {ref.segment_index} of tile {ref.tile_id}: {error}"
                    )
                continue
            scored = await asyncio.to_thread(
                score_messages, [message for _, message in group], classifier
            )
            for (i, _), score in zip(group, scored, strict=True):
                if isinstance(score, PoisonMessage):
                    results[i] = score
                    continue
                if replay_scan:
                    score.ref.scan_id = replay_scan
                results[i] = [
                    Output(topics.SCORES, score.ref.tile_id.encode(), score.SerializeToString())
                ]
        return [r for r in results if r is not None]

    config = StageConfig(
        service="classifier",
        source_topic=topics.FEATURES,
        describe=describe_features,
        max_records=256,
        # A replay reads the retained features from the start in a consumer group of its own,
        # so the live classifier's offsets are untouched, and ends when it has read them all.
        group_id=f"{settings.topic_prefix}amberscan-replay-{replay_scan}" if replay_scan else "",
        until_caught_up=bool(replay_scan),
    )
    return Stage(settings, config, batch_handler=handle)


async def run(settings: Settings, stop: asyncio.Event) -> None:
    """Run the classifier until `stop` is set, following the registry's promotions."""
    await make_stage(settings, registry_classifiers(settings)).run(stop)


async def replay(
    settings: Settings, classifier: Classifier, scan_id: str, stop: asyncio.Event
) -> set[str]:
    """Re-score every retained feature with `classifier` as scan `scan_id`; returns the ids of
    the tiles re-scored whole (a tile some of whose superpixels never reached the features topic
    cannot complete, and is not counted in the replay's scan)."""
    seen: dict[tuple[str, str, str], set[int]] = {}
    counts: dict[tuple[str, str, str], int] = {}
    stage = make_stage(settings, Classifiers.fixed(classifier), replay_scan=scan_id)
    handle = stage.batch_handler
    assert handle is not None

    async def counting(records: list[ConsumerRecord]) -> Sequence[Result]:
        results = await handle(records)
        for result in results:
            if isinstance(result, BaseException):
                continue
            for output in result:
                ref = pb.SuperpixelScore.FromString(output.value).ref
                key = (ref.tile_id, ref.imagery_date, ref.image_key)
                seen.setdefault(key, set()).add(ref.segment_index)
                counts[key] = ref.segment_count
        return results

    stage.batch_handler = counting
    await stage.run(stop)
    return {key[0] for key, indices in seen.items() if len(indices) >= counts[key]}

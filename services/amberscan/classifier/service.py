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
from collections.abc import Sequence

from aiokafka.structs import ConsumerRecord

from amberscan.classifier.core import Classifiers, score_messages
from amberscan.common import topics
from amberscan.common.handling import Result
from amberscan.common.records import Output, decode_message, describer
from amberscan.common.settings import ClassifierSettings
from amberscan.common.stage import Stage, StageConfig
from amberscan.errors import PoisonMessage
from amberscan.model.classifier import Classifier
from amberscan.v1 import messages_pb2 as pb

# Feature vectors per poll: a poll is scored in one XGBoost call per classifier version, so a
# large one (about eight tiles' superpixels) pays the call's fixed cost once for many vectors.
MAX_RECORDS = 256


def decode_features(record: ConsumerRecord) -> pb.SuperpixelFeatures:
    return decode_message(
        record,
        pb.SuperpixelFeatures,
        lambda m: (
            "" if m.ref.tile_id and m.vector else "features message without tile_id or vector"
        ),
    )


describe_features = describer(pb.SuperpixelFeatures, lambda m: (m.ref.tile_id, m.ref.scan_id))


def registry_classifiers(settings: ClassifierSettings) -> Classifiers:
    """`Classifiers` over the model registry (the file `AMBERSCAN_CLASSIFIER_PATH` while the
    registry has no current model)."""
    from amberscan.common import registry
    from amberscan.common.blobstore import MissingBlob

    async def load(version: str) -> Classifier:
        try:
            return await registry.load_version(settings.s3, version)
        except registry.RegistryError as error:
            raise PoisonMessage(str(error)) from None

    async def current_version() -> str:
        try:
            return await registry.current_version(settings.s3)
        except MissingBlob:
            return ""

    async def fallback() -> Classifier:
        return await asyncio.to_thread(Classifier.load, settings.classifier.path)

    return Classifiers(load, current_version, fallback, refresh_s=settings.classifier.refresh_s)


def make_stage(
    settings: ClassifierSettings,
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
        max_records=MAX_RECORDS,
        # A replay reads the retained features from the start in a consumer group of its own,
        # so the live classifier's offsets are untouched, and ends when it has read them all.
        group_id=(
            f"{settings.kafka.topic_prefix}amberscan-replay-{replay_scan}" if replay_scan else ""
        ),
        until_caught_up=bool(replay_scan),
    )
    return Stage(settings, config, batch_handler=handle)


async def run(settings: ClassifierSettings, stop: asyncio.Event) -> None:
    """Run the classifier until `stop` is set, following the registry's promotions."""
    await make_stage(settings, registry_classifiers(settings)).run(stop)


async def replay(
    settings: ClassifierSettings, classifier: Classifier, scan_id: str, stop: asyncio.Event
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

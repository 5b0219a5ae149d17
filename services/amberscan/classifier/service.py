"""Classifier service: `features` → `scores`, with the current XGBoost model from the registry.

At-least-once. Output keyed by tile id, one message per (tile id, segment index, model
version). A poll's vectors are scored in one XGBoost call. Replaying `features` after publishing a new model (`amberscan replay`) re-scores old
superpixels without touching the model server: the new scores flow through the aggregator to new
detection rows keyed by the new model version, beside the old ones.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np
from aiokafka.structs import ConsumerRecord

from amberscan.common import topics
from amberscan.common.errors import PoisonMessage
from amberscan.common.kafka import Output, Result, Stage, StageConfig, decode_message, describer
from amberscan.common.settings import Settings
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


def make_stage(settings: Settings, classifier: Classifier, *, replay: bool = False) -> Stage:
    async def handle(records: list[ConsumerRecord]) -> list[Result]:
        results: list[Result | None] = [None] * len(records)
        decoded: dict[int, pb.SuperpixelFeatures] = {}
        for i, record in enumerate(records):
            try:
                decoded[i] = decode_features(record)
            except PoisonMessage as error:
                results[i] = error
        scored = await asyncio.to_thread(score_messages, list(decoded.values()), classifier)
        for i, score in zip(decoded, scored, strict=True):
            results[i] = (
                score
                if isinstance(score, PoisonMessage)
                else [Output(topics.SCORES, score.ref.tile_id.encode(), score.SerializeToString())]
            )
        return [r for r in results if r is not None]

    config = StageConfig(
        service="classifier",
        source_topic=topics.FEATURES,
        describe=describe_features,
        max_records=256,
        # A replay reads the retained features from the start in a consumer group of its own,
        # so the live classifier's offsets are untouched, and ends when it has read them all.
        group_id=f"{settings.topic_prefix}amberscan-replay-{classifier.version}" if replay else "",
        until_caught_up=replay,
    )
    return Stage(settings, config, batch_handler=handle)


async def run(settings: Settings, stop: asyncio.Event) -> None:
    """Run the classifier until `stop` is set, with the model current when it starts."""
    from amberscan.common.registry import load_current_or_file

    classifier = await load_current_or_file(settings)
    await make_stage(settings, classifier).run(stop)


async def replay(settings: Settings, version: str, stop: asyncio.Event) -> str:
    """Re-score every retained feature with classifier `version` (the current one if empty)."""
    from amberscan.common.registry import load_current, load_version

    classifier = await (load_version(settings, version) if version else load_current(settings))
    await make_stage(settings, classifier, replay=True).run(stop)
    return classifier.version

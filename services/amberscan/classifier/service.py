"""Classifier service: `features` → `scores`, with the current XGBoost model from the registry.

At-least-once. Output keyed by tile id, one message per (tile id, segment index, model
version). Replaying `features` after publishing a new model (`amberscan replay`) re-scores old
superpixels without touching the model server: the new scores flow through the aggregator to new
detection rows keyed by the new model version, beside the old ones.
"""

from __future__ import annotations

import asyncio

import numpy as np
from aiokafka.structs import ConsumerRecord

from amberscan.common import topics
from amberscan.common.errors import PoisonMessage
from amberscan.common.kafka import Output, Stage, StageConfig, decode_message, describer
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


def score_message(message: pb.SuperpixelFeatures, classifier: Classifier) -> pb.SuperpixelScore:
    """The score of one feature vector (pure)."""
    ref = message.ref
    if classifier.backbone and message.backbone != classifier.backbone:
        raise PoisonMessage(
            f"superpixel {ref.segment_index} of tile {ref.tile_id}: features from backbone "
            f"{message.backbone}, classifier {classifier.version} expects {classifier.backbone}"
        )
    vector = np.asarray(message.vector, dtype=np.float32)[None, :]
    if vector.shape[1] != classifier.feature_dim:
        raise PoisonMessage(
            f"superpixel {ref.segment_index} of tile {ref.tile_id}: {vector.shape[1]}-d features, "
            f"classifier {classifier.version} takes {classifier.feature_dim}"
        )
    score = float(classifier.score(vector)[0])
    out_ref = pb.SuperpixelRef()
    out_ref.CopyFrom(ref)
    models = pb.ModelVersions(backbone=message.backbone, classifier=classifier.version)
    out_ref.models.CopyFrom(models)
    return pb.SuperpixelScore(
        ref=out_ref,
        score=score,
        positive=score >= classifier.threshold,
        threshold=classifier.threshold,
        models=models,
    )


def make_stage(settings: Settings, classifier: Classifier, *, replay: bool = False) -> Stage:
    async def handle(record: ConsumerRecord) -> list[Output]:
        message = decode_features(record)
        scored = await asyncio.to_thread(score_message, message, classifier)
        return [Output(topics.SCORES, message.ref.tile_id.encode(), scored.SerializeToString())]

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
    return Stage(settings, config, handle)


async def load_classifier(settings: Settings) -> Classifier:
    """The registry's current classifier, or the local file when the registry has none."""
    from amberscan.common.blobstore import MissingBlob
    from amberscan.common.registry import load_current

    try:
        return await load_current(settings)
    except MissingBlob:
        return await asyncio.to_thread(Classifier.load, settings.classifier_path)


async def run(settings: Settings, stop: asyncio.Event) -> None:
    """Run the classifier until `stop` is set, with the model current when it starts."""
    classifier = await load_classifier(settings)
    await make_stage(settings, classifier).run(stop)


async def replay(settings: Settings, version: str, stop: asyncio.Event) -> str:
    """Re-score every retained feature with classifier `version` (the current one if empty)."""
    from amberscan.common.registry import load_current, load_version

    classifier = await (load_version(settings, version) if version else load_current(settings))
    await make_stage(settings, classifier, replay=True).run(stop)
    return classifier.version

"""Superpixel feature vectors for readers outside the pipeline (the web app's explore page).

Features live in two places: the retained `features` topic (what the classifier saw during a
scan, kept forever for replay) and the model server (for crops on disk, such as the labelled
training set, through the same client and extraction the training commands use). This module
reads both, and loads the classifier that would score them now, so no reader outside the
pipeline needs a service's runner or talks to Kafka itself.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from amberscan.common.settings import KafkaConfig, ModelClientSettings


@dataclass(frozen=True)
class ScanFeatures:
    """The SuperpixelFeatures found, how many records were read, and whether the read reached
    the end offsets within its budget and under its cap."""

    features: list[Any]  # pb.SuperpixelFeatures
    records_read: int
    complete: bool


async def read_scan_features(
    kafka: KafkaConfig, scan_id: str, *, limit: int, budget_s: float, max_records: int
) -> ScanFeatures:
    """The scan's SuperpixelFeatures from the retained features topic, at most `limit`.

    A consumer without a group (nothing is committed, no other reader is disturbed) is assigned
    every partition, reads from the beginning to the end offsets seen at the start, and keeps
    the records whose ref.scan_id is `scan_id`; it stops after `budget_s` seconds or
    `max_records` records read, whichever comes first. A redelivered superpixel (same tile,
    date, segment) counts once, the last copy wins.
    """
    from aiokafka import AIOKafkaConsumer
    from google.protobuf.message import DecodeError

    from amberscan.common import topics
    from amberscan.common.bus import client_options, connect
    from amberscan.v1 import messages_pb2 as pb

    topic = topics.topic_name(kafka.topic_prefix, topics.FEATURES)
    consumer = AIOKafkaConsumer(
        **client_options(kafka),
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    await connect(consumer, kafka)
    found: OrderedDict[tuple[str, str, int], Any] = OrderedDict()
    read = 0
    complete = True
    try:
        if topic not in await consumer.topics():
            return ScanFeatures([], 0, True)
        # Without a group, a subscription is assigned every partition of the topic.
        consumer.subscribe([topic])
        deadline = time.monotonic() + budget_s
        while not consumer.assignment():
            if time.monotonic() > deadline:
                return ScanFeatures([], 0, False)
            await asyncio.sleep(0.05)
        assigned = sorted(consumer.assignment())
        await consumer.seek_to_beginning(*assigned)
        ends = await consumer.end_offsets(assigned)
        remaining = {tp for tp in assigned if ends[tp] > 0}
        while remaining:
            if time.monotonic() > deadline or read >= max_records:
                complete = False
                break
            batch = await consumer.getmany(
                *remaining, timeout_ms=500, max_records=min(2000, max_records - read)
            )
            for tp, records in batch.items():
                for record in records:
                    if record.offset >= ends[tp]:
                        continue
                    read += 1
                    message = pb.SuperpixelFeatures()
                    try:
                        message.ParseFromString(record.value)
                    except DecodeError:  # a poison record: the dead-letter path handles it
                        continue
                    ref = message.ref
                    if ref.scan_id == scan_id:
                        key = (ref.tile_id, ref.imagery_date, int(ref.segment_index))
                        found.pop(key, None)
                        found[key] = message
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
            if len(found) >= limit:
                complete = not remaining
                break
    finally:
        await consumer.stop()
    return ScanFeatures(list(found.values())[:limit], read, complete)


async def served_backbone(settings: ModelClientSettings) -> str:
    """The backbone the model server serves now, as "name/version"."""
    from amberscan.common import served_features

    async with served_features.client_for(settings) as client:
        return (await served_features.served_backbone(client)).label


async def crop_features(
    settings: ModelClientSettings, paths: Sequence[Path]
) -> tuple[str, NDArray[np.float32]]:
    """(served backbone "name/version", feature vectors) of crop image files, computed by the
    model server the settings name, as the training commands compute them."""
    from amberscan.common import served_features
    from amberscan.vision.crops import load_crop

    async with served_features.client_for(settings) as client:
        backbone = await served_features.served_backbone(client)
        size = backbone.crop_size
        vectors = await served_features.extract(
            client, lambda i: load_crop(paths[i], size), len(paths)
        )
    return backbone.label, vectors

"""Sink service: `detections` → PostGIS, and `dead-letters` → failed tiles in scan progress.

At-least-once, idempotent: one row per (tile id, imagery date, model version), upserted with
`ON CONFLICT`, so a redelivered detection overwrites its own row; scan progress has one row per
(scan id, tile id).
"""

from __future__ import annotations

from aiokafka.structs import ConsumerRecord

from amberscan.common import topics
from amberscan.common.db import Database
from amberscan.common.errors import PoisonMessage
from amberscan.common.kafka import Output, Stage, StageConfig, decode_message, describer
from amberscan.common.settings import Settings
from amberscan.sink.core import (
    UPSERT_DETECTION,
    UPSERT_SCAN_TILE,
    detection_row,
    done_row,
    failed_row,
)
from amberscan.v1 import messages_pb2 as pb


def decode_detection(record: ConsumerRecord) -> pb.Detection:
    return decode_message(
        record,
        pb.Detection,
        lambda m: (
            "" if m.tile_id and m.tile_geojson else "detection without tile_id or tile geometry"
        ),
    )


describe_detection = describer(pb.Detection, lambda m: (m.tile_id, m.scan_id))


async def write_detection(db: Database, detection: pb.Detection) -> None:
    async with db.pool.connection() as conn, conn.transaction():
        await conn.execute(UPSERT_DETECTION.encode(), detection_row(detection))
        if detection.scan_id:
            await conn.execute(UPSERT_SCAN_TILE.encode(), done_row(detection))


def make_stages(settings: Settings, db: Database) -> list[Stage]:
    async def handle_detection(record: ConsumerRecord) -> list[Output]:
        detection = decode_detection(record)
        try:
            await write_detection(db, detection)
        except Exception as error:
            import psycopg

            if isinstance(error, psycopg.errors.DataError | psycopg.errors.InternalError_):
                raise PoisonMessage(
                    f"tile {detection.tile_id}: rejected by PostGIS ({error})"
                ) from None
            if isinstance(error, psycopg.OperationalError):
                from amberscan.common.errors import TransientError

                raise TransientError(f"database: {error}") from error
            raise
        return []

    async def handle_dead_letter(record: ConsumerRecord) -> list[Output]:
        try:
            letter = pb.DeadLetter.FromString(record.value or b"")
        except Exception:  # noqa: BLE001 - a broken dead letter has nowhere further to go
            return []
        row = failed_row(letter)
        if row is not None:
            async with db.pool.connection() as conn:
                await conn.execute(UPSERT_SCAN_TILE.encode(), row)
        return []

    return [
        Stage(
            settings,
            StageConfig(
                service="sink",
                source_topic=topics.DETECTIONS,
                describe=describe_detection,
                max_records=256,
            ),
            handle_detection,
        ),
        Stage(
            settings,
            StageConfig(
                service="sink-dead-letters", source_topic=topics.DEAD_LETTERS, max_records=256
            ),
            handle_dead_letter,
        ),
    ]


async def run(settings: Settings, stop) -> None:  # type: ignore[no-untyped-def]
    """Run both sink loops until `stop` is set."""
    import asyncio

    async with Database(settings) as db:
        await asyncio.gather(*(stage.run(stop) for stage in make_stages(settings, db)))

"""Sink service: `detections` → PostGIS, and `dead-letters` → failed tiles in scan progress.

At-least-once, idempotent: one row per (tile id, imagery date, model version), upserted with
`ON CONFLICT` keeping the newest by the detection's own `detected_at`, so a redelivered
detection overwrites its own row and an older one never wins; scan progress has one row per
(scan id, tile id), where done is final.

Database failures: the server unreachable, restarting or read-only (after a failover) is a
`TransientError` on both loops, so the record is retried and, past the retries, comes back later:
a status is never lost while PostgreSQL is down or refuses writes. A detection PostGIS rejects is poison (dead-lettered, so its tile is
marked failed). A dead letter is never dead-lettered again (that would loop on its own topic):
one that cannot be read or stored is logged and counted
(`amberscan_sink_unrecorded_dead_letters_total`).
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka.structs import ConsumerRecord

from amberscan.common import metrics, topics
from amberscan.common.db import Database, database_errors
from amberscan.common.records import Output, decode_message, describer
from amberscan.common.settings import SinkSettings
from amberscan.common.stage import Stage, StageConfig
from amberscan.errors import TransientError
from amberscan.sink.core import (
    UPSERT_DETECTION,
    UPSERT_SCAN_TILE,
    detection_row,
    done_row,
    failed_row,
)
from amberscan.v1 import messages_pb2 as pb

log = logging.getLogger(__name__)
# Records per poll, on both loops: each is written on its own (the database pool bounds how many
# at once) and the poll is committed as one, so a large poll means few commits.
MAX_RECORDS = 256


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
    """Upsert the detection and mark its tile done in its scan, in one transaction."""
    with database_errors(f"tile {detection.tile_id} of scan {detection.scan_id}"):
        async with db.pool.connection() as conn, conn.transaction():
            await conn.execute(UPSERT_DETECTION.encode(), detection_row(detection))
            if detection.scan_id:
                await conn.execute(UPSERT_SCAN_TILE.encode(), done_row(detection))


async def record_dead_letter(db: Database, record: ConsumerRecord) -> None:
    """Mark the tile a dead letter names as failed in its scan.

    Raises:
        TransientError: the database did not answer (the letter comes back later).
    """
    where = f"{record.topic}/{record.partition}@{record.offset}"
    try:
        letter = pb.DeadLetter.FromString(record.value or b"")
    except Exception as error:  # noqa: BLE001 - protobuf raises several types
        _unrecorded(where, f"not a DeadLetter message ({error})")
        return
    row = failed_row(letter)
    if row is None:
        log.info("dead letter names no scan", extra={"origin": where, "reason": letter.reason})
        return
    try:
        with database_errors(f"dead letter of tile {letter.tile_id} of scan {letter.scan_id}"):
            async with db.pool.connection() as conn:
                await conn.execute(UPSERT_SCAN_TILE.encode(), row)
    except TransientError:
        raise
    except Exception as error:  # noqa: BLE001 - a dead letter has nowhere further to go
        _unrecorded(where, f"scan {letter.scan_id} tile {letter.tile_id}: {error}")


def _unrecorded(where: str, why: str) -> None:
    metrics.UNRECORDED_DEAD_LETTERS.inc()
    log.error("dead letter not recorded", extra={"origin": where, "reason": why})


def make_stages(settings: SinkSettings, db: Database) -> list[Stage]:
    async def handle_detection(record: ConsumerRecord) -> list[Output]:
        await write_detection(db, decode_detection(record))
        return []

    async def handle_dead_letter(record: ConsumerRecord) -> list[Output]:
        await record_dead_letter(db, record)
        return []

    return [
        Stage(
            settings,
            StageConfig(
                service="sink",
                source_topic=topics.DETECTIONS,
                describe=describe_detection,
                max_records=MAX_RECORDS,
            ),
            handle_detection,
        ),
        Stage(
            settings,
            StageConfig(
                service="sink-dead-letters",
                source_topic=topics.DEAD_LETTERS,
                max_records=MAX_RECORDS,
            ),
            handle_dead_letter,
        ),
    ]


async def run(settings: SinkSettings, stop: asyncio.Event) -> None:
    """Run both sink loops until `stop` is set."""
    async with Database(settings.database) as db:
        await asyncio.gather(*(stage.run(stop) for stage in make_stages(settings, db)))

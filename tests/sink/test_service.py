"""The sink service against the real broker and PostGIS (#10, defects 5 and 6).

Both of its loops run as in production (`sink.service.run`). Checked: detections become one row
each and mark their tile done; the newest detection of a key wins whatever order the records
come in (redelivered, replayed, or two in one batch) and keeps its own `detected_at`; a
detection PostGIS rejects becomes a dead letter and a failed tile; a dead letter read while
PostgreSQL is down is retried until it is stored, never dead-lettered again; an unreadable dead
letter is counted and the sink goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from amberscan.common import metrics, topics
from amberscan.common.db import Database
from amberscan.common.settings import Settings, replace
from amberscan.common.topic_admin import ensure_topics
from amberscan.geo.tiles import Tile
from amberscan.sink import service as sink
from amberscan.v1 import messages_pb2 as pb
from tests.outage import database_address, database_url_via, outage_proxy, read_only_database
from tests.streams import joined, produce, read_all

pytestmark = pytest.mark.stack

TILE = Tile(38012, 22100, 16)
T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def detection(
    scan: str, when: datetime | None, *, flagged: bool = False, tile: Tile = TILE
) -> pb.Detection:
    message = pb.Detection(
        tile_id=tile.quadkey,
        scan_id=scan,
        tile=pb.TileCoord(z=tile.z, x=tile.x, y=tile.y, quadkey=tile.quadkey),
        provider="demo",
        imagery_date="2015-06-01",
        flagged=flagged,
        positives=3 if flagged else 0,
        segment_count=2,
        min_positives=2,
        hectares=1.5 if flagged else 0.0,
        tile_geojson=json.dumps(tile.polygon()),
        scores=[0.9, 0.1],
        models=pb.ModelVersions(classifier="m1", backbone="b1"),
    )
    if when is not None:
        stamp = Timestamp()
        stamp.FromDatetime(when)
        message.detected_at.CopyFrom(stamp)
    return message


def letter(scan: str, tile: str, reason: str) -> pb.DeadLetter:
    return pb.DeadLetter(reason=reason, service="segmenter", tile_id=tile, scan_id=scan)


@contextlib.asynccontextmanager
async def running_sink(settings: Settings) -> AsyncIterator[asyncio.Task[None]]:
    stop = asyncio.Event()
    task = asyncio.create_task(sink.run(settings, stop))
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


async def until(
    check: Callable[[], Awaitable[bool]], task: asyncio.Task[None], timeout: float = 60
) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert not task.done(), f"the sink stopped: {task.exception()}"
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.2)


@pytest.fixture
async def settings(stack_settings: Settings, database: Database) -> Settings:
    await ensure_topics(stack_settings.kafka, [topics.DETECTIONS, topics.DEAD_LETTERS])
    return stack_settings


async def rows(db: Database) -> list[tuple]:
    return await db.fetch(
        "SELECT scan_id, flagged, detected_at FROM detections WHERE tile_id = %s", TILE.quadkey
    )


async def progress(db: Database, scan: str) -> list[tuple]:
    return await db.fetch(
        "SELECT tile_id, status, reason FROM scan_tiles WHERE scan_id = %s ORDER BY 1", scan
    )


async def test_the_newest_detection_wins_in_any_order(
    settings: Settings, database: Database
) -> None:
    newer, older = T0 + timedelta(minutes=5), T0
    key = TILE.quadkey.encode()
    async with running_sink(settings) as task:
        await produce(
            settings,
            topics.DETECTIONS,
            [(key, detection("new", newer, flagged=True).SerializeToString())],
        )
        await until(lambda: _has(database, "new"), task)
        # A redelivered (or replayed) older detection of the same key arrives afterwards.
        await produce(
            settings, topics.DETECTIONS, [(key, detection("old", older).SerializeToString())]
        )
        await until(lambda: _done(database, "old"), task)
        assert [(s, f) for s, f, _ in await rows(database)] == [("new", True)]
        [(_, _, stored)] = await rows(database)
        assert stored == newer  # the detection's own time, not the time it was written
        # Two of the same key in one batch, newest first: handled concurrently, newest wins.
        newest = newer + timedelta(minutes=1)
        await produce(
            settings,
            topics.DETECTIONS,
            [
                (key, detection("newest", newest, flagged=True).SerializeToString()),
                (key, detection("between", newer + timedelta(seconds=30)).SerializeToString()),
            ],
        )
        await until(lambda: _done(database, "between"), task)
        assert await rows(database) == [("newest", True, newest)]
        # A detection without a time (written before the field existed) never overwrites one.
        await produce(
            settings, topics.DETECTIONS, [(key, detection("untimed", None).SerializeToString())]
        )
        await until(lambda: _done(database, "untimed"), task)
        assert await rows(database) == [("newest", True, newest)]
    # Every scan's progress says done: each scan saw its verdict, whichever row is on the map.
    for scan in ("new", "old", "newest", "between", "untimed"):
        assert [s for _, s, _ in await progress(database, scan)] == ["done"], scan


async def _has(db: Database, scan: str) -> bool:
    return any(s == scan for s, _, _ in await rows(db))


async def _done(db: Database, scan: str) -> bool:
    return [s for _, s, _ in await progress(db, scan)] == ["done"]


async def test_a_detection_postgis_rejects_fails_its_tile(
    settings: Settings, database: Database
) -> None:
    bad = detection("bad", T0)
    bad.tile_geojson = '{"type": "Polygon", "coordinates": [[[0, 0], [1]]]}'
    async with running_sink(settings) as task:
        await produce(
            settings, topics.DETECTIONS, [(bad.tile_id.encode(), bad.SerializeToString())]
        )
        await until(lambda: _failed(database, "bad"), task)
    [(tile, status, reason)] = await progress(database, "bad")
    assert (tile, status) == (TILE.quadkey, "failed")
    assert reason.startswith("sink: ") and "rejected by PostGIS" in reason, reason
    assert await rows(database) == []
    [dead] = [
        pb.DeadLetter.FromString(r.value) for r in await read_all(settings, topics.DEAD_LETTERS, 1)
    ]
    assert (dead.service, dead.tile_id, dead.scan_id) == ("sink", TILE.quadkey, "bad")
    assert dead.origin_topic == topics.topic_name(settings.kafka.topic_prefix, topics.DETECTIONS)


async def _failed(db: Database, scan: str) -> bool:
    return [s for _, s, _ in await progress(db, scan)] == ["failed"]


async def test_a_failure_status_survives_a_database_outage(
    settings: Settings, database: Database
) -> None:
    """Defect 5: a dead letter read while PostgreSQL is down was dead-lettered again, with an
    empty tile and scan, and dropped: the tile's failed status was lost for good."""
    async with outage_proxy(database_address(settings.database.url)) as proxy:
        via = replace(settings, database={"url": database_url_via(settings.database.url, proxy)})
        async with running_sink(via) as task:
            await until(lambda: joined(settings, ["sink", "sink-dead-letters"]), task)
            before = _retries("sink-dead-letters")
            await proxy.cut()  # PostgreSQL is down
            await produce(
                settings,
                topics.DEAD_LETTERS,
                [
                    (
                        TILE.quadkey.encode(),
                        letter("s5", TILE.quadkey, "PNG truncated").SerializeToString(),
                    )
                ],
            )
            # The sink meets the outage (a caller waits up to CONNECTION_WAIT_S for a pooled
            # connection) and retries the dead letter, rather than dead-lettering it again.
            await until(lambda: _retried("sink-dead-letters", before), task)
            assert await progress(database, "s5") == []
            await proxy.restore()  # PostgreSQL is back
            await until(lambda: _failed(database, "s5"), task, timeout=120)
    [(tile, _, reason)] = await progress(database, "s5")
    assert tile == TILE.quadkey and reason == "segmenter: PNG truncated"
    # Nothing was dead-lettered again: the only dead letter is the one produced above.
    assert len(await read_all(settings, topics.DEAD_LETTERS, expect=2, timeout=3)) == 1


def _retries(service: str) -> float:
    return float(metrics.RETRIES.labels(service)._value.get())


async def _retried(service: str, before: float) -> bool:
    return _retries(service) > before


async def test_an_unreadable_dead_letter_is_counted_and_the_sink_goes_on(
    settings: Settings, database: Database
) -> None:
    before = metrics.UNRECORDED_DEAD_LETTERS._value.get()
    nul = letter("s6", "q\x00x", "bad \x00 bytes in the reason")
    async with running_sink(settings) as task:
        await produce(
            settings,
            topics.DEAD_LETTERS,
            [(b"x", b"\xff\x00 not a protobuf"), (b"q", nul.SerializeToString())],
        )
        await until(lambda: _failed(database, "s6"), task)
        await until(lambda: _counted(before), task)
    [(tile, _, reason)] = await progress(database, "s6")
    assert "\x00" not in tile + reason and "bytes in the reason" in reason
    assert len(await read_all(settings, topics.DEAD_LETTERS, expect=3, timeout=3)) == 2


async def _counted(before: float) -> bool:
    return bool(metrics.UNRECORDED_DEAD_LETTERS._value.get() > before)


async def test_a_read_only_database_loses_no_status(stack_settings: Settings) -> None:
    """#26 defect 6: a read-only database after a failover dead-lettered the detection (read as
    rejected by PostGIS), then the dead letter's write failed the same way and was only logged:
    the tile had no status. Both are retried until the database takes writes again."""
    await ensure_topics(stack_settings.kafka, [topics.DETECTIONS, topics.DEAD_LETTERS])
    name = stack_settings.database.schema_name
    async with read_only_database(stack_settings.database.url, name) as database:
        settings = replace(stack_settings, database={"url": database.url})
        other = Tile(38013, 22100, 16)
        good, failed = detection("ro", T0), letter("ro", other.quadkey, "PNG truncated")
        unrecorded = metrics.UNRECORDED_DEAD_LETTERS._value.get()
        async with Database(settings.database) as db, running_sink(settings) as task:
            await until(lambda: joined(settings, ["sink", "sink-dead-letters"]), task)
            retries = _retries("sink"), _retries("sink-dead-letters")
            await database.read_only()
            await produce(
                settings, topics.DETECTIONS, [(TILE.quadkey.encode(), good.SerializeToString())]
            )
            await produce(
                settings,
                topics.DEAD_LETTERS,
                [(other.quadkey.encode(), failed.SerializeToString())],
            )

            async def met_it() -> bool:  # both loops retried, or the defect: a letter lost
                if metrics.UNRECORDED_DEAD_LETTERS._value.get() > unrecorded:
                    return True
                return _retries("sink") > retries[0] and _retries("sink-dead-letters") > retries[1]

            await until(met_it, task)
            assert metrics.UNRECORDED_DEAD_LETTERS._value.get() == unrecorded, (
                "a dead letter was only logged"
            )
            await database.writable()
            await until(lambda: _statuses(db, "ro", 2), task, timeout=120)
            assert await progress(db, "ro") == [
                (TILE.quadkey, "done", ""),
                (other.quadkey, "failed", "segmenter: PNG truncated"),
            ]
            assert [s for s, _, _ in await rows(db)] == ["ro"]
    # Nothing was dead-lettered: the only dead letter is the one produced above.
    assert len(await read_all(settings, topics.DEAD_LETTERS, expect=2, timeout=3)) == 1


async def _statuses(db: Database, scan: str, n: int) -> bool:
    return len(await progress(db, scan)) >= n

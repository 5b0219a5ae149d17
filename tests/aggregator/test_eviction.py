"""Eviction in the aggregator stage against the real broker (#10, defect 1).

A tile that can never complete must end as a dead letter naming it and its scan (the sink then
marks it failed), the commit must move past it, and late scores of that tile, or a redelivered
part of a finished one, must not hold the partition's commits back. A pause of the whole stream
(an outage upstream) must not make the tiles it held up stale.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

import pytest

from amberscan.aggregator.service import make_stage
from amberscan.common import metrics, topics
from amberscan.common.settings import Settings, replace
from amberscan.common.stage import Stage
from amberscan.common.topic_admin import ensure_topics
from amberscan.geo.tiles import Tile
from amberscan.v1 import messages_pb2 as pb
from tests.aggregator.test_service import (
    SCAN,
    Detections,
    committed,
    produce_to,
    scores_for,
)
from tests.streams import read_all

pytestmark = pytest.mark.stack

LOST, OTHER, LATE = Tile(38020, 22100, 16), Tile(38021, 22100, 16), Tile(38022, 22100, 16)


@pytest.fixture
async def settings(stack_settings: Settings) -> Settings:
    await ensure_topics(
        stack_settings.kafka, [topics.SCORES, topics.DETECTIONS, topics.DEAD_LETTERS]
    )
    return replace(stack_settings, aggregator={"stale_s": 1.0})


@contextlib.asynccontextmanager
async def running(stage: Stage, detections: Detections) -> AsyncIterator[Callable[..., object]]:
    """Run `stage` while the block runs; yields `until(done)`, which polls the detections."""
    stop = asyncio.Event()
    task = asyncio.create_task(stage.run(stop))
    await detections.consumer.start()

    async def until(done: Callable[[], bool], timeout: float = 40) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, f"timed out; detections {detections.tile_ids()}"
            assert not task.done(), f"the aggregator stopped: {task.exception()}"
            await detections.poll()

    try:
        yield until
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await detections.consumer.stop()


def _held_open(stage: Stage, tile: Tile, scores: int) -> bool:
    """Whether the aggregator holds `tile` open with `scores` of its scores."""
    join = stage.join  # type: ignore[attr-defined]
    return any(key[0] == tile.quadkey and len(t.scores) == scores for key, t in join.open.items())


def _dropped(cause: str) -> float:
    return metrics.DROPPED_TILES.labels(cause)._value.get()  # type: ignore[no-any-return]


async def test_a_tile_that_cannot_complete_is_dead_lettered_and_commits_pass_it(
    settings: Settings,
) -> None:
    lost = scores_for(LOST, [0.9, 0.9, 0.9])
    offsets = await produce_to(settings, 0, lost[:2])  # its third score was lost upstream
    before = _dropped("stale")
    stage = make_stage(settings)
    detections = Detections(settings)
    async with running(stage, detections) as until:
        # The partition keeps streaming other tiles for longer than the stale limit.
        for k in range(12):
            await produce_to(settings, 0, scores_for(Tile(38100 + k, 22100, 16), [0.1]))
            await asyncio.sleep(0.25)
        others = {Tile(38100 + k, 22100, 16).quadkey for k in range(12)}
        await until(lambda: others <= set(detections.tile_ids()))
    letters = [
        pb.DeadLetter.FromString(r.value)
        for r in await read_all(settings, topics.DEAD_LETTERS, expect=1)
    ]
    [letter] = letters
    assert (letter.tile_id, letter.scan_id, letter.service) == (LOST.quadkey, SCAN, "aggregator")
    assert "2 of 3" in letter.reason and "dropped" in letter.reason, letter.reason
    assert letter.origin_topic == topics.topic_name(settings.kafka.topic_prefix, topics.SCORES)
    assert (letter.origin_partition, letter.origin_offset) == (0, offsets[0])
    assert LOST.quadkey not in detections.tile_ids()
    assert _dropped("stale") == before + 1
    # Everything is committed: the dropped tile holds nothing back.
    assert (await committed(settings, stage.config.group(settings.kafka)))[0] == 2 + 12


async def test_a_pause_upstream_longer_than_the_stale_limit_loses_no_tile(
    settings: Settings,
) -> None:
    held = scores_for(LOST, [0.9, 0.9, 0.9])
    await produce_to(settings, 0, held[:2])
    stage = make_stage(settings)
    detections = Detections(settings)
    async with running(stage, detections) as until:
        await until(lambda: _held_open(stage, LOST, scores=2))
        # On purpose: nothing arrives for three stale limits (the model server is down, say).
        await asyncio.sleep(3 * settings.aggregator.stale_s)
        await produce_to(settings, 0, scores_for(OTHER, [0.1]))  # the stream resumes
        await produce_to(settings, 0, held[2:])
        await until(lambda: LOST.quadkey in detections.tile_ids())
    assert sorted(detections.tile_ids()) == sorted([LOST.quadkey, OTHER.quadkey])
    assert await read_all(settings, topics.DEAD_LETTERS, expect=1, timeout=3) == []


async def test_late_and_redelivered_scores_hold_no_commit_back(settings: Settings) -> None:
    settings = replace(settings, aggregator={"max_open_tiles": 1})
    late = scores_for(LATE, [0.9, 0.9])
    done = scores_for(OTHER, [0.2, 0.3])
    # LATE opens, OTHER's first score pushes it out (the bound is one open tile), OTHER
    # completes; then LATE's late score and a redelivered part of OTHER arrive, and a last tile.
    last = scores_for(LOST, [0.4])
    await produce_to(settings, 0, [late[0], done[0], done[1], late[1], done[0], *last])
    stage = make_stage(settings)
    detections = Detections(settings)
    async with running(stage, detections) as until:
        await until(lambda: LOST.quadkey in detections.tile_ids())
        await detections.poll(1000)
    assert sorted(detections.tile_ids()) == sorted([OTHER.quadkey, LOST.quadkey])
    [letter] = [
        pb.DeadLetter.FromString(r.value)
        for r in await read_all(settings, topics.DEAD_LETTERS, expect=1)
    ]
    assert letter.tile_id == LATE.quadkey and "MAX_OPEN_TILES" in letter.reason
    assert (await committed(settings, stage.config.group(settings.kafka)))[0] == 6

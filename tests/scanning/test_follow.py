"""`amberscan scan` follows a scan through a database restart (#10, defect 8).

The follower reads progress through a proxy that is cut for longer than a pooled connection is
waited for, as a SIGKILLed PostgreSQL is; the tiles finish meanwhile (written straight to the
database, as the sink would). The follower must retry, say so, and end with the full summary
instead of dying with `AdminShutdown` or a pool timeout.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from amberscan import scanning
from amberscan.common.db import CONNECTION_WAIT_S, Database
from amberscan.common.settings import Settings, replace
from tests.outage import database_address, database_url_via, outage_proxy

pytestmark = pytest.mark.stack


async def test_follow_survives_a_database_restart(
    stack_settings: Settings,
    database: Database,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with outage_proxy(database_address(stack_settings.database.url)) as proxy:
        via = replace(
            stack_settings, database={"url": database_url_via(stack_settings.database.url, proxy)}
        )
        async with Database(via.database) as followed:
            answered = asyncio.Event()  # the follower has read the progress through the proxy
            fetch = followed.fetch

            async def fetched(query: str, *params: Any) -> list[tuple[Any, ...]]:
                rows = await fetch(query, *params)
                answered.set()
                return rows

            monkeypatch.setattr(followed, "fetch", fetched)
            follower = asyncio.create_task(
                scanning.follow(followed, "s8", 3, timeout_s=120, progress=False, poll_s=0.1)
            )
            await asyncio.wait_for(answered.wait(), 30)
            await database.execute(
                "INSERT INTO scan_tiles (scan_id, tile_id, status) VALUES ('s8', 'a', 'done')"
            )
            await proxy.cut()  # PostgreSQL killed mid-scan
            await database.execute(
                "INSERT INTO scan_tiles (scan_id, tile_id, status, reason) VALUES "
                "('s8', 'b', 'done', ''), ('s8', 'c', 'failed', 'segmenter: PNG truncated')"
            )
            # On purpose: down for longer than a pooled connection is waited for.
            await asyncio.sleep(CONNECTION_WAIT_S + 3)
            assert not follower.done(), follower.result()
            await proxy.restore()  # back from its restart
            summary = await asyncio.wait_for(follower, 90)
    assert summary.complete and summary.error == "", summary
    assert (summary.tiles, summary.done, summary.failed) == (3, 2, 1)
    assert summary.failures == [{"tile_id": "c", "reason": "segmenter: PNG truncated"}]
    notes = capsys.readouterr().err
    assert "the database does not answer" in notes and "answers again" in notes, notes


async def test_follow_names_the_outage_when_it_times_out(
    stack_settings: Settings, database: Database
) -> None:
    async with outage_proxy(database_address(stack_settings.database.url)) as proxy:
        via = replace(
            stack_settings, database={"url": database_url_via(stack_settings.database.url, proxy)}
        )
        async with Database(via.database) as followed:
            await proxy.cut()
            summary = await scanning.follow(followed, "s9", 2, timeout_s=3, progress=False)
    assert not summary.complete
    assert "timed out" in summary.error and "database has not answered" in summary.error

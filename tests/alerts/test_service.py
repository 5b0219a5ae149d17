"""Alerts on the real stack: a watched static STAC catalogue (over loopback HTTP) gains a newer
vintage with mining for two tiles; watch, as one replica and then two after a restart, sends
exactly one signed webhook, one e-mail (to a local aiosmtpd server) and one feed entry, and
nothing more across another restart. A receiver that is down gets the retries, then a failed
entry in the delivery log, and nothing is sent twice when it comes back. The pipeline between
the scan requests and PostGIS stands in: the test stores each requested tile's detection as the
sink stores it (its verdict chosen by the test, so no model build decides it)."""

from __future__ import annotations

import asyncio
import json
import time
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path

import pytest
from shapely import geometry as sg

from amberscan.alerts import feed, store
from amberscan.alerts.core import EventKey, Verdict
from amberscan.alerts.service import Alerter
from amberscan.common import topics
from amberscan.common.db import Database
from amberscan.common.settings import Settings
from amberscan.geo.tiles import Tile
from amberscan.tiler import demo
from amberscan.v1 import messages_pb2 as pb
from amberscan.watch import service
from amberscan.watch import store as watch_store
from tests.alerts.conftest import (
    CLEAN,
    MINING,
    MINING_HIGH,
    Mailbox,
    Receiver,
    detection,
    store_detections,
)
from tests.imagery.rasters import Catalogue, Served, file_server
from tests.streams import free_port, read_all, served

pytestmark = pytest.mark.stack
TILES = [d.tile for d in demo.demo_layout()]
REGION = json.dumps(sg.mapping(sg.box(*demo.demo_bbox())))
ATOM = "{http://www.w3.org/2005/Atom}"
NOTHING = {"events": 0, "deliveries": 0, "sent": 0, "failed": 0, "released": 0}


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)


async def sent(db: Database) -> int:
    return int((await db.fetch("SELECT count(*) FROM watch_tiles WHERE sent"))[0][0])


async def rounds_seen(db: Database, n: int) -> None:
    """Until the watch's last_round_at has moved `n` times."""
    last, seen = await db.fetch("SELECT last_round_at FROM watches"), 0
    deadline = time.monotonic() + 30
    while seen < n:
        assert time.monotonic() < deadline, f"only {seen} of {n} rounds"
        await asyncio.sleep(0.05)
        now = await db.fetch("SELECT last_round_at FROM watches")
        if now != last:
            seen, last = seen + 1, now


async def watching(
    settings: Settings, replicas: int, until_done: Callable[[], Awaitable[None]]
) -> None:
    """Run `replicas` watch services (rounds and alerts) until `until_done` returns; stop them."""
    stop = asyncio.Event()
    tasks = [asyncio.create_task(service.run(settings, stop)) for _ in range(replicas)]
    try:
        await until_done()
        assert not any(t.done() for t in tasks), [t.exception() for t in tasks if t.done()]
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=60)


async def requests(settings: Settings, expect: int) -> list[pb.ScanRequest]:
    records = await read_all(settings, topics.SCAN_REQUESTS, expect=expect, timeout=30)
    return [pb.ScanRequest.FromString(r.value) for r in records]


async def feed_entries(db: Database, sub: store.Subscription) -> list[ET.Element]:
    alerts = []
    for delivery in await store.published(db, sub.subscription_id):
        alert, _ = await store.alert(db, delivery)
        alerts.append((alert, datetime.fromisoformat(alert.created_at)))
    document = feed.atom(
        sub.subscription_id, "klesiv", sub.level, alerts, "http://x", sub.created_at
    )
    return ET.fromstring(document).findall(f"{ATOM}entry")


@pytest.fixture
async def catalogue(tmp_path: Path, shared_data: Path):  # type: ignore[no-untyped-def]
    async with served(file_server(tmp_path, Served())) as base:
        yield Catalogue(tmp_path, base, demo.demo_images(shared_data / "tiles"))


async def test_new_damage_is_alerted_once_by_webhook_email_and_feed(
    settings: Settings,
    catalogue: Catalogue,
    receiver: tuple[Receiver, str],
    smtp: tuple[Mailbox, int],
) -> None:
    hook, url = receiver
    box, _ = smtp
    items = [catalogue.item(t, "2018-05-01") for t in TILES]
    source = catalogue.write(items)
    async with Database(settings.database) as db:
        watch_id = await watch_store.add_watch(
            db, REGION, "stac", 0.3, sources=[source], name="klesiv"
        )
        webhook = await store.subscribe(db, watch_id, "flagged", "webhook", url)
        hook.secret = webhook.secret
        await store.subscribe(db, watch_id, "flagged", "email", "ops@example.org")
        flagged_feed = await store.subscribe(db, watch_id, "flagged", "feed")
        high_feed = await store.subscribe(db, watch_id, "high", "feed")

        # Round 1, one replica: every tile's first imagery, no damage (the baseline).
        async def first_round() -> None:
            await until(lambda: _at_least(sent(db), 8))

        await watching(settings, 1, first_round)
        first = await requests(settings, 8)
        await store_detections(
            db,
            [
                detection(Tile.from_quadkey(r.tile.quadkey), r.vintage, r.scan_id, CLEAN)
                for r in first
            ],
        )

        # A newer vintage with mining for two tiles; watch restarts as two replicas.
        newer = [TILES[1], TILES[5]]
        catalogue.write(
            [*items, *(catalogue.item(t, "2019-06-01", source=TILES[0]) for t in newer)]
        )

        async def second_round() -> None:
            await until(lambda: _at_least(sent(db), 10))
            second = [r for r in await requests(settings, 10) if r.vintage == "2019-06-01"]
            assert sorted(r.tile.quadkey for r in second) == sorted(t.quadkey for t in newer)
            scores = {TILES[1].quadkey: MINING_HIGH, TILES[5].quadkey: MINING}
            await store_detections(
                db,
                [
                    detection(
                        Tile.from_quadkey(r.tile.quadkey),
                        r.vintage,
                        r.scan_id,
                        scores[r.tile.quadkey],
                    )
                    for r in second
                ],
            )

            async def delivered() -> bool:
                return (
                    len(hook.accepted) >= 1
                    and len(box.messages) >= 1
                    and len(await store.published(db, high_feed.subscription_id)) >= 1
                )

            await until(delivered)
            await rounds_seen(db, 3)  # more rounds and alert passes of both replicas

        await watching(settings, 2, second_round)

        # Restarted once more: rounds and alert passes send nothing more.
        await watching(settings, 2, lambda: rounds_seen(db, 3))
        assert await Alerter(settings, db, "late-replica", 30.0).run_once() == NOTHING

        assert hook.refused == 0 and len(hook.accepted) == 1, hook.accepted
        (alert,) = hook.accepted
        assert (alert["level"], alert["watch"], alert["test"]) == (
            "flagged",
            {"id": watch_id, "name": "klesiv"},
            False,
        )
        assert sorted(t["tile_id"] for t in alert["tiles"]) == sorted(t.quadkey for t in newer)
        assert alert["imagery_dates"] == ["2019-06-01"] and alert["models"] == ["m-test"]
        assert alert["hectares"] == pytest.approx(0.4 + 0.3)  # 4 and 3 positives, 0.1 ha each
        for tile in alert["tiles"]:
            assert tile["debugger_url"] == (
                f"http://amber.test/tile/{tile['tile_id']}?imagery_date=2019-06-01&model=m-test"
            )
            assert tile["map_url"].startswith("http://amber.test/?bbox=")
        assert hook.deliveries == [str(alert["delivery_id"])]

        (mail,) = box.messages
        assert mail["To"] == "ops@example.org"
        assert mail["Subject"] == "amberscan: new damage in klesiv: 2 tiles, 0.70 ha"

        (entry,) = await feed_entries(db, flagged_feed)
        assert "2 tiles" in (entry.findtext(f"{ATOM}title") or "")
        (high,) = await feed_entries(db, high_feed)  # only the tile above the high tier
        assert "1 tile," in (high.findtext(f"{ATOM}title") or "")
        levels = await db.fetch("SELECT level, tile_id FROM alert_events ORDER BY level, tile_id")
        assert levels == sorted(
            [
                ("flagged", TILES[1].quadkey),
                ("flagged", TILES[5].quadkey),
                ("high", TILES[1].quadkey),
            ]
        )
        (logged,) = await store.log(db, webhook.subscription_id)
        assert logged["state"] == "sent" and [a["status"] for a in logged["log"]] == [204]


async def _at_least(count: Awaitable[int], n: int) -> bool:
    return await count >= n


async def finished_round(
    db: Database,
    watch_id: int,
    scan_id: str,
    tiles: list[tuple[Tile, str, list[float]]],
    model: str = "m-test",
    stored: int | None = None,
) -> None:
    """A watch round of these (tile, date) pairs, and their detections stored as the sink does
    (only the first `stored` of them, if given: the others still on their way)."""
    await db.execute("UPDATE watches SET next_round_at = now() WHERE watch_id = %s", watch_id)
    lease = await watch_store.claim(db, "test-replica", 30.0)
    assert lease is not None
    pairs = [(t.quadkey, date) for t, date, _ in tiles]
    assert await watch_store.record_new(db, lease, scan_id, pairs, model) == pairs
    await watch_store.open_round(db, lease, scan_id)
    assert await watch_store.release(db, lease, cursor="")
    await store_detections(
        db, [detection(t, date, scan_id, scores, model) for t, date, scores in tiles][:stored]
    )


async def test_a_receiver_that_is_down_gets_the_retries_then_a_failed_entry(
    settings: Settings,
) -> None:
    port = free_port()
    async with Database(settings.database) as db:
        watch_id = await watch_store.add_watch(db, REGION, "stac", 3600, sources=["http://x/"])
        sub = await store.subscribe(
            db, watch_id, "flagged", "webhook", f"http://127.0.0.1:{port}/hook"
        )
        t0, t1 = TILES[0], TILES[1]
        await finished_round(
            db, watch_id, "r1", [(t0, "2018-05-01", CLEAN), (t1, "2018-05-01", CLEAN)]
        )
        await finished_round(db, watch_id, "r2", [(t0, "2019-06-01", MINING)])
        alerter = Alerter(settings, db, "replica-a", 30.0)
        assert await alerter.run_once() == {**NOTHING, "events": 1, "deliveries": 1, "failed": 1}
        (entry,) = await store.log(db, sub.subscription_id)
        # AMBERSCAN_MAX_RETRIES=2 here: the first try and two retries, each logged.
        assert (entry["state"], entry["attempts"], entry["events"]) == ("failed", 3, 1)
        assert [a["outcome"] for a in entry["log"]] == ["retry", "retry", "failed"]
        assert all(f"127.0.0.1:{port}" in a["error"] for a in entry["log"]), entry["log"]

        # The receiver comes back: the failed delivery is not sent again; new damage is, once.
        hook = Receiver(secret=sub.secret)
        async with served(hook.app(), port):
            assert await alerter.run_once() == NOTHING
            await finished_round(db, watch_id, "r3", [(t1, "2019-06-01", MINING)])
            assert (await alerter.run_once())["sent"] == 1
            assert await Alerter(settings, db, "replica-b", 30.0).run_once() == NOTHING
        assert len(hook.accepted) == 1 and hook.refused == 0
        assert [t["tile_id"] for t in hook.accepted[0]["tiles"]] == [t1.quadkey]
        states = [(d["state"], d["events"]) for d in await store.log(db, sub.subscription_id)]
        assert states == [("sent", 1), ("failed", 1)]


async def test_a_model_change_alone_alerts_nothing(
    settings: Settings, receiver: tuple[Receiver, str]
) -> None:
    hook, url = receiver
    async with Database(settings.database) as db:
        watch_id = await watch_store.add_watch(db, REGION, "stac", 3600, sources=["http://x/"])
        hook.secret = (await store.subscribe(db, watch_id, "flagged", "webhook", url)).secret
        high = await store.subscribe(db, watch_id, "high", "feed")
        t0 = TILES[0]
        await finished_round(db, watch_id, "r1", [(t0, "2018-05-01", CLEAN)])
        await finished_round(db, watch_id, "r2", [(t0, "2019-06-01", MINING)])
        alerter = Alerter(settings, db, "replica-a", 30.0)
        assert (await alerter.run_once())["sent"] == 1
        # A new model scores the same imagery (a round under it, the verdict flagged again and
        # now above the high tier): not new damage.
        await finished_round(db, watch_id, "r3", [(t0, "2019-06-01", MINING_HIGH)], model="m2")
        assert await alerter.run_once() == NOTHING
        assert len(hook.accepted) == 1 and await store.published(db, high.subscription_id) == []


async def test_a_reviewers_confirmation_is_alerted_once(settings: Settings) -> None:
    async with Database(settings.database) as db:
        watch_id = await watch_store.add_watch(db, REGION, "stac", 3600, sources=["http://x/"])
        confirmed = await store.subscribe(db, watch_id, "confirmed", "feed")
        flagged = await store.subscribe(db, watch_id, "flagged", "feed")
        t0 = TILES[0]
        await finished_round(db, watch_id, "r1", [(t0, "2018-05-01", MINING)])  # the baseline
        alerter = Alerter(settings, db, "replica-a", 30.0)
        assert await alerter.run_once() == NOTHING
        await db.execute(
            "INSERT INTO reviews (tile_id, imagery_date, model_version, verdict, reviewer) "
            "VALUES (%s, '2018-05-01', 'm-test', 'confirmed', 'ala')",
            t0.quadkey,
        )
        assert await alerter.run_once() == {**NOTHING, "events": 1, "deliveries": 1}
        assert await alerter.run_once() == NOTHING
        (delivery,) = await store.published(db, confirmed.subscription_id)
        alert, _ = await store.alert(db, delivery)
        assert [(t.tile_id, t.imagery_date) for t in alert.tiles] == [(t0.quadkey, "2018-05-01")]
        assert await store.published(db, flagged.subscription_id) == []


async def test_a_replica_whose_claim_was_taken_writes_nothing(settings: Settings) -> None:
    async with Database(settings.database) as db:
        watch_id = await watch_store.add_watch(db, REGION, "stac", 3600, sources=["http://x/"])
        sub = await store.subscribe(db, watch_id, "flagged", "webhook", "https://example.org/h")
        verdict = Verdict(watch_id, TILES[0].quadkey, "2019-06-01", "m", True, 0.3, 0.8, False)
        key = EventKey(watch_id, TILES[0].quadkey, "2019-06-01", "flagged")
        assert await store.record_round(db, "r1", [(key, verdict)]) == 1
        assert await store.record_round(db, "r1", [(key, verdict)]) == 0  # the key: once
        (delivery,) = await store.make_deliveries(db)
        assert await store.make_deliveries(db) == []
        stalled = await store.claim(db, "stalled", 0.0)  # its claim runs out at once
        assert stalled is not None and stalled.delivery_id == delivery
        taker = await store.claim(db, "taker", 30.0)
        assert taker is not None and taker.token == stalled.token + 1
        with pytest.raises(store.DeliveryLost, match="taken by another replica"):
            await store.log_attempt(db, stalled, 1, "sent", status=204)
        await store.log_attempt(db, taker, 1, "sent", status=204)
        assert await store.claim(db, "third", 30.0) is None
        (entry,) = await store.log(db, sub.subscription_id)
        assert entry["state"] == "sent"
        assert [(a["owner"], a["outcome"]) for a in entry["log"]] == [("taker", "sent")]


async def test_a_tile_later_than_the_round_wait_is_alerted(settings: Settings) -> None:
    """A round that waited AMBERSCAN_ALERT_ROUND_WAIT_S with a tile missing alerts what it has;
    the late tile's damage is alerted when its detection comes, and the round then closes. A
    round whose tile never comes closes after `LATE_TILES_S`, as long as watch waits before
    sending the tile again in a new round."""
    from amberscan.watch.core import UNANSWERED_AFTER_S

    assert store.LATE_TILES_S == UNANSWERED_AFTER_S
    async with Database(settings.database) as db:
        watch_id = await watch_store.add_watch(db, REGION, "stac", 3600, sources=["http://x/"])
        feed_sub = await store.subscribe(db, watch_id, "flagged", "feed")
        t0, t1, t2 = TILES[0], TILES[1], TILES[2]
        before = [(t, "2018-05-01", CLEAN) for t in (t0, t1, t2)]
        await finished_round(db, watch_id, "r0", before)
        late = [(t0, "2019-06-01", MINING), (t1, "2019-06-01", MINING)]
        await finished_round(db, watch_id, "r1", late, stored=1)
        alerter = Alerter(settings, db, "replica-a", 30.0)
        assert await alerter.run_once() == NOTHING  # r1 neither complete nor past the wait
        wait = settings.alerts.round_wait_s
        await db.execute(
            "UPDATE watch_rounds SET started_at = now() - make_interval(secs => %s) "
            "WHERE scan_id = 'r1'",
            wait + 1,
        )
        assert await alerter.run_once() == {**NOTHING, "events": 1, "deliveries": 1}
        await store_detections(db, [detection(t1, "2019-06-01", "r1", MINING)])
        assert await alerter.run_once() == {**NOTHING, "events": 1, "deliveries": 1}
        published = await store.published(db, feed_sub.subscription_id)
        alerted = [(await store.alert(db, d))[0] for d in published]
        assert sorted(t.tile_id for a in alerted for t in a.tiles) == sorted(
            [t0.quadkey, t1.quadkey]
        )
        closed = "SELECT alerted_at IS NOT NULL FROM watch_rounds WHERE scan_id = %s"
        assert await db.fetch(closed, "r1") == [(True,)]
        # A tile that never comes: looked for until LATE_TILES_S after the wait, then closed.
        await finished_round(db, watch_id, "r2", [(t2, "2019-06-01", MINING)], stored=0)
        for age, closes in ((wait + 1, False), (wait + store.LATE_TILES_S + 1, True)):
            await db.execute(
                "UPDATE watch_rounds SET started_at = now() - make_interval(secs => %s) "
                "WHERE scan_id = 'r2'",
                age,
            )
            assert await alerter.run_once() == NOTHING
            assert await db.fetch(closed, "r2") == [(closes,)]


async def test_overlapping_watches_are_each_alerted(settings: Settings) -> None:
    """A tile is scanned once for every watch (the round of whichever watch sent it first), yet
    its new damage and its confirmation alert each watch whose region overlaps it, once; a
    watch that only touches the tile along an edge is not alerted."""
    t0, t1 = TILES[0], TILES[1]
    west, south, east, north = t0.bounds()
    inset = (east - west) / 4
    inside = json.dumps(
        sg.mapping(sg.box(west + inset, south + inset, east - inset, north - inset))
    )
    assert (t1.x, t1.y) == (t0.x + 1, t0.y)  # so a box west of t0 touches t0 alone
    edge = json.dumps(sg.mapping(sg.box(west - (east - west), south, west, north)))
    async with Database(settings.database) as db:
        wide = await watch_store.add_watch(db, REGION, "stac", 3600, sources=["http://x/"])
        small = await watch_store.add_watch(db, inside, "stac", 3600, sources=["http://x/"])
        touching = await watch_store.add_watch(db, edge, "stac", 3600, sources=["http://x/"])
        # Only the wide watch has rounds here (finished_round claims the watch that is due).
        await db.execute(
            "UPDATE watches SET next_round_at = now() + interval '1 day' WHERE watch_id <> %s", wide
        )
        feeds = {
            (w, level): await store.subscribe(db, w, level, "feed")
            for w in (wide, small, touching)
            for level in ("flagged", "confirmed")
        }
        # The wide watch's rounds send both tiles; the small one's would find t0 sent already.
        before = [(t0, "2018-05-01", CLEAN), (t1, "2018-05-01", CLEAN)]
        await finished_round(db, wide, "r1", before)
        await finished_round(
            db, wide, "r2", [(t0, "2019-06-01", MINING), (t1, "2019-06-01", MINING)]
        )
        alerter = Alerter(settings, db, "replica-a", 30.0)
        assert (await alerter.run_once())["events"] == 3  # t0 and t1 to wide, t0 to small
        await db.execute(
            "INSERT INTO reviews (tile_id, imagery_date, model_version, verdict, reviewer) "
            "VALUES (%s, '2019-06-01', 'm-test', 'confirmed', 'ala')",
            t0.quadkey,
        )
        assert (await alerter.run_once())["events"] == 2  # confirmed to wide and small
        assert await alerter.run_once() == NOTHING

        async def alerted(watch: int, level: str) -> list[str]:
            tiles = []
            for delivery in await store.published(db, feeds[watch, level].subscription_id):
                tiles += [t.tile_id for t in (await store.alert(db, delivery))[0].tiles]
            return sorted(tiles)

        assert await alerted(wide, "flagged") == sorted([t0.quadkey, t1.quadkey])
        assert await alerted(small, "flagged") == [t0.quadkey]
        assert await alerted(wide, "confirmed") == await alerted(small, "confirmed") == [t0.quadkey]
        assert await alerted(touching, "flagged") == await alerted(touching, "confirmed") == []

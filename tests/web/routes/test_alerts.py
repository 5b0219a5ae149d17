"""Alert subscriptions through the web API, against the real stack: behind the token (reads
too: they hold addresses), a webhook's secret answered once, a sample sent and verified by a
receiver, a feed served as Atom to any reader."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import aiohttp
import pytest
from shapely import geometry as sg

from amberscan.tiler import demo
from amberscan.watch import store as watch_store
from tests.alerts.conftest import Receiver
from tests.streams import served
from tests.web.client import AUTH, fetch, get, post
from tests.web.conftest import Seeded

pytestmark = pytest.mark.stack
ATOM = "{http://www.w3.org/2005/Atom}"


async def delete(url: str, headers: dict[str, str]) -> int:
    async with aiohttp.ClientSession() as s, s.delete(url, headers=headers) as r:
        return r.status


async def test_subscriptions_behind_the_token(server: str, seeded: Seeded) -> None:
    region = json.dumps(sg.mapping(sg.box(*demo.demo_bbox())))
    watch_id = await watch_store.add_watch(
        seeded.db, region, "stac", 3600, sources=["http://x/"], name="klesiv"
    )
    hook = Receiver()
    async with served(hook.app()) as base:
        body = {"watch_id": watch_id, "level": "flagged", "webhook": f"{base}/hook"}
        assert (await post(f"{server}/api/alerts", body))[0] == 401
        status, added = await post(f"{server}/api/alerts", body, AUTH)
        assert status == 201 and added["kind"] == "webhook" and added["secret"].startswith("whsec_")
        hook.secret = added["secret"]
        sid = added["subscription_id"]

        status, tested = await post(f"{server}/api/alerts/{sid}/test", {}, AUTH)
        assert status == 200 and tested["state"] == "sent", tested
        (sample,) = hook.accepted
        assert sample["test"] is True and sample["watch"] == {"id": watch_id, "name": "klesiv"}
        assert hook.refused == 0 and hook.deliveries == [str(tested["delivery_id"])]

    assert (await get(f"{server}/api/alerts"))[0] == 401
    async with aiohttp.ClientSession() as s, s.get(f"{server}/api/alerts", headers=AUTH) as r:
        listed = (await r.json())["subscriptions"]
    assert [x["subscription_id"] for x in listed] == [sid] and "secret" not in listed[0]
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"{server}/api/alerts/{sid}/deliveries", headers=AUTH) as r,
    ):
        (logged,) = (await r.json())["deliveries"]
    assert logged["test"] and logged["state"] == "sent" and logged["log"][0]["status"] == 204

    for bad, message in (
        ({"watch_id": watch_id, "webhook": "http://hooks.example.org/x"}, "loopback"),
        ({"watch_id": watch_id, "email": "ops"}, "e-mail address 'ops'"),
        ({"watch_id": watch_id, "feed": True, "level": "possible"}, "alert level 'possible'"),
        ({"watch_id": watch_id + 1, "feed": True}, f"no watch {watch_id + 1}"),
        ({"watch_id": watch_id, "feed": True, "email": "a@b.org"}, "give one destination"),
    ):
        status, answer = await post(f"{server}/api/alerts", bad, AUTH)
        assert status == 400 and message in answer["error"], (bad, answer)

    assert await delete(f"{server}/api/alerts/{sid}", AUTH) == 200
    assert await delete(f"{server}/api/alerts/{sid}", AUTH) == 404


async def test_a_feed_is_atom_open_to_readers(server: str, seeded: Seeded) -> None:
    region = json.dumps(sg.mapping(sg.box(*demo.demo_bbox())))
    watch_id = await watch_store.add_watch(seeded.db, region, "stac", 3600, sources=["http://x/"])
    status, added = await post(
        f"{server}/api/alerts", {"watch_id": watch_id, "level": "high", "feed": True}, AUTH
    )
    assert status == 201 and added["feed_url"].endswith(
        f"/api/alerts/{added['subscription_id']}/feed.atom"
    )
    url = f"{server}/api/alerts/{added['subscription_id']}/feed.atom"
    status, document, content_type = await fetch(url)
    assert status == 200 and content_type == "application/atom+xml"
    assert ET.fromstring(document).findall(f"{ATOM}entry") == []
    assert (await post(f"{url.rsplit('/', 1)[0]}/test", {}, AUTH))[0] == 200
    _, document, _ = await fetch(url)
    (entry,) = ET.fromstring(document).findall(f"{ATOM}entry")
    assert (entry.findtext(f"{ATOM}title") or "").startswith("[test] amberscan: new high-score")

"""Alert subscriptions of watched regions (issue 30). Everything but the feed needs the token:
subscriptions hold e-mail addresses and webhook URLs. A feed is read by feed readers, which
send no token: its URL is open, as the map's detections are."""

from __future__ import annotations

import os
import socket
from datetime import datetime

from aiohttp import web

from amberscan.alerts import feed, service, store
from amberscan.alerts.core import Alert, AlertError
from amberscan.web import params
from amberscan.web.core import BadRequest
from amberscan.web.middleware import refuse_without_token
from amberscan.web.responses import json_response
from amberscan.web.state import DB, SETTINGS

routes = web.RouteTableDef()


def _id(request: web.Request) -> int:
    try:
        return int(request.match_info["subscription_id"])
    except ValueError:
        raise BadRequest("alert subscription id: an integer") from None


async def _subscription(request: web.Request) -> store.Subscription:
    try:
        return await store.subscription(request.app[DB], _id(request))
    except AlertError as missing:
        raise web.HTTPNotFound(text=str(missing)) from None


@routes.get("/api/alerts")
async def list_subscriptions(request: web.Request) -> web.StreamResponse:
    """Every subscription (`?watch=ID`: one region's), never a webhook's secret."""
    refusal = refuse_without_token(request)
    if refusal is not None:
        return refusal
    watch = request.query.get("watch")
    try:
        watch_id = int(watch) if watch else None
    except ValueError:
        raise BadRequest(f"watch={watch!r}: a watch id (an integer)") from None
    subs = await store.subscriptions(request.app[DB], watch_id)
    return json_response({"subscriptions": [s.public() for s in subs]})


@routes.post("/api/alerts")
async def add_subscription(request: web.Request) -> web.Response:
    """Body: `watch_id`, `level` (flagged, high, confirmed) and one of `webhook` (URL),
    `email` (address) or `feed` (true). A webhook's signing secret is in the answer, once."""
    data = await params.body(request)
    kinds = [k for k in ("webhook", "email", "feed") if data.get(k)]
    if len(kinds) != 1:
        raise BadRequest("give one destination: webhook (a URL), email (an address) or feed: true")
    (kind,) = kinds
    target = "" if kind == "feed" else data[kind]
    if not isinstance(target, str) or not isinstance(data.get("watch_id"), int):
        raise BadRequest("watch_id: an integer; webhook/email: a string")
    try:
        sub = await store.subscribe(
            request.app[DB], data["watch_id"], str(data.get("level", "flagged")), kind, target
        )
    except AlertError as problem:
        raise BadRequest(str(problem)) from None
    answer = sub.public()
    if kind == "webhook":
        answer["secret"] = sub.secret
    if kind == "feed":
        base = request.app[SETTINGS].alerts.base_url.rstrip("/")
        answer["feed_url"] = f"{base}/api/alerts/{sub.subscription_id}/feed.atom"
    return json_response(answer, status=201)


@routes.delete("/api/alerts/{subscription_id}")
async def remove_subscription(request: web.Request) -> web.Response:
    sub = await _subscription(request)
    await store.unsubscribe(request.app[DB], sub.subscription_id)
    return json_response({"deleted": sub.subscription_id})


@routes.post("/api/alerts/{subscription_id}/test")
async def send_test(request: web.Request) -> web.Response:
    """Send a sample alert to the subscription now; its delivery and attempts as logged."""
    sub = await _subscription(request)
    owner = f"web-{socket.gethostname()}-{os.getpid()}"
    result = await service.send_test(
        request.app[DB], request.app[SETTINGS], sub.subscription_id, owner
    )
    return json_response(result, status=200 if result["state"] == "sent" else 502)


@routes.get("/api/alerts/{subscription_id}/deliveries")
async def deliveries(request: web.Request) -> web.StreamResponse:
    """The delivery log: the newest deliveries, each with its attempts."""
    refusal = refuse_without_token(request)
    if refusal is not None:
        return refusal
    sub = await _subscription(request)
    return json_response({"deliveries": await store.log(request.app[DB], sub.subscription_id)})


@routes.get("/api/alerts/{subscription_id}/feed.atom")
async def atom(request: web.Request) -> web.Response:
    """A feed subscription's Atom feed (open: feed readers send no token)."""
    sub = await _subscription(request)
    if sub.kind != "feed":
        raise web.HTTPNotFound(text=f"alert subscription {sub.subscription_id} is not a feed")
    db = request.app[DB]
    entries: list[tuple[Alert, datetime]] = []
    for delivery in await store.published(db, sub.subscription_id):
        alert, _ = await store.alert(db, delivery)
        entries.append((alert, datetime.fromisoformat(alert.created_at)))
    watch = await db.fetch("SELECT name FROM watches WHERE watch_id = %s", sub.watch_id)
    region = (watch[0][0] if watch else "") or f"watch {sub.watch_id}"
    document = feed.atom(
        sub.subscription_id,
        region,
        sub.level,
        entries,
        request.app[SETTINGS].alerts.base_url,
        sub.created_at,
    )
    return web.Response(body=document, content_type="application/atom+xml", charset="utf-8")

"""Alert fixtures on the real stack: a webhook receiver that checks the signature as the README
shows, a local SMTP server (aiosmtpd), and detections stored as the sink stores them."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from typing import Any

import pytest
from aiohttp import web
from aiosmtpd.controller import Controller

from amberscan.common.blobstore import BlobStore
from amberscan.common.db import Database
from amberscan.common.settings import Settings, replace
from amberscan.common.topic_admin import ensure_topics
from amberscan.geo.tiles import Tile
from amberscan.sink.service import write_detection
from amberscan.v1 import messages_pb2 as pb
from tests.streams import free_port, served


@dataclass
class Receiver:
    """A webhook receiver: it verifies `X-Amberscan-Signature` with the subscription's secret
    (HMAC-SHA256 of "<t>.<body>", at most 5 minutes old) and keeps what it accepted."""

    secret: str = ""
    accepted: list[dict[str, Any]] = field(default_factory=list)
    deliveries: list[str] = field(default_factory=list)
    refused: int = 0

    def verified(self, header: str, body: bytes) -> bool:
        parts = dict(p.split("=", 1) for p in header.split(","))
        expected = hmac.new(
            self.secret.encode(), parts["t"].encode() + b"." + body, hashlib.sha256
        ).hexdigest()
        fresh = abs(time.time() - int(parts["t"])) < 300
        return fresh and hmac.compare_digest(expected, parts["v1"])

    def app(self) -> web.Application:
        async def hook(request: web.Request) -> web.Response:
            body = await request.read()
            if not self.verified(request.headers.get("X-Amberscan-Signature", "t=0,v1="), body):
                self.refused += 1
                return web.Response(status=401)
            self.accepted.append(json.loads(body))
            self.deliveries.append(request.headers["X-Amberscan-Delivery"])
            return web.Response(status=204)

        app = web.Application()
        app.router.add_post("/hook", hook)
        return app


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    hook = Receiver()
    async with served(hook.app()) as base:
        yield hook, f"{base}/hook"


class Mailbox:
    """aiosmtpd's handler: every message it was given."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(message_from_bytes(envelope.content))
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp() -> Iterator[tuple[Mailbox, int]]:
    box = Mailbox()
    controller = Controller(box, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield box, controller.port
    finally:
        controller.stop()


@pytest.fixture
async def settings(stack_settings: Settings, smtp: tuple[Mailbox, int]) -> AsyncIterator[Settings]:
    """Quick watch rounds and alert passes, two retries, e-mail to the local SMTP server."""
    settings = replace(
        stack_settings,
        watch={"poll_s": 0.1, "retry_backoff_s": 0.5, "lease_s": 30.0},
        alerts={
            "poll_s": 0.1,
            "smtp_host": "127.0.0.1",
            "smtp_port": smtp[1],
            "smtp_tls": "none",
            "base_url": "http://amber.test",
            "timeout_s": 5.0,
        },
        retry={"max_retries": 2, "backoff_s": 0.05},
    )
    await ensure_topics(settings.kafka)
    await BlobStore(settings.s3).ensure_bucket()
    async with Database(settings.database) as db:
        yield settings
        await db.drop_schema()


def detection(
    tile: Tile, date: str, scan_id: str, scores: list[float], model: str = "m-test"
) -> pb.Detection:
    """A tile's detection: flagged when more than two superpixels score 0.5 or more."""
    positives = sum(s >= 0.5 for s in scores)
    return pb.Detection(
        tile_id=tile.quadkey,
        scan_id=scan_id,
        tile=pb.TileCoord(x=tile.x, y=tile.y, z=tile.z, quadkey=tile.quadkey),
        provider="stac",
        imagery_date=date,
        flagged=positives > 2,
        positives=positives,
        segment_count=len(scores),
        min_positives=2,
        hectares=0.1 * positives,
        tile_geojson=json.dumps(tile.polygon()),
        scores=scores,
        models=pb.ModelVersions(classifier=model, backbone="efficientnet_lite0@1"),
    )


CLEAN = [0.1, 0.2, 0.3, 0.1]
MINING = [0.6, 0.7, 0.8, 0.2]  # flagged, highest score 0.8: below the high tier
MINING_HIGH = [0.6, 0.95, 0.8, 0.7]  # flagged, highest 0.95


async def store_detections(db: Database, detections: list[pb.Detection]) -> None:
    """As the sink stores them (the detection, and its tile done in its scan)."""
    for d in detections:
        await write_detection(db, d)

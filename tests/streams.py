"""Producing to and reading from the real broker, and HTTP servers on loopback, for tests of the
streaming stages and the web app."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from amberscan.common import topics
from amberscan.common.settings import Settings


async def produce(settings: Settings, topic: str, items: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        for key, value in items:
            await producer.send_and_wait(
                topics.topic_name(settings.topic_prefix, topic), value, key=key
            )
    finally:
        await producer.stop()


async def read_all(settings: Settings, topic: str, expect: int, timeout: float = 30) -> list:
    """Every record on `topic` from the start, waiting until at least `expect` arrived."""
    consumer = AIOKafkaConsumer(
        topics.topic_name(settings.topic_prefix, topic),
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await consumer.start()
    records: list = []
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            records += [r for part in batch.values() for r in part]
            if len(records) >= expect:
                # a short grace period shows whether anything beyond `expect` arrives
                batch = await consumer.getmany(timeout_ms=1500)
                records += [r for part in batch.values() for r in part]
                break
    finally:
        await consumer.stop()
    return records


def free_port() -> int:
    """A loopback port nobody listens on, for a server a test starts itself."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def served(app: web.Application, port: int | None = None) -> AsyncIterator[str]:
    """`app` on 127.0.0.1 (`port`, or a free one) while the block runs; yields its base URL."""
    port = port or free_port()
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()

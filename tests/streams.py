"""Producing to and reading from the real broker, the stages' consumer groups as the broker
sees them, and HTTP servers on loopback, for tests of the streaming stages and the web app."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment

from amberscan.common import topics
from amberscan.common.bus import client_options
from amberscan.common.settings import Settings
from amberscan.common.stage import StageConfig
from amberscan.common.topic_admin import admin_client


async def produce(settings: Settings, topic: str, items: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(**client_options(settings.kafka), enable_idempotence=True)
    await producer.start()
    try:
        for key, value in items:
            await producer.send_and_wait(
                topics.topic_name(settings.kafka.topic_prefix, topic), value, key=key
            )
    finally:
        await producer.stop()


async def read_all(settings: Settings, topic: str, expect: int, timeout: float = 30) -> list:
    """Every record on `topic` from the start, waiting until at least `expect` arrived."""
    consumer = AIOKafkaConsumer(
        topics.topic_name(settings.kafka.topic_prefix, topic),
        **client_options(settings.kafka),
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


def group_of(settings: Settings, service: str) -> str:
    """The consumer group of the stage named `service` (unless it names a group of its own)."""
    return StageConfig(service=service, source_topic="").group(settings.kafka)


async def describe_group(
    admin: AIOKafkaAdminClient, group: str
) -> tuple[str, dict[str, list[int]]]:
    """A consumer group's state ("Stable", "PreparingRebalance", "Empty", ...) and the
    partitions (of its source topic) assigned to each of its members."""
    [response] = await admin.describe_consumer_groups([group])
    # (error, group, state, protocol type, protocol, members)
    state, members = response.groups[0][2], response.groups[0][5]
    return state, {
        member[0]: sorted(
            tp.partition
            for tp in (
                ConsumerProtocolMemberAssignment.decode(member[-1]).partitions()
                if member[-1]
                else []
            )
        )
        for member in members
    }


async def group_members(settings: Settings, service: str) -> dict[str, list[int]]:
    """The partitions (of its source topic) assigned to each member of a stage's group."""
    async with admin_client(settings.kafka) as admin:
        return (await describe_group(admin, group_of(settings, service)))[1]


async def joined(settings: Settings, services: Sequence[str], members: int | None = None) -> bool:
    """Whether each stage of `services` is in its consumer group: the group stable and every
    partition of its source topic assigned (to `members` members, when given)."""
    every = list(range(settings.kafka.partitions))
    async with admin_client(settings.kafka) as admin:
        for service in services:
            state, assigned = await describe_group(admin, group_of(settings, service))
            if state != "Stable" or sorted(sum(assigned.values(), [])) != every:
                return False
            if members is not None and len(assigned) != members:
                return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on at `host` (loopback), for a server a test starts itself."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def served(
    app: web.Application, port: int | None = None, host: str = "127.0.0.1"
) -> AsyncIterator[str]:
    """`app` on `host` (`port`, or a free one) while the block runs; yields its base URL."""
    port = port or free_port(host)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()

"""Topic administration: the project's topics created with their configuration, and a topic
prefix's topics deleted (tests, benchmarks and chaos runs clean up with it)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from amberscan.common import topics
from amberscan.common.bus import client_options, connect
from amberscan.common.settings import KafkaConfig

_TOPIC_ALREADY_EXISTS = 36
# Also for a topic that exists: the brokers check Create before they look.
_TOPIC_AUTHORIZATION_FAILED = 29


@asynccontextmanager
async def admin_client(kafka: KafkaConfig) -> AsyncIterator[AIOKafkaAdminClient]:
    """A started admin client of the settings' cluster, closed when the block ends."""
    admin = AIOKafkaAdminClient(**client_options(kafka))
    await connect(admin, kafka)
    try:
        yield admin
    finally:
        await admin.close()


def topic_configs(kafka: KafkaConfig) -> dict[str, str]:
    """The configuration of every topic amberscan creates, from the settings."""
    return {
        "retention.ms": str(kafka.retention_ms),
        "min.insync.replicas": str(kafka.min_insync_replicas),
        "max.message.bytes": str(kafka.max_message_bytes),
    }


async def ensure_topics(kafka: KafkaConfig, names: Sequence[str] = topics.ALL_TOPICS) -> None:
    """Create the project's topics if missing, with the configured partitions, replicas,
    retention, in-sync replicas and largest record."""
    if kafka.min_insync_replicas > kafka.replication_factor:
        raise ValueError(
            f"AMBERSCAN_TOPIC_MIN_INSYNC_REPLICAS {kafka.min_insync_replicas} is more than "
            f"AMBERSCAN_TOPIC_REPLICATION_FACTOR {kafka.replication_factor}: no write could succeed"
        )
    async with admin_client(kafka) as admin:
        new = [
            NewTopic(
                name=topics.topic_name(kafka.topic_prefix, name),
                num_partitions=kafka.partitions,
                replication_factor=kafka.replication_factor,
                topic_configs=topic_configs(kafka),
            )
            for name in names
        ]
        response = await admin.create_topics(new, timeout_ms=30_000)
        for topic, code, *rest in response.topic_errors:
            if code == _TOPIC_AUTHORIZATION_FAILED:
                raise RuntimeError(
                    f"creating topic {topic}: Kafka user {kafka.sasl_username!r} is not allowed "
                    "to (its ACLs need Create and Describe on every topic of the project: "
                    "k8s/overlays/production/kafka-users.yaml)"
                )
            if code not in (0, _TOPIC_ALREADY_EXISTS):
                raise RuntimeError(f"creating topic {topic}: Kafka error {code} {rest}")


async def delete_topics(kafka: KafkaConfig) -> None:
    """Delete every topic named with the settings' prefix (tests, benchmarks and chaos runs clean
    up with this); refuses an empty prefix, which would name every topic of the cluster."""
    if not kafka.topic_prefix:
        raise ValueError("delete_topics needs a topic prefix: an empty one names every topic")
    async with admin_client(kafka) as admin:
        mine = [t for t in await admin.list_topics() if t.startswith(kafka.topic_prefix)]
        if mine:
            await admin.delete_topics(mine)

"""Ask each server of the local stack a real question; print one line each; exit 1 if any fails.

    python stack/health.py [--all] [kafka] [kafka-N] [minio] [postgres] [model-server]

Endpoints come from the same AMBERSCAN_* settings the services use. `--all` checks every server
and reports a missing model server as "not started" rather than an error when no model exists.
"""

from __future__ import annotations

import asyncio
import functools
import os
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable

from amberscan.common.settings import Settings, load_settings, replace


def expected_brokers() -> int:
    """Kafka nodes the stack runs (stack/lib.sh: AMBERSCAN_STACK_KAFKA_BROKERS, 1 or 3)."""
    return int(os.environ.get("AMBERSCAN_STACK_KAFKA_BROKERS", "1"))


async def kafka(settings: Settings, node: int = 0) -> str:
    """The cluster (node 0), or one node of it, answers; the cluster counts all its brokers."""
    from aiokafka.admin import AIOKafkaAdminClient

    from amberscan.common.bus import client_options

    addresses = settings.kafka.bootstrap.split(",")
    bootstrap = addresses[node - 1] if node else settings.kafka.bootstrap
    kafka = replace(settings, kafka={"bootstrap": bootstrap}).kafka
    admin = AIOKafkaAdminClient(**client_options(kafka), request_timeout_ms=5000)
    await admin.start()
    try:
        topics = await admin.list_topics()
        cluster = await admin.describe_cluster()
    finally:
        await admin.close()
    ids = sorted(broker["node_id"] for broker in cluster["brokers"])
    if node and node not in ids:
        raise RuntimeError(f"node {node} is not among the live brokers {ids}")
    if not node and len(ids) < expected_brokers():
        raise RuntimeError(f"{len(ids)} of {expected_brokers()} brokers live: {ids}")
    return f"{len(ids)} broker(s) {ids}, {len(topics)} topic(s)"


async def minio(settings: Settings) -> str:
    scheme = "https" if settings.s3.secure else "http"
    url = f"{scheme}://{settings.s3.endpoint}/minio/health/ready"
    status = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).status)
    if status != 200:
        raise RuntimeError(f"{url} answered {status}")
    return "ready"


async def postgres(settings: Settings) -> str:
    import psycopg

    async with await psycopg.AsyncConnection.connect(
        settings.database.url, connect_timeout=5
    ) as conn:
        row = await (await conn.execute("SELECT postgis_lib_version()")).fetchone()
    return f"PostGIS {row[0] if row else '?'}"


async def model_server(settings: Settings) -> str:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    async with grpc.aio.insecure_channel(settings.model_server.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        raise RuntimeError(f"health status {reply.status}")
    return "serving"


CHECKS: dict[str, Callable[[Settings], Awaitable[str]]] = {
    "kafka": kafka,
    "minio": minio,
    "postgres": postgres,
    "model-server": model_server,
}


async def check(names: list[str], settings: Settings, optional: set[str]) -> int:
    failed = 0
    for name in names:
        started = time.perf_counter()
        try:
            detail = await asyncio.wait_for(CHECKS[name](settings), timeout=10)
            state = "up"
        except Exception as error:  # noqa: BLE001 - any failure means "not answering"
            text = error.details() if hasattr(error, "details") else str(error)  # gRPC errors
            first_line = (str(text).strip().splitlines() or [""])[0]
            detail = f"{type(error).__name__}: {first_line}"
            state = "not started" if name in optional else "DOWN"
            failed += name not in optional
        ms = (time.perf_counter() - started) * 1000
        print(f"{name:<13} {state:<11} {ms:6.0f} ms  {detail}")
    return 1 if failed else 0


def main(argv: list[str]) -> int:
    everything = "--all" in argv
    nodes = expected_brokers()
    if nodes > 1:  # one Kafka node of a cluster, by name, as stack/up.sh starts them
        for i in range(1, nodes + 1):
            CHECKS[f"kafka-{i}"] = functools.partial(kafka, node=i)
    names = [a for a in argv if a != "--all"] or [n for n in CHECKS if n[-2:-1] != "-"]
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        print(
            f"unknown server(s): {', '.join(unknown)}; known: {', '.join(CHECKS)}", file=sys.stderr
        )
        return 2
    optional = {"model-server"} if everything else set()
    return asyncio.run(check(names, load_settings(), optional))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

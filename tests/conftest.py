"""Shared fixtures. Tests marked `stack` talk to the real servers that `make up` starts."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

from amberscan.common.data import SharedDataMissing, shared_data_dir
from amberscan.common.settings import Settings, replace
from tests.sources import local_source_variables, local_sources

# No per-example deadline: speed is measured in benchmarks, and on a shared 2-core machine a
# property test's first example (imports, caches) can take longer than hypothesis's 200 ms.
hypothesis_settings.register_profile("amberscan", deadline=None)
hypothesis_settings.load_profile("amberscan")

# The tests' source policy (#26 defect 8) for the whole session: loopback servers, temporary
# files and the checkout, also for the commands run in-process and the services started.
os.environ.update(local_source_variables())


def _answers(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def shared_data(base_settings: Settings) -> Path:
    """The texty-amber data set, found as every amberscan process finds it."""
    try:
        return shared_data_dir(base_settings.data)
    except SharedDataMissing as error:
        pytest.fail(str(error))


@pytest.fixture(scope="session")
def base_settings() -> Settings:
    """The environment's settings, on the local demo stack (its built-in credentials allowed),
    reading imagery from the tests' loopback servers and temporary files (`tests/sources.py`)."""
    return local_sources(replace(Settings(), ops={"demo": True}))


@pytest.fixture
async def stack_settings(base_settings: Settings) -> AsyncIterator[Settings]:
    """Settings naming a unique topic prefix, bucket and schema, so tests run side by side."""
    for name, address in (
        ("Kafka", base_settings.kafka.bootstrap),
        ("MinIO", base_settings.s3.endpoint),
        ("PostgreSQL", base_settings.database.url.rsplit("@", 1)[-1].split("/", 1)[0]),
    ):
        if not _answers(address):
            pytest.fail(f"{name} does not answer at {address}: start the stack with `make up`")
    unique = uuid.uuid4().hex[:10]
    settings = replace(
        base_settings,
        kafka={"topic_prefix": f"test-{unique}.", "partitions": 2},
        s3={"bucket": f"test-{unique}"},
        imagery={"source_allowed_buckets": f"test-{unique}"},
        database={"schema_name": f"test_{unique}"},
        retry={"backoff_s": 0.05},
    )
    yield settings
    await _remove_test_state(settings)


async def _remove_test_state(settings: Settings) -> None:
    """Delete the test's topics and bucket: tests leave nothing behind."""
    from amberscan.common.blobstore import BlobStore
    from amberscan.common.topic_admin import delete_topics

    await delete_topics(settings.kafka)
    BlobStore(settings.s3).remove_bucket()


@pytest.fixture
async def database(stack_settings: Settings) -> AsyncIterator[object]:
    from amberscan.common.db import Database

    db = Database(stack_settings.database)
    await db.open()
    try:
        yield db
    finally:
        await db.drop_schema()
        await db.close()

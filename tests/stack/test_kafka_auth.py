"""Kafka TLS and SASL against a real broker: a private KRaft node with SCRAM-SHA-512 users on a
SASL_PLAINTEXT and a SASL_SSL listener (tests/kafka_broker.py), not the shared stack's plaintext
one. A stage with its user's credentials creates its topics, consumes, produces and commits; a
client with a wrong password, or over TLS without the CA, is refused with an error that says why.
"""

from __future__ import annotations

import shutil
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError

from amberscan.common import topics
from amberscan.common.bus import client_options, connect
from amberscan.common.settings import Settings, replace
from amberscan.common.topic_admin import delete_topics, ensure_topics
from amberscan.v1 import messages_pb2 as pb
from tests.kafka_broker import Broker
from tests.streams import produce, read_all

sys.path.insert(0, str(Path(__file__).parent))
from echo_stage import make_stage  # noqa: E402
from test_kafka_loop import committed, run_until, tile  # noqa: E402

# Below the ephemeral range (32768+), apart from the shared stack (19092/19093, 19000, 15432,
# 18500, 8080) and the chaos runs (26000+, 29000+, 31000+): SASL_PLAINTEXT 23192, its controller
# 23193, SASL_SSL 23194.
PORT = 23192
USER, PASSWORD = "amberscan-echo", "echo-" + uuid.uuid4().hex

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    node = Broker(tmp_path_factory.mktemp("kafka-sasl"), PORT, {USER: PASSWORD})
    try:
        node.start()
        yield node
    finally:
        node.stop()
        shutil.rmtree(node.directory)  # its data, certificates and log


def sasl_settings(broker: Broker, tls: bool = False, **kafka: str) -> Settings:
    settings = Settings()
    values = {
        "bootstrap": broker.tls_bootstrap if tls else broker.bootstrap,
        "security_protocol": "SASL_SSL" if tls else "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_username": USER,
        "sasl_password": PASSWORD,
        "topic_prefix": f"test-{uuid.uuid4().hex[:10]}.",
        "partitions": 2,
        "ca_file": str(broker.ca_file) if tls else "",
    }
    return replace(settings, kafka={**values, **kafka}, retry={"backoff_s": 0.05})


@pytest.mark.parametrize("tls", [False, True], ids=["sasl-plaintext", "sasl-ssl"])
async def test_a_stage_with_its_credentials_consumes_produces_and_commits(
    broker: Broker, tls: bool
) -> None:
    settings = sasl_settings(broker, tls)
    await ensure_topics(settings.kafka)  # the admin client, authenticated
    try:
        await produce(settings, topics.TILES, [tile("0123"), tile("0124")])
        stage = make_stage(settings)
        group = stage.config.group(settings.kafka)

        async def both_committed() -> bool:
            return await committed(settings, group, topics.TILES) == 2

        await run_until(stage, both_committed)
        out = await read_all(settings, topics.DETECTIONS, expect=2)
        assert sorted(pb.Detection.FromString(r.value).tile_id for r in out) == ["0123", "0124"]
    finally:
        await delete_topics(settings.kafka)


async def test_a_wrong_password_is_refused_saying_so(broker: Broker) -> None:
    settings = sasl_settings(broker, sasl_password="not-" + PASSWORD)
    producer = AIOKafkaProducer(**client_options(settings.kafka), enable_idempotence=True)
    try:
        with pytest.raises(KafkaConnectionError) as refused:
            await connect(producer, settings.kafka)
    finally:
        await producer.stop()
    message = str(refused.value)
    assert message.startswith(
        f"KafkaConnectionError: cannot connect to Kafka at {broker.bootstrap} over SASL_PLAINTEXT"
        f" as '{USER}': Unable connect to \"{broker.bootstrap}\": [Error 58] SaslAuthentication"
    ), message
    assert "SaslAuthenticationFailed" in message and "invalid credentials" in message, message
    assert PASSWORD not in message


async def test_a_stage_with_a_wrong_password_does_not_start(broker: Broker) -> None:
    """The stage's own start (producer, then consumer) fails the same way: nothing is consumed
    by a client the broker did not authenticate."""
    settings = sasl_settings(broker, sasl_username="nobody")
    stage = make_stage(settings)
    with pytest.raises(KafkaConnectionError, match="as 'nobody': .*SaslAuthenticationFailed"):
        await stage.start()
    await stage.close()


async def test_tls_without_the_ca_is_refused_saying_so(broker: Broker) -> None:
    """The broker's certificate is signed by the test's own CA: a client that trusts only the
    system's CAs must not connect (nor send its credentials)."""
    settings = sasl_settings(broker, tls=True, ca_file="")
    producer = AIOKafkaProducer(**client_options(settings.kafka))
    try:
        with pytest.raises(KafkaConnectionError, match="over SASL_SSL .*CERTIFICATE_VERIFY_FAILED"):
            await connect(producer, settings.kafka)
    finally:
        await producer.stop()

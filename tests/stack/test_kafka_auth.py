"""Kafka TLS, SASL and ACLs against a real broker: a private KRaft node with SCRAM-SHA-512 users on
a SASL_PLAINTEXT and a SASL_SSL listener and ACL authorization (tests/kafka_broker.py), not the
shared stack's plaintext one. A stage with its user's credentials creates its topics, consumes,
produces and commits; a client with a wrong password, or over TLS without the CA, is refused with
an error that says why; and the production overlay's KafkaUsers, their ACLs granted as Strimzi
would, let the classifier → aggregator → sink path run and refuse what a service's code does not do.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    TopicAuthorizationFailedError,
)

from amberscan.common import topics
from amberscan.common.bus import client_options, connect
from amberscan.common.settings import Settings, replace
from amberscan.common.stage import StageConfig
from amberscan.common.topic_admin import delete_topics, ensure_topics
from amberscan.geo.tiles import Tile
from amberscan.v1 import messages_pb2 as pb
from tests.deploy.test_manifests import _acls, _built
from tests.kafka_broker import MTLS_USER, Broker
from tests.streams import produce, read_all

sys.path.insert(0, str(Path(__file__).parent))
from echo_stage import make_stage  # noqa: E402
from test_kafka_loop import committed, consume_produce_commit, run_until, tile  # noqa: E402

# Below the ephemeral range (32768+), apart from the shared stack (19092/19093, 19000, 15432,
# 18500, 8080) and the chaos runs (26000+, 29000+, 31000+): SASL_PLAINTEXT 23192, its controller
# 23193, SASL_SSL 23194, SSL with client certificates 23195.
PORT = 23192
USER, PASSWORD = "amberscan-echo", "echo-" + uuid.uuid4().hex

pytestmark = pytest.mark.stack


# Production's users (k8s/overlays/production/kafka-users.yaml), each with a password of the test's.
PRODUCTION_USERS = {
    f"amberscan-{name}": uuid.uuid4().hex for name in ("classifier", "aggregator", "sink")
}


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    node = Broker(tmp_path_factory.mktemp("kafka-sasl"), PORT, {USER: PASSWORD, **PRODUCTION_USERS})
    try:
        node.start()
        # The echo tests' user may do anything under their unique topic and group prefixes.
        for user in (USER, MTLS_USER):
            mine = [("topic", "test-", "prefix", "All"), ("group", "test-", "prefix", "All")]
            asyncio.run(node.grant(user, mine))
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
        await consume_produce_commit(settings)
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


async def test_mutual_tls_with_a_client_certificate(broker: Broker) -> None:
    """SSL with AMBERSCAN_KAFKA_CERT_FILE/KEY_FILE: the broker knows the client by its certificate
    (a stage runs, authorized as User:CN=amberscan-mtls); without one the broker closes the
    connection in the handshake."""
    settings = sasl_settings(
        broker,
        bootstrap=broker.mtls_bootstrap,
        security_protocol="SSL",
        ca_file=str(broker.ca_file),
        cert_file=str(broker.client_cert),
        key_file=str(broker.client_key),
        sasl_username="",
        sasl_password="",
    )
    await ensure_topics(settings.kafka)
    try:
        await produce(settings, topics.TILES, [tile("0125")])
        stage = make_stage(settings)
        group = stage.config.group(settings.kafka)

        async def committed_one() -> bool:
            return await committed(settings, group, topics.TILES) == 1

        await run_until(stage, committed_one)
    finally:
        await delete_topics(settings.kafka)
    anonymous = replace(settings, kafka={"cert_file": "", "key_file": ""})
    producer = AIOKafkaProducer(**client_options(anonymous.kafka))
    try:
        with pytest.raises(
            KafkaConnectionError,
            match=f"cannot connect to Kafka at {broker.mtls_bootstrap} over SSL: .* closed",
        ):
            await connect(producer, anonymous.kafka)
    finally:
        await producer.stop()


# --- the production overlay's users and ACLs on a real broker ---------------------------------------


def production_settings(broker: Broker, user: str) -> Settings:
    """A production workload's settings on the private broker: topics unprefixed, as production's."""
    return sasl_settings(
        broker, sasl_username=user, sasl_password=PRODUCTION_USERS[user], topic_prefix=""
    )


@pytest.fixture(scope="module")
def production_acls(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The ACLs of the built production overlay's KafkaUsers, granted as the User Operator would."""
    objects = _built("production", tmp_path_factory.mktemp("kustomize"))
    users = {u["metadata"]["name"]: u for u in objects if u["kind"] == "KafkaUser"}
    for user in PRODUCTION_USERS:
        asyncio.run(broker.grant(user, _acls(users[user])))


async def test_production_users_run_the_scores_to_detections_path(
    broker: Broker, production_acls: None
) -> None:
    """The classifier's user writes scores; the real aggregator stage, as its user, creates the
    topics, reads scores in its group and writes a detection; the sink's user reads it."""
    from amberscan.aggregator.service import make_stage as aggregator_stage
    from tests.aggregator.test_core import scores_for

    aggregator = production_settings(broker, "amberscan-aggregator")
    await ensure_topics(aggregator.kafka)
    tile = Tile(151234, 87211, 18)
    scores = scores_for([0.9, 0.9, 0.9, 0.1], scan="scan-acl", tile=tile)
    await produce(
        production_settings(broker, "amberscan-classifier"),
        topics.SCORES,
        [(s.ref.tile_id.encode(), s.SerializeToString()) for s in scores],
    )
    stage = aggregator_stage(aggregator)
    group = stage.config.group(aggregator.kafka)

    async def done() -> bool:
        return await committed(aggregator, group, topics.SCORES) == len(scores)

    await run_until(stage, done)
    (detection,) = await read_all(
        production_settings(broker, "amberscan-sink"), topics.DETECTIONS, expect=1
    )
    assert pb.Detection.FromString(detection.value).tile_id == scores[0].ref.tile_id


async def test_production_users_are_refused_what_their_code_does_not_do(
    broker: Broker, production_acls: None
) -> None:
    """The aggregator's user may not write tiles (the tiler's output: anyone who could would make
    the segmenter fetch what they like), nor join the classifier's consumer group."""
    aggregator = production_settings(broker, "amberscan-aggregator")
    await ensure_topics(aggregator.kafka)
    with pytest.raises(TopicAuthorizationFailedError):
        await produce(aggregator, topics.TILES, [tile("0123")])
    classifier_group = StageConfig(service="classifier", source_topic="").group(aggregator.kafka)
    with pytest.raises(GroupAuthorizationFailedError):
        await committed(aggregator, classifier_group, topics.FEATURES)
    # Topics of another prefix are no topics of its: it may not create them, and is told so.
    elsewhere = replace(aggregator, kafka={"topic_prefix": "elsewhere."})
    with pytest.raises(RuntimeError, match="'amberscan-aggregator' is not allowed to"):
        await ensure_topics(elsewhere.kafka)

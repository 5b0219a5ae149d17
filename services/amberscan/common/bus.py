"""How every Kafka client reaches the brokers: one place turns `KafkaConfig` into aiokafka's
connection arguments (bootstrap servers, TLS, SASL), so no client can be made without them.

Every producer, consumer and admin client of the package, the tests, benchmarks and the stack's
tools is made with `client_options(kafka)` (`tests/common/test_bus.py` fails on a
`bootstrap_servers=` anywhere else). Credentials are checked here, when a client is about to be
made, not when settings are read: a process that never opens a client (the backbone export)
needs none. `connect(client, kafka)` starts one and, when no broker lets it in, raises naming why
(refused credentials, an untrusted certificate), which aiokafka itself only logs.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from aiokafka.errors import KafkaConnectionError
from aiokafka.helpers import create_ssl_context

from amberscan.common.settings import KafkaConfig


def client_options(kafka: KafkaConfig) -> dict[str, Any]:
    """The keyword arguments of an aiokafka client (`AIOKafkaProducer(**client_options(kafka),
    enable_idempotence=True)`): the bootstrap servers, the security protocol, an SSL context
    checking the brokers against the CA (with the client certificate for mutual TLS), and the
    SASL mechanism and credentials.

    Raises:
        ValueError: a SASL protocol without a username or password, naming the variables.
    """
    options: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap,
        "security_protocol": kafka.security_protocol,
    }
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = create_ssl_context(
            cafile=kafka.ca_file or None,
            certfile=kafka.cert_file or None,
            keyfile=kafka.key_file or None,
        )
    if kafka.security_protocol.startswith("SASL_"):
        missing = kafka.credentials_missing()
        if missing:
            raise ValueError(
                f"AMBERSCAN_KAFKA_SECURITY_PROTOCOL {kafka.security_protocol} needs "
                f"{' and '.join(missing)}"
            )
        options.update(
            sasl_mechanism=kafka.sasl_mechanism,
            sasl_plain_username=kafka.sasl_username,
            sasl_plain_password=kafka.sasl_password,
        )
    return options


class _Startable(Protocol):
    async def start(self) -> None: ...


class _Refusals(logging.Filter):
    """Keeps what aiokafka logs about the brokers it could not connect to (and lets it through)."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            self.messages.append(record.getMessage())
        return True


async def connect(client: _Startable, kafka: KafkaConfig) -> None:
    """Start an aiokafka client made with `client_options(kafka)`.

    Raises:
        KafkaConnectionError: no broker answered or let the client in; the message names the
            servers, the protocol and user, and each broker's refusal (aiokafka only logs those:
            "SaslAuthenticationFailed: ... invalid credentials", "CERTIFICATE_VERIFY_FAILED").
    """
    refusals = _Refusals()
    logger = logging.getLogger("aiokafka")  # aiokafka/client.py logs under this name
    logger.addFilter(refusals)
    try:
        await client.start()
    except KafkaConnectionError as error:
        who = f" as {kafka.sasl_username!r}" if kafka.security_protocol.startswith("SASL_") else ""
        raise KafkaConnectionError(
            f"cannot connect to Kafka at {kafka.bootstrap} over {kafka.security_protocol}{who}: "
            + ("; ".join(refusals.messages) or str(error))
        ) from error
    finally:
        logger.removeFilter(refusals)

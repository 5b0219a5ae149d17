"""How every Kafka client reaches the brokers: one place turns `KafkaConfig` into aiokafka's
connection arguments (bootstrap servers, TLS, SASL), so no client can be made without them.

Every producer, consumer and admin client of the package, the tests, benchmarks and the stack's
tools is made with `client_options(kafka)` (`tests/common/test_bus.py` fails on a
`bootstrap_servers=` anywhere else). Credentials are checked here, when a client is about to be
made, not when settings are read: a process that never opens a client (the backbone export)
needs none.
"""

from __future__ import annotations

from typing import Any

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

"""`client_options`: the one way a Kafka client is made, and a scan of the code that keeps it so.

The broker side (SASL/SCRAM and TLS against a real KRaft broker) is tests/stack/test_kafka_auth.py.
"""

from __future__ import annotations

import ast
import ssl
import subprocess
from pathlib import Path

import pytest
from pydantic import ValidationError

from amberscan.common.bus import client_options
from amberscan.common.settings import KafkaConfig

ROOT = Path(__file__).resolve().parents[2]
# Every tree that holds Python code making Kafka clients.
TREES = ("services", "tests", "benchmarks", "stack", "docker", "tools")
HELPER = ROOT / "services" / "amberscan" / "common" / "bus.py"
CLIENTS = {"AIOKafkaProducer", "AIOKafkaConsumer", "AIOKafkaAdminClient"}
# aiokafka's connection arguments: these only client_options gives (the last two are also
# KafkaConfig's field names, so they count in a client's call only).
ANYWHERE = {"bootstrap_servers", "ssl_context", "sasl_plain_username", "sasl_plain_password"}
IN_CLIENTS = {"security_protocol", "sasl_mechanism"}


def test_plaintext_is_the_default_and_carries_no_credentials() -> None:
    assert client_options(KafkaConfig()) == {
        "bootstrap_servers": "127.0.0.1:19092",
        "security_protocol": "PLAINTEXT",
    }


@pytest.mark.parametrize(
    ("username", "password", "missing"),
    [
        ("", "", "AMBERSCAN_KAFKA_SASL_USERNAME and AMBERSCAN_KAFKA_SASL_PASSWORD"),
        ("tiler", "", "AMBERSCAN_KAFKA_SASL_PASSWORD"),
        ("", "secret", "AMBERSCAN_KAFKA_SASL_USERNAME"),
    ],
)
def test_sasl_without_credentials_is_refused_naming_the_variables(
    username: str, password: str, missing: str
) -> None:
    kafka = KafkaConfig(
        security_protocol="SASL_PLAINTEXT", sasl_username=username, sasl_password=password
    )
    with pytest.raises(ValueError, match=f"SASL_PLAINTEXT needs {missing}$"):
        client_options(kafka)


def test_sasl_options() -> None:
    kafka = KafkaConfig(
        security_protocol="SASL_PLAINTEXT", sasl_username="tiler", sasl_password="s3cret"
    )
    assert client_options(kafka) == {
        "bootstrap_servers": "127.0.0.1:19092",
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "tiler",
        "sasl_plain_password": "s3cret",
    }
    assert "s3cret" not in repr(kafka)


def test_an_unknown_protocol_or_mechanism_is_refused() -> None:
    with pytest.raises(ValidationError, match="AMBERSCAN_KAFKA_SECURITY_PROTOCOL"):
        KafkaConfig.model_validate({"AMBERSCAN_KAFKA_SECURITY_PROTOCOL": "TLS"})
    with pytest.raises(ValidationError, match="AMBERSCAN_KAFKA_SASL_MECHANISM"):
        KafkaConfig.model_validate({"AMBERSCAN_KAFKA_SASL_MECHANISM": "GSSAPI"})


def test_tls_files_without_tls_are_refused() -> None:
    with pytest.raises(ValidationError, match="AMBERSCAN_KAFKA_CA_FILE set, but .* PLAINTEXT"):
        KafkaConfig(ca_file="/etc/kafka/ca.crt")
    with pytest.raises(ValidationError, match="go together"):
        KafkaConfig(security_protocol="SSL", cert_file="/etc/kafka/user.crt")


def test_tls_checks_the_brokers_against_the_ca(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-subj", "/CN=amberscan-test-ca", "-keyout", str(tmp_path / "ca.key"), "-out", str(ca)],
        check=True,
        capture_output=True,
    )
    kafka = KafkaConfig(
        security_protocol="SASL_SSL",
        ca_file=str(ca),
        sasl_username="tiler",
        sasl_password="s3cret",
    )
    context = client_options(kafka)["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert [c["subject"] for c in context.get_ca_certs()] == [
        ((("commonName", "amberscan-test-ca"),),)
    ]


# --- no client without the helper -------------------------------------------------------------------


def _name(node: ast.expr) -> str:
    return node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", "")


def bypasses(source: str, where: str) -> list[str]:
    """Kafka clients in `source` not made with `**client_options(...)`, and connection
    arguments given by hand (`bootstrap_servers=`, `security_protocol=`, `sasl_*=`)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        line = f"{where}:{node.lineno}"
        client = _name(node.func) in CLIENTS
        by_hand = [
            k.arg for k in node.keywords if k.arg in ANYWHERE or (client and k.arg in IN_CLIENTS)
        ]
        if by_hand:
            found.append(f"{line}: {', '.join(by_hand)} given by hand")
        if client and not any(
            k.arg is None
            and isinstance(k.value, ast.Call)
            and _name(k.value.func) == "client_options"
            for k in node.keywords
        ):
            found.append(f"{line}: {_name(node.func)} made without **client_options(...)")
    return found


def test_every_kafka_client_is_made_with_client_options() -> None:
    sources = [p for tree in TREES for p in sorted((ROOT / tree).rglob("*.py"))]
    assert len(sources) > 100
    problems = [
        problem
        for path in sources
        if path != HELPER
        for problem in bypasses(path.read_text(), str(path.relative_to(ROOT)))
    ]
    assert not problems, "\n".join(problems)


def test_the_scan_catches_a_client_made_by_hand() -> None:
    """Planted: each way around the helper is found, the helper's own way is not."""
    assert bypasses("AIOKafkaProducer(bootstrap_servers=b, enable_idempotence=True)", "p") == [
        "p:1: bootstrap_servers given by hand",
        "p:1: AIOKafkaProducer made without **client_options(...)",
    ]
    assert bypasses("dict(bootstrap_servers=b, sasl_plain_password=p)", "d") == [
        "d:1: bootstrap_servers, sasl_plain_password given by hand"
    ]
    assert bypasses("aiokafka.AIOKafkaConsumer('t', group_id='g')", "c") == [
        "c:1: AIOKafkaConsumer made without **client_options(...)"
    ]
    assert bypasses("AIOKafkaAdminClient(**client_options(k), sasl_mechanism='PLAIN')", "a") == [
        "a:1: sasl_mechanism given by hand"
    ]
    assert bypasses("AIOKafkaConsumer('t', **client_options(s.kafka), group_id='g')", "ok") == []

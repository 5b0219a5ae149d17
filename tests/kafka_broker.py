"""A private single-node KRaft broker with SASL/SCRAM listeners, for the client-security tests.

It runs from the jars `stack/setup.sh` caches (the local stack's own Kafka, `stack/up.sh`'s
broker command and log configuration) on ports of its own, below the ephemeral range and apart
from the shared stack's and the chaos runs' ports, with its data under a test's temporary folder.
The shared stack stays plaintext. Listeners:

- SASL_PLAINTEXT on `port`, SCRAM-SHA-512;
- SASL_SSL on `port + 2`, SCRAM-SHA-512, with a certificate for 127.0.0.1 signed by a CA made
  here with `openssl` (`ca_file`);
- SSL on `port + 3`, mutual TLS: clients present a certificate the CA signed (`client_cert`,
  `client_key`: the principal `User:CN=amberscan-mtls`).

Users are created with the storage (`kafka-storage format --add-scram`), before the broker
starts: `admin` (the broker's own, inter-broker, a super user) and those the test names. The
brokers authorize (Kafka's StandardAuthorizer, as Strimzi's `authorization: simple` runs it):
a user may do what `grant` allowed it, nothing else.
"""

from __future__ import annotations

import base64
import os
import re
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MECHANISM = "SCRAM-SHA-512"


def kafka_libs() -> Path:
    """The Kafka jars as stack/lib.sh names their folder (KAFKA_VERSION under the cache)."""
    lib = (ROOT / "stack" / "lib.sh").read_text()
    version = re.search(r"^KAFKA_VERSION=(\S+)$", lib, re.M)
    assert version, "stack/lib.sh names no KAFKA_VERSION"
    cache = Path(os.environ.get("AMBERSCAN_CACHE_DIR", Path.home() / ".cache" / "amberscan"))
    libs = cache / f"kafka-{version.group(1)}" / "libs"
    if not (libs / ".complete").exists():
        raise RuntimeError(f"the Kafka jars are not installed ({libs}): run `stack/setup.sh`")
    return libs


def _cluster_id() -> str:
    """A KRaft cluster id: a UUID, base64 without padding (what `StorageTool random-uuid` prints)."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def _free(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


MTLS_USER = "CN=amberscan-mtls"


def make_certificates(directory: Path) -> tuple[Path, Path]:
    """A CA, the broker's key and certificate for 127.0.0.1 signed by it (one PEM file, as
    Kafka's PEM key store reads it), and a client's (client.key, client.crt) for mutual TLS.
    Returns (CA certificate, broker key store)."""
    ca_key, ca = directory / "ca.key", directory / "ca.crt"
    key, csr, cert = directory / "broker.key", directory / "broker.csr", directory / "broker.crt"
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        "-subj", "/CN=amberscan-test-ca", "-keyout", str(ca_key), "-out", str(ca),
    )  # fmt: skip
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
        "-keyout", str(key), "-out", str(csr),
    )  # fmt: skip
    extensions = directory / "san.cnf"
    extensions.write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-days", "1", "-extfile", str(extensions), "-out", str(cert),
    )  # fmt: skip
    store = directory / "broker.pem"
    store.write_text(key.read_text() + cert.read_text())
    client_key, client_csr = directory / "client.key", directory / "client.csr"
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/{MTLS_USER}",
        "-keyout", str(client_key), "-out", str(client_csr),
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(client_csr), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-days", "1", "-out", str(directory / "client.crt"),
    )  # fmt: skip
    return ca, store


class Broker:
    """One broker+controller node; `start()` formats its storage with the users and waits until
    its SASL listener answers; `stop()` ends it (the process group) and its data goes with the
    test's temporary folder."""

    def __init__(self, directory: Path, port: int, users: Mapping[str, str]) -> None:
        self.directory = directory
        # SASL_PLAINTEXT; port + 1 the controller, port + 2 SASL_SSL, port + 3 SSL (mutual TLS)
        self.port = port
        self.users = {"admin": "admin-secret", **users}
        self.process: subprocess.Popen[bytes] | None = None
        self.ca_file: Path | None = None
        self.log = directory / "kafka.log"

    @property
    def client_cert(self) -> Path:
        return self.directory / "client.crt"

    @property
    def client_key(self) -> Path:
        return self.directory / "client.key"

    @property
    def mtls_bootstrap(self) -> str:
        return f"127.0.0.1:{self.port + 3}"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def tls_bootstrap(self) -> str:
        return f"127.0.0.1:{self.port + 2}"

    def _properties(self, store: Path, ca: Path) -> str:
        plain, controller, tls, mtls = self.port, self.port + 1, self.port + 2, self.port + 3
        jaas = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="admin" password="{self.users["admin"]}";'
        )
        return f"""process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:{controller}
listeners=SASL_PLAINTEXT://127.0.0.1:{plain},CONTROLLER://127.0.0.1:{controller},SASL_SSL://127.0.0.1:{tls},SSL://127.0.0.1:{mtls}
advertised.listeners=SASL_PLAINTEXT://127.0.0.1:{plain},SASL_SSL://127.0.0.1:{tls},SSL://127.0.0.1:{mtls}
controller.listener.names=CONTROLLER
inter.broker.listener.name=SASL_PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL,SSL:SSL
listener.name.ssl.ssl.client.auth=required
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
# The controller listener is plaintext (loopback only): its principal is ANONYMOUS.
super.users=User:admin;User:ANONYMOUS
allow.everyone.if.no.acl.found=false
sasl.enabled.mechanisms={MECHANISM}
sasl.mechanism.inter.broker.protocol={MECHANISM}
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config={jaas}
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config={jaas}
ssl.keystore.type=PEM
ssl.keystore.location={store}
ssl.truststore.type=PEM
ssl.truststore.location={ca}
log.dirs={self.directory / "data"}
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=2
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=2
"""

    def start(self, timeout: float = 90) -> None:
        busy = [p for p in range(self.port, self.port + 4) if not _free(p)]
        if busy:
            raise RuntimeError(f"ports {busy} are in use: another test broker runs?")
        self.ca_file, store = make_certificates(self.directory)
        config = self.directory / "server.properties"
        config.write_text(self._properties(store, self.ca_file))
        java = [
            "java", "-Xms128m", "-Xmx384m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={ROOT / 'stack' / 'kafka' / 'log4j2.properties'}",
            "-cp", f"{kafka_libs()}/*",
        ]  # fmt: skip
        scram = [
            arg
            for name, password in self.users.items()
            for arg in ("--add-scram", f"{MECHANISM}=[name={name},password={password}]")
        ]
        with self.log.open("ab") as log:
            subprocess.run(
                [*java, "kafka.tools.StorageTool", "format", "--standalone", "-t",
                 _cluster_id(), "-c", str(config), *scram],
                stdout=log, stderr=subprocess.STDOUT, check=True, timeout=120,
            )  # fmt: skip
            self.process = subprocess.Popen(
                [*java, "kafka.Kafka", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() ends all of it
            )
        deadline = time.monotonic() + timeout
        while any(_free(p) for p in (self.port, self.port + 2, self.port + 3)):
            if self.process.poll() is not None:
                raise RuntimeError(f"the broker exited: {self.log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the broker did not listen in {timeout} s: see {self.log}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    async def grant(self, user: str, acls: Iterable[tuple[str, str, str, str]]) -> None:
        """Allow `user` each (resource type, name, pattern type, operation), as Strimzi's User
        Operator does for a KafkaUser's `acls` (as admin, Kafka's CreateAcls request)."""
        from aiokafka.admin import AIOKafkaAdminClient
        from aiokafka.protocol.admin import CreateAclsRequest

        from amberscan.common.bus import client_options, connect
        from amberscan.common.settings import KafkaConfig

        admin_config = KafkaConfig(
            bootstrap=self.bootstrap,
            security_protocol="SASL_PLAINTEXT",
            sasl_username="admin",
            sasl_password=self.users["admin"],
        )
        admin = AIOKafkaAdminClient(**client_options(admin_config))
        await connect(admin, admin_config)
        try:
            for kind, name, pattern, operation in acls:
                request = CreateAclsRequest(
                    _RESOURCE[kind], name, _PATTERN[pattern], f"User:{user}", "*",
                    _OPERATION[operation], _ALLOW,
                )  # fmt: skip
                response: Any = await admin._send_request(request)  # no public CreateAcls
                for error, message in response.creation_responses:
                    assert error == 0, f"ACL {kind}:{name} {operation} for {user}: {message}"
        finally:
            await admin.close()


# Kafka's codes (org.apache.kafka.common.resource / acl).
_RESOURCE = {"topic": 2, "group": 3, "cluster": 4, "transactionalId": 5}
_PATTERN = {"literal": 3, "prefix": 4}
_OPERATION = {
    "All": 2, "Read": 3, "Write": 4, "Create": 5, "Delete": 6, "Alter": 7, "Describe": 8,
    "ClusterAction": 9, "DescribeConfigs": 10, "AlterConfigs": 11, "IdempotentWrite": 12,
}  # fmt: skip
_ALLOW = 3

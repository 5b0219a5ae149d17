"""The parts of `make chaos` that need no stack: the redelivery count, the failure of a run whose
faults reached no work in flight, the stages' metrics as the harness reads them, the Kafka
listeners each process gets, and the proxy a network partition cuts (on loopback sockets)."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

ROOT = Path(__file__).resolve().parents[2]


def load(name: str) -> ModuleType:
    """A module of stack/ (not a package), as `python stack/NAME.py` runs it."""
    spec = importlib.util.spec_from_file_location(f"stack_{name}", ROOT / "stack" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look themselves up
    spec.loader.exec_module(module)
    return module


chaos = load("chaos")
netproxy = load("netproxy")


# --- redeliveries ---------------------------------------------------------------------------------


def test_redeliveries_count_the_reads_of_every_process_beyond_the_records() -> None:
    reads = [
        {"tiles": 10.0, "dead-letters": 1.0},  # segmenter-a, killed holding 4 tiles
        {"tiles": 4.0},  # segmenter-a again: it read those 4 again
        {"tiles": 6.0},  # segmenter-b
        {"features": 300.0},
    ]
    records = {"tiles": 16, "features": 300, "dead-letters": 1, "scores": 300}
    assert chaos.redeliveries(reads, records) == {"dead-letters": 0, "features": 0, "tiles": 4}
    # A killed process's last reads not seen (read and committed after its last scrape) can
    # only make fewer reads than records: never a negative count.
    assert chaos.redeliveries([{"tiles": 14.0}], records) == {"tiles": 0}


def report(**changes: Any) -> dict[str, Any]:
    """A chaos report that passes every check, with `changes`."""
    base = {
        "lost": 0,
        "lost_tiles": [],
        "duplicate_rows": 0,
        "verdict_mismatches": 0,
        "score_mismatches": 0,
        "done_without_row": [],
        "rows_outside_the_scan": [],
        "complete": True,
        "error": "",
        "faults_not_injected": [],
        "service_kills": 6,
        "service_kills_by_service": dict.fromkeys(chaos.SERVICES, 1),
        "server_kills": 4,
        "kills_in_flight": 6,
        "redeliveries": 12,
    }
    return base | changes


def test_a_run_without_redeliveries_fails_as_not_reaching_work_in_flight() -> None:
    mode = chaos.MODES["quick"]
    assert chaos.problems_of(report(), mode) == []
    [problem] = chaos.problems_of(report(redeliveries=0, kills_in_flight=0), mode)
    assert "the faults did not reach work in flight" in problem
    assert "0 of 6 kills found records in flight" in problem
    # Nothing lost is not enough: a loss is reported beside it, both fail the run.
    problems = chaos.problems_of(report(redeliveries=0, lost=1, lost_tiles=["0123"]), mode)
    assert len(problems) == 2 and "without a status" in problems[0]


def test_the_harness_reads_a_stages_metrics() -> None:
    """The figures of a /metrics page as the stage engine's metrics write it (a sink process:
    two loops, each its own source topic)."""
    registry = CollectorRegistry()
    read = Counter("amberscan_records_read", "", ["service", "topic"], registry=registry)
    held = Gauge("amberscan_uncommitted_records", "", ["service", "topic"], registry=registry)
    out = Counter("amberscan_outputs", "", ["service", "topic"], registry=registry)
    commits = Counter("amberscan_commits", "", ["service"], registry=registry)
    read.labels("sink", "detections").inc(7)
    read.labels("sink-dead-letters", "dead-letters").inc(2)
    held.labels("sink", "detections").set(3)
    held.labels("sink-dead-letters", "dead-letters").set(1)
    out.labels("sink", "dead-letters").inc(1)
    commits.labels("sink").inc(5)
    figures = chaos.figures_of(generate_latest(registry).decode())
    assert figures.read == {"detections": 7.0, "dead-letters": 2.0}
    assert (figures.uncommitted, figures.outputs, figures.commits) == (
        4.0,
        {"dead-letters": 1.0},
        5.0,
    )
    assert chaos.figures_of("") == chaos.Figures()


# --- each process's own listener and proxy --------------------------------------------------------


@pytest.mark.parametrize("brokers", [1, 3])
def test_each_copy_reaches_every_broker_through_its_own_proxy(brokers: int) -> None:
    base = 29000
    env = chaos.stack_env(Path("/x"), base, brokers)
    entries = env["AMBERSCAN_STACK_KAFKA_EXTRA_LISTENERS"].split()
    assert len(entries) == len(chaos.COPIES)
    ports: list[int] = []
    for entry, copy in zip(entries, chaos.COPIES, strict=True):
        label, listen, advertised = entry.split(":")
        assert label == chaos.listener_label(copy)
        routes = chaos.proxy_routes(base, brokers, copy)
        # node i listens on listen + i and advertises advertised + i: the proxy's route there
        assert routes == [
            (int(advertised) + i, "127.0.0.1", int(listen) + i) for i in range(brokers)
        ]
        ports += [p for route in routes for p in (route[0], route[2])]
    ports += [chaos.metrics_port(base, c) for c in chaos.COPIES]
    taken = {base, base + 1, base + 80, base + 432, base + 500}
    taken |= {base + 92 + 2 * i for i in range(brokers)} | {
        base + 93 + 2 * i for i in range(brokers)
    }
    assert len(set(ports)) == len(ports) and not set(ports) & taken
    assert all(base < p < base + 600 for p in ports)


def test_a_kafka_node_advertises_each_extra_listener_at_its_proxy() -> None:
    """stack/up.sh's server.properties of node 2 of a cluster, with two extra listeners."""
    env = {
        **os.environ,
        "AMBERSCAN_STACK_KAFKA_BROKERS": "3",
        "AMBERSCAN_KAFKA_BOOTSTRAP": "127.0.0.1:29092",
        "AMBERSCAN_STACK_KAFKA_CONTROLLER_PORT": "29093",
        "AMBERSCAN_STACK_KAFKA_EXTRA_LISTENERS": "C_TILER:29300:29400 C_SINK:29370:29470",
    }
    script = (
        f'source {ROOT}/stack/lib.sh; eval "$(sed -n '
        "'/^extra_listeners()/,/^}/p;/^kafka_properties()/,/^}/p' "
        f'{ROOT}/stack/up.sh)"; kafka_properties kafka-2 /data'
    )
    props = subprocess.run(
        ["bash", "-c", script], env=env, capture_output=True, text=True, check=True
    ).stdout
    lines = dict(line.split("=", 1) for line in props.splitlines() if "=" in line)
    assert lines["listeners"] == (
        "PLAINTEXT://127.0.0.1:29094,CONTROLLER://127.0.0.1:29095,"
        "C_TILER://127.0.0.1:29301,C_SINK://127.0.0.1:29371"
    )
    assert lines["advertised.listeners"] == (
        "PLAINTEXT://127.0.0.1:29094,C_TILER://127.0.0.1:29401,C_SINK://127.0.0.1:29471"
    )
    assert lines["listener.security.protocol.map"].endswith(",C_TILER:PLAINTEXT,C_SINK:PLAINTEXT")
    assert lines["inter.broker.listener.name"] == "PLAINTEXT"


# --- the proxy a partition cuts -------------------------------------------------------------------


async def test_a_cut_proxy_holds_connections_open_and_forwards_nothing_until_healed() -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1024):
            writer.write(data)
            await writer.drain()
        writer.close()

    upstream = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = upstream.sockets[0].getsockname()[1]
    proxy = netproxy.Proxy([(0, "127.0.0.1", port)])
    await proxy.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.ports[0])
        writer.write(b"before")
        assert await asyncio.wait_for(reader.readexactly(6), 10) == b"before"

        proxy.cut()
        writer.write(b"during")
        await writer.drain()
        # A new connection is accepted (no refusal: the process is not told the broker is gone)
        late_reader, late_writer = await asyncio.open_connection("127.0.0.1", proxy.ports[0])
        late_writer.write(b"late")
        for r in (reader, late_reader):  # neither answered nor closed
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(r.read(1), 1.0)
            assert not r.at_eof()

        proxy.heal()  # what waited is delivered, on the connections kept open
        assert await asyncio.wait_for(reader.readexactly(6), 10) == b"during"
        assert await asyncio.wait_for(late_reader.readexactly(4), 10) == b"late"
        writer.close()
        late_writer.close()
    finally:
        await proxy.close()
        upstream.close()
        await upstream.wait_closed()


async def test_the_proxy_closes_a_connection_when_its_upstream_is_down() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]  # nobody listens once the socket is closed
    proxy = netproxy.Proxy([(0, "127.0.0.1", dead)])
    await proxy.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.ports[0])
        assert await asyncio.wait_for(reader.read(1), 10) == b""  # closed, as a refusal would
        writer.close()
    finally:
        await proxy.close()


def test_a_route_names_its_port_and_upstream() -> None:
    assert netproxy.parse_route("29400=127.0.0.1:29300") == (29400, "127.0.0.1", 29300)
    with pytest.raises(Exception, match="LISTEN_PORT=HOST:PORT"):
        netproxy.parse_route("29400")

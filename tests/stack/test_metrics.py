"""A service's Prometheus endpoint: what it handled, produced, dead-lettered and committed."""

from __future__ import annotations

import asyncio
import urllib.request

import pytest

from amberscan.common import metrics, topics
from amberscan.common.metrics import Heartbeat, serve_metrics
from amberscan.common.settings import Settings
from amberscan.common.topic_admin import ensure_topics
from amberscan.v1 import messages_pb2 as pb
from tests.stack.echo_stage import make_stage
from tests.streams import free_port, produce, read_all

pytestmark = pytest.mark.stack


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (0 when absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(f"{name}{{"):
            series, value = line.rsplit(" ", 1)
            got = ",".join(sorted(series[len(name) + 1 : -1].split(",")))
            if got == wanted:
                return float(value)
    return 0.0


async def test_metrics_count_handled_dead_lettered_and_committed(stack_settings: Settings) -> None:
    port = free_port()
    serve_metrics(port)
    url = f"http://127.0.0.1:{port}/metrics"
    before = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read().decode())
    await ensure_topics(stack_settings.kafka)
    good = [pb.Tile(tile_id=f"t{i}", scan_id="s").SerializeToString() for i in range(3)]
    await produce(
        stack_settings, topics.TILES, [(b"k", v) for v in good] + [(b"k", b"\xff not a tile")]
    )
    stop = asyncio.Event()
    task = asyncio.create_task(make_stage(stack_settings).run(stop))
    await read_all(stack_settings, topics.DETECTIONS, expect=3)
    await read_all(stack_settings, topics.DEAD_LETTERS, expect=1)
    stop.set()
    await asyncio.wait_for(task, timeout=30)
    after = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read().decode())

    def delta(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert delta("amberscan_messages_total", service="echo", outcome="ok") == 3
    assert delta("amberscan_messages_total", service="echo", outcome="dead_letter") == 1
    assert delta("amberscan_outputs_total", service="echo", topic=topics.DETECTIONS) == 3
    assert delta("amberscan_outputs_total", service="echo", topic=topics.DEAD_LETTERS) == 1
    assert delta("amberscan_commits_total", service="echo") >= 1
    assert delta("amberscan_handle_seconds_count", service="echo") == 3


async def test_a_running_stage_beats_the_heartbeat(
    stack_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The liveness probe's heartbeat (`/healthz`) moves with the stage's polls and batches."""
    now = [1000.0]
    heartbeat = Heartbeat(lambda: now[0])
    monkeypatch.setattr(metrics, "HEARTBEAT", heartbeat)
    now[0] += 900  # stale as the stage starts
    assert heartbeat.age() == 900
    await ensure_topics(stack_settings.kafka)
    await produce(
        stack_settings,
        topics.TILES,
        [(b"k", pb.Tile(tile_id="t", scan_id="s").SerializeToString())],
    )
    stop = asyncio.Event()
    task = asyncio.create_task(make_stage(stack_settings).run(stop))
    await read_all(stack_settings, topics.DETECTIONS, expect=1)
    stop.set()
    await asyncio.wait_for(task, timeout=30)
    assert heartbeat.age() == 0


async def test_a_stage_shows_the_records_it_holds_uncommitted(stack_settings: Settings) -> None:
    """`amberscan_uncommitted_records` counts the records a stage has read and not committed
    (what a kill now would redeliver; `make chaos` times its kills on it), back to 0 once they
    are committed; `amberscan_records_read_total` counts every record read."""
    from prometheus_client import REGISTRY

    from amberscan.common.records import Output
    from amberscan.common.stage import Stage, StageConfig

    service = f"held-{stack_settings.kafka.topic_prefix}"
    labels = {"service": service, "topic": topics.TILES}
    gate = asyncio.Event()

    async def handle(record: object) -> list[Output]:
        await gate.wait()
        tile = pb.Tile.FromString(record.value)  # type: ignore[attr-defined]
        detection = pb.Detection(tile_id=tile.tile_id, scan_id=tile.scan_id)
        return [Output(topics.DETECTIONS, tile.tile_id.encode(), detection.SerializeToString())]

    def value(name: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    async def until(check: object, what: str) -> None:
        for _ in range(600):
            if check():  # type: ignore[operator]
                return
            await asyncio.sleep(0.05)
        raise AssertionError(
            f"{what}: read {value('amberscan_records_read_total')}, "
            f"uncommitted {value('amberscan_uncommitted_records')}"
        )

    await ensure_topics(stack_settings.kafka)
    await produce(
        stack_settings,
        topics.TILES,
        [(b"k", pb.Tile(tile_id=f"t{i}", scan_id="s").SerializeToString()) for i in range(3)],
    )
    stage = Stage(stack_settings, StageConfig(service=service, source_topic=topics.TILES), handle)
    stop = asyncio.Event()
    task = asyncio.create_task(stage.run(stop))
    try:
        await until(lambda: value("amberscan_records_read_total") == 3, "all three read")
        # Held by the handler: every record read is uncommitted.
        assert value("amberscan_uncommitted_records") == 3
        gate.set()
        await read_all(stack_settings, topics.DETECTIONS, expect=3)
        await until(lambda: value("amberscan_uncommitted_records") == 0, "committed")
        assert value("amberscan_records_read_total") == 3
    finally:
        gate.set()
        stop.set()
        await asyncio.wait_for(task, timeout=30)

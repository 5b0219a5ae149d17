"""Prometheus metrics shared by every service, served on `AMBERSCAN_METRICS_PORT`, and the
heartbeat their liveness probe reads there.

`amberscan serve <stage>` serves both from its own event loop (`serve_health`): `/metrics`, and
`/healthz`, which answers 200 while the stage's loop keeps making progress (each poll and each
finished batch beats `HEARTBEAT`) and 503 once it has stalled for `HEARTBEAT_STALE_S`. A loop
that is blocked answers neither, so the probe times out: unlike prometheus_client's own server
thread, which kept answering for a wedged loop. The model server keeps that thread (gRPC health
serves its liveness).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)

MESSAGES = Counter(
    "amberscan_messages_total",
    "Messages handled, by service and outcome (ok, dead_letter).",
    ["service", "outcome"],
)
OUTPUTS = Counter(
    "amberscan_outputs_total", "Messages produced, by service and topic.", ["service", "topic"]
)
RETRIES = Counter("amberscan_retries_total", "Transient failures retried, by service.", ["service"])
HANDLE_SECONDS = Histogram(
    "amberscan_handle_seconds", "Time to handle one message, by service.", ["service"]
)
COMMITS = Counter("amberscan_commits_total", "Offset commits, by service.", ["service"])
# Work in flight (#26): what a stage has read, and what it holds uncommitted. A record read again
# (after a rewind, a rebalance or a restart) counts again, so the reads of every process of a
# group beyond its source topic's records are its redeliveries (`make chaos` reports them).
RECORDS_READ = Counter(
    "amberscan_records_read_total",
    "Records taken from the source topic (again after a rewind or rebalance), by service and topic.",
    ["service", "topic"],
)
UNCOMMITTED = Gauge(
    "amberscan_uncommitted_records",
    "Records taken from the source topic whose offsets are not committed yet (batches in flight, "
    "and what a stateful stage holds back), by service and topic.",
    ["service", "topic"],
)
COMMITS_REFUSED = Counter(
    "amberscan_commits_refused_total",
    "Commits the group refused after a rebalance (the records are redelivered), by service.",
    ["service"],
)
REWINDS = Counter(
    "amberscan_rewinds_total",
    "Partitions rewound and paused after a transient failure outlasted its retries.",
    ["service"],
)
GAVE_UP = Counter(
    "amberscan_gave_up_total",
    "Records dead-lettered after failing transiently past the bound on their tries or age.",
    ["service"],
)
# Aggregator (#10): tiles given up on (each one dead-lettered, so it ends as failed), scores
# ignored because their tile was already finished or dropped, and tiles held open.
DROPPED_TILES = Counter(
    "amberscan_aggregator_dropped_tiles_total",
    "Tiles the aggregator gave up on, by cause (stale, overflow); each is dead-lettered.",
    ["cause"],
)
IGNORED_SCORES = Counter(
    "amberscan_aggregator_ignored_scores_total",
    "Scores of a tile already finished (a redelivery) or dropped (late), by reason.",
    ["reason"],
)
OPEN_TILES = Gauge("amberscan_aggregator_open_tiles", "Tiles waiting for more scores.")
# Sink (#10): dead letters that could not be read or stored (never dead-lettered again).
UNRECORDED_DEAD_LETTERS = Counter(
    "amberscan_sink_unrecorded_dead_letters_total",
    "Dead letters the sink could not read or store as a failed tile.",
)


def serve_metrics(port: int) -> None:
    """Start the metrics endpoint on 0.0.0.0:`port` in prometheus_client's own thread (a no-op
    for port 0): for processes with no event loop of their own to serve it (the model server)."""
    if port:
        start_http_server(port)


# The longest a healthy stage goes without progress: aiokafka's max_poll_interval_ms
# (common/stage.py), after which the group has evicted the consumer anyway; also the watch
# lease's default, after which another replica takes its region.
HEARTBEAT_STALE_S = 600.0


class Heartbeat:
    """When a service's loop last made progress (a poll, a finished batch, a watch round)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._last = clock()

    def beat(self) -> None:
        """Record progress now."""
        self._last = self._clock()

    def age(self) -> float:
        """Seconds since the last beat."""
        return self._clock() - self._last


HEARTBEAT = Heartbeat()


def health_app(heartbeat: Heartbeat | None, stale_s: float = HEARTBEAT_STALE_S) -> web.Application:
    """`/metrics` and `/healthz` as an aiohttp app of the calling process's event loop.

    Args:
        heartbeat: what `/healthz` judges; None for a server whose answering is its progress
            (the web map: a loop that serves `/healthz` serves its pages).
        stale_s: the heartbeat's age from which `/healthz` answers 503.
    """

    async def healthz(_: web.Request) -> web.Response:
        if heartbeat is None:
            return web.Response(text="ok: the event loop answers\n")
        age = heartbeat.age()
        if age > stale_s:
            return web.Response(
                status=503,
                text=f"stalled: no progress for {age:.0f} s (limit {stale_s:.0f} s)\n",
            )
        return web.Response(text=f"ok: progress {age:.1f} s ago\n")

    async def metrics(_: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(REGISTRY))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    return app


async def serve_health(
    port: int, heartbeat: Heartbeat | None = HEARTBEAT, host: str = "0.0.0.0"
) -> web.AppRunner | None:
    """Serve `health_app` on host:`port` from the running event loop (None for port 0).

    Returns:
        The runner, to `cleanup()` on the way out.
    """
    if not port:
        return None
    runner = web.AppRunner(health_app(heartbeat), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner

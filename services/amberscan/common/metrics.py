"""Prometheus metrics shared by every service, served on `AMBERSCAN_METRICS_PORT`."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

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
    """Start the metrics endpoint on 0.0.0.0:`port` (a no-op for port 0)."""
    if port:
        start_http_server(port)

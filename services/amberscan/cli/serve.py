"""`amberscan serve`: run one streaming service, the web map or the model server."""

from __future__ import annotations

import argparse
import asyncio
import importlib
from typing import TYPE_CHECKING

from amberscan.cli import options

if TYPE_CHECKING:
    from amberscan.common.settings import Settings

# Streaming services: module with `run(settings, stop)`.
STAGES = {
    "tiler": "amberscan.tiler.service",
    "segmenter": "amberscan.segmenter.service",
    "feature": "amberscan.feature.service",
    "classifier": "amberscan.classifier.service",
    "aggregator": "amberscan.aggregator.service",
    "sink": "amberscan.sink.service",
    "web": "amberscan.web.app",
    "watch": "amberscan.watch.service",
}


def add_parser(sub: options.Subparsers) -> None:
    p = options.command(sub, "serve", "run one of amberscan's services or servers", run)
    p.add_argument("server", choices=["model-server", *STAGES])
    options.add_model_dir(p, "model-server: default AMBERSCAN_MODEL_DIR")
    p.add_argument("--name", help="model-server: default AMBERSCAN_BACKBONE_NAME")
    p.add_argument("--address", help="model-server: default AMBERSCAN_MODEL_SERVER")


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.server in STAGES:
        return serve_stage(args.server, settings)
    return serve_model(args, settings)


def serve_model(args: argparse.Namespace, settings: Settings) -> int:
    """Run the model server until SIGTERM or SIGINT: its model and address from the flags or
    the settings, its runtime, threads and batching from the settings (AMBERSCAN_MODEL_SERVER_*).
    """
    from amberscan.modelserver.server import ServerOptions, run_server

    return run_server(
        args.model_dir or settings.model_dir,
        args.name or settings.backbone_name,
        args.address or settings.model_server,
        ServerOptions.from_settings(settings),
        settings,
    )


def serve_stage(name: str, settings: Settings) -> int:
    """Run the stage `name` until SIGTERM or SIGINT, with its topics, logs and metrics."""
    from amberscan.common.logs import configure_logging
    from amberscan.common.metrics import HEARTBEAT, serve_health
    from amberscan.common.stage import stop_on_signals
    from amberscan.common.topic_admin import ensure_topics

    configure_logging(name, settings.log_level, settings.log_json)
    module = importlib.import_module(STAGES[name])

    async def main() -> None:
        stop = stop_on_signals()
        # Metrics and liveness from this loop: a wedged loop fails its probe. The web map's
        # progress is answering; the others beat HEARTBEAT as they poll and finish work.
        health = await serve_health(settings.metrics_port, None if name == "web" else HEARTBEAT)
        try:
            await ensure_topics(settings)
            await module.run(settings, stop)
        finally:
            if health is not None:
                await health.cleanup()

    asyncio.run(main())
    return 0

"""`amberscan serve`: run one streaming service, the web map or the model server, each with its
own settings (`common.settings.PROCESSES`: only the concerns it uses are read)."""

from __future__ import annotations

import argparse
import asyncio
import importlib
from typing import TYPE_CHECKING

from amberscan.cli import options

if TYPE_CHECKING:
    from amberscan.common.settings import ProcessSettings

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
    p = options.command(
        sub,
        "serve",
        "run one of amberscan's services or servers",
        run,
        process=process,
        description="Run one of amberscan's services or servers until stopped (SIGTERM or "
        "Ctrl-C), with the settings of that process only (AMBERSCAN_* variables).",
        examples=[
            "amberscan serve tiler",
            "amberscan serve model-server --model-dir models",
            "AMBERSCAN_WEB_PORT=8080 amberscan serve web",
        ],
    )
    p.add_argument(
        "server",
        choices=["model-server", *STAGES],
        help="the stage on the bus, the web map, the watcher, or the model server",
    )
    options.add_model_dir(p, "model-server: the served models (default: AMBERSCAN_MODEL_DIR)")
    p.add_argument(
        "--name", help="model-server: the backbone's model name (default: AMBERSCAN_BACKBONE_NAME)"
    )
    p.add_argument(
        "--address", help="model-server: HOST:PORT to listen on (default: AMBERSCAN_MODEL_SERVER)"
    )


def process(args: argparse.Namespace) -> str:
    """The process `args` run, whose settings `main` reads: the server's own."""
    return str(args.server)


def run(args: argparse.Namespace, settings: ProcessSettings) -> int:
    if args.server in STAGES:
        return serve_stage(args.server, settings)
    return serve_model(args, settings)


def serve_model(args: argparse.Namespace, settings: ProcessSettings) -> int:
    """Run the model server until SIGTERM or SIGINT: its model and address from the flags or
    the settings, its runtime, threads and batching from the settings (AMBERSCAN_MODEL_SERVER_*).
    """
    from amberscan.common.settings import ModelServerSettings
    from amberscan.modelserver.server import ServerOptions, run_server

    if not isinstance(settings, ModelServerSettings):
        raise TypeError(f"the model server needs ModelServerSettings, not {type(settings)}")
    return run_server(
        args.model_dir or settings.serving.model_dir,
        args.name or settings.model_server.backbone_name,
        args.address or settings.model_server.address,
        ServerOptions.from_config(settings.serving),
        settings.ops,
    )


def serve_stage(name: str, settings: ProcessSettings) -> int:
    """Run the stage `name` until SIGTERM or SIGINT, with its topics, logs and metrics."""
    from amberscan.common.logs import configure_logging
    from amberscan.common.metrics import HEARTBEAT, serve_health
    from amberscan.common.settings import StreamingSettings
    from amberscan.common.stage import stop_on_signals
    from amberscan.common.topic_admin import ensure_topics

    if not isinstance(settings, StreamingSettings):
        raise TypeError(f"stage {name} needs StreamingSettings, not {type(settings)}")
    kafka = settings.kafka
    configure_logging(name, settings.ops.log_level, settings.ops.log_json)
    module = importlib.import_module(STAGES[name])

    async def main() -> None:
        stop = stop_on_signals()
        # Metrics and liveness from this loop: a wedged loop fails its probe. The web map's
        # progress is answering; the others beat HEARTBEAT as they poll and finish work.
        health = await serve_health(settings.ops.metrics_port, None if name == "web" else HEARTBEAT)
        try:
            await ensure_topics(kafka)
            await module.run(settings, stop)
        finally:
            if health is not None:
                await health.cleanup()

    asyncio.run(main())
    return 0

"""The `amberscan` command: one module per command, as robosat's tools and rasterio's `rio` are.

Each command module has `add_parser(sub)`, which adds its subparser and sets `run`, and
`run(args, settings)`, which does the work with the settings `main` read for it (the
`amberscan` command's, every concern; `serve` reads the server's own). Modules import only
argparse at the top and their heavy dependencies (TensorFlow, Kafka, the database) inside
`run`, so `amberscan --help` and the parser itself stay instant. Options several commands share are in `options.py`.
"""

from __future__ import annotations

import argparse
import sys

from amberscan.cli import (
    alerts,
    data,
    demo_tiles,
    detect_tile,
    diff,
    evaluate,
    export_backbone,
    finetune,
    models,
    replay,
    scan,
    serve,
    survey_fixture,
    topics,
    train,
    watch,
)
from amberscan.errors import AmberscanError

# In the order `amberscan --help` lists them.
COMMANDS = (
    data,
    export_backbone,
    finetune,
    serve,
    scan,
    watch,
    alerts,
    replay,
    demo_tiles,
    topics,
    train,
    models,
    evaluate,
    detect_tile,
    diff,
    survey_fixture,
)


def version() -> str:
    """The installed distribution's version (pyproject.toml), else the package's own."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("amberscan")
    except PackageNotFoundError:
        from amberscan import __version__

        return __version__


def build_parser() -> argparse.ArgumentParser:
    """The parser of every `amberscan` command (nothing heavy is imported to build it)."""
    parser = argparse.ArgumentParser(
        prog="amberscan", description="Find illegal amber mining in aerial imagery."
    )
    parser.add_argument("--version", action="version", version=f"amberscan {version()}")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the process exit code (2 for an amberscan error, named on stderr)."""
    args = build_parser().parse_args(argv)
    # Imported after parsing: pydantic would make `--help` wait for it.
    from amberscan.common.settings import load_settings

    settings = load_settings(args.process(args))
    try:
        return int(args.run(args, settings) or 0)
    except AmberscanError as error:
        print(f"amberscan: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130

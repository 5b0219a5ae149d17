"""The `amberscan` command: one module per command, as robosat's tools and rasterio's `rio` are.

Each command module has `add_parser(sub)`, which adds its subparser and sets `run`, and
`run(args, settings)`, which does the work with the settings `main` read for it (the
`amberscan` command's, every concern; `serve` reads the server's own). Modules import only
argparse at the top and their heavy dependencies (TensorFlow, Kafka, the database) inside
`run`, so `amberscan --help` and the parser itself stay instant. Options several commands share are in `options.py`.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from typing import TYPE_CHECKING

from amberscan.cli import (
    alerts,
    area,
    data,
    demo_tiles,
    detect_tile,
    diff,
    evaluate,
    export,
    export_backbone,
    failures,
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

if TYPE_CHECKING:
    from amberscan.common.settings import Settings

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
    area,
    export,
    survey_fixture,
)


EPILOG = """\
examples:
  amberscan scan --demo
  amberscan export detections.gpkg --flagged
  amberscan export --help   # each command's own help and examples

Settings are AMBERSCAN_* variables (the README lists them). Exit status: 0 done, 1 the command's
own failure (a scan with failed tiles, a refused promotion), 2 a refused input or argument,
3 a server (Kafka, PostgreSQL, MinIO, the model server) could not be reached."""


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
        prog="amberscan",
        description="Find illegal amber mining in aerial imagery.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"amberscan {version()}")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the process exit code: 2 for an amberscan error, 3 for a server
    it could not reach, each said on one line of stderr."""
    args = build_parser().parse_args(argv)
    # Imported after parsing: pydantic would make `--help` wait for it.
    from amberscan.common.settings import load_settings

    process = args.process(args)
    settings = load_settings(process)
    # A server logs as a service does; a command says in one line what it could not reach.
    quiet = failures.quiet_clients() if process == "amberscan" else contextlib.nullcontext()
    try:
        with quiet:
            return int(args.run(args, settings) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as error:  # noqa: BLE001 - one line when the user can act on it, else raised
        return _failed(error, settings)


def _failed(error: Exception, settings: Settings) -> int:
    """Say on one line of stderr why the command failed, and return its exit status: 3 for a
    server it could not reach, 2 for an amberscan error or a file that cannot be read. Any
    other error is a bug: raised, with its traceback."""
    line = failures.unreachable(error, settings)
    status = failures.UNREACHABLE
    if line is None:
        status = 2
        if isinstance(error, AmberscanError):
            line = str(error)
        elif isinstance(error, FileNotFoundError | PermissionError | IsADirectoryError) and (
            error.filename
        ):
            line = f"{error.filename}: {error.strerror}"
        else:
            raise error
    print(f"amberscan: error: {line}", file=sys.stderr)
    return status

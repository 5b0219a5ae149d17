"""Options several commands share, and the small types every command module uses."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:
    from amberscan.common.settings import ProcessSettings, Settings

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
# A command's `run` takes the settings of the process it runs as: `Settings` for every command
# but `serve`, whose server decides (any `ProcessSettings`).
Run: TypeAlias = "Callable[[argparse.Namespace, Settings], int] | Callable[[argparse.Namespace, ProcessSettings], int]"
# The process a command's arguments run (a name in `common.settings.PROCESSES`), whose
# settings `main` reads.
Process: TypeAlias = "Callable[[argparse.Namespace], str]"


def the_command(args: argparse.Namespace) -> str:
    """Commands other than `serve` run as the `amberscan` process, with every concern."""
    return "amberscan"


def command(
    sub: Subparsers,
    name: str,
    help: str,
    run: Run,
    process: Process = the_command,
    *,
    examples: Sequence[str],
    description: str | None = None,
    notes: str = "",
) -> argparse.ArgumentParser:
    """Add the subparser of command `name`, which `main` runs through `run(args, settings)` with
    the settings of the process `process(args)` names. Its `--help` shows `description`
    (default: `help` as a sentence), then its options, `examples` (one command a line) and
    `notes`, as they are written (rio's and Raster Vision's commands show theirs so)."""
    parser = sub.add_parser(name, help=help, **_described(help, examples, description, notes))
    parser.set_defaults(run=run, process=process)
    return parser


def action(
    actions: Subparsers,
    name: str,
    help: str,
    *,
    examples: Sequence[str],
    description: str | None = None,
    notes: str = "",
) -> argparse.ArgumentParser:
    """Add the subparser of a command's action (`models promote`, `watch add`), described and
    with its examples as `command` does."""
    return actions.add_parser(name, help=help, **_described(help, examples, description, notes))


def _described(
    help: str, examples: Sequence[str], description: str | None, notes: str
) -> dict[str, Any]:
    if not examples:
        raise ValueError(f"{help!r}: a command shows at least one example")
    epilog = "examples:\n" + "\n".join(f"  {line}" for line in examples)
    return {
        "description": description or help[:1].upper() + help[1:] + ".",
        "epilog": epilog + (f"\n\n{notes}" if notes else ""),
        "formatter_class": argparse.RawDescriptionHelpFormatter,
    }


def add_labelled_data(parser: argparse.ArgumentParser, help: str | None = None) -> None:
    """--data: a folder of labelled crops, as `amberscan.model.dataset.list_labelled` reads."""
    parser.add_argument("--data", type=Path, required=True, help=help or LABELLED_HELP)


LABELLED_HELP = "folder with positive/ and negative/"


def add_seed(parser: argparse.ArgumentParser, help: str | None = None, default: int = 0) -> None:
    """--seed: the random seed, so that a run can be repeated."""
    parser.add_argument(
        "--seed", type=int, default=default, help=help or f"random seed (default {default})"
    )


def add_model_server(parser: argparse.ArgumentParser, help: str | None = None) -> None:
    """--model-server: the TF Serving address features come from (AMBERSCAN_MODEL_SERVER)."""
    parser.add_argument(
        "--model-server",
        metavar="HOST:PORT",
        help=help or "the model server's gRPC address (default: AMBERSCAN_MODEL_SERVER)",
    )


def add_model_dir(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument("--model-dir", type=Path, help=help)


def add_json(parser: argparse.ArgumentParser, help: str | None = None) -> None:
    """--json: print the result as one JSON object on the last line of stdout."""
    parser.add_argument(
        "--json",
        action="store_true",
        help=help or "print the result as one JSON object on the last line of standard output",
    )


# The imagery providers a scan may name (`amberscan.imagery.providers.PROVIDERS`; a test checks
# they agree: importing the providers here would slow `--help`).
PROVIDERS = ("xyz", "bing", "local", "demo", "geotiff", "stac", "wmts")


def absolute_source(source: str) -> str:
    """A local path made absolute (URLs and `s3://` keys as they are): a request travels on the
    bus to a tiler or watcher whose working directory is not the caller's."""
    if "://" in source and not source.startswith("file://"):
        return source
    scheme = "file://" if source.startswith("file://") else ""
    return scheme + os.path.abspath(os.path.expanduser(source.removeprefix("file://")))


def add_imagery_sources(parser: argparse.ArgumentParser, vintage: bool = True) -> None:
    """--source, --collection, --layer, --imagery-date (and --vintage): raster, STAC and WMTS
    sources, as `scan` and `watch add` name them."""
    parser.add_argument(
        "--source",
        action="append",
        type=absolute_source,
        default=[],
        help="geotiff: a file, folder, glob, URL or s3:// key/prefix (repeatable); "
        "stac: the catalogue or API URL; wmts: the GetCapabilities URL (local paths are "
        "made absolute before the request is sent)",
    )
    parser.add_argument("--collection", default="", help="stac: the collection")
    parser.add_argument("--layer", action="append", default=[], help="wmts: layer (repeatable)")
    parser.add_argument(
        "--imagery-date", default="", help="capture date of sources whose metadata has none"
    )
    if vintage:
        parser.add_argument(
            "--vintage",
            default="",
            help="ISO date of the imagery to read, or 'all' (one scan per date); default the newest",
        )

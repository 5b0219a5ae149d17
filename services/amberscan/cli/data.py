"""`amberscan data import PATH`: lay out the labelled data set where the project looks for it."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from amberscan.cli import options

if TYPE_CHECKING:
    from amberscan.common.settings import Settings

NOTES = """\
Reads a clone of texty/amber-methodology (crops under model/datasets/positive/ and negative/,
whole tiles in model/datasets/example/) or a folder in the shared layout (superpixels/, tiles/),
checks every file, and copies the set to AMBERSCAN_SHARED_DATA, else to
shared/data/texty-amber beside the checkout. Importing again changes nothing."""


def add_parser(sub: options.Subparsers) -> None:
    p = options.command(
        sub,
        "data",
        "the labelled data set",
        run,
        description="The labelled texty-amber data set: lay it out where the project looks for it.",
        examples=["amberscan data import ../amber-methodology"],
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    one = options.action(
        actions,
        "import",
        "lay out the texty data set where the project looks for it",
        description="Lay out the labelled texty-amber data set where the project looks for it.",
        examples=[
            "git clone https://github.com/texty/amber-methodology ../amber-methodology",
            "amberscan data import ../amber-methodology",
        ],
        notes=NOTES,
    )
    one.add_argument(
        "path",
        type=Path,
        help="a clone of texty/amber-methodology, or a folder in the shared layout",
    )
    one.add_argument(
        "--to",
        type=Path,
        help="the folder to lay it out in (default: AMBERSCAN_SHARED_DATA, else "
        "shared/data/texty-amber beside the checkout)",
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    from amberscan.common.data import import_data, import_target

    target = args.to or import_target(settings.data.shared_data)
    report = import_data(args.path, target)
    print(f"imported {args.path} ({report.layout} layout) into {report.target}:")
    for label, count in report.crops.items():
        print(f"  {label}: {count} crops of {report.tiles_of[label]} tiles")
    print(f"  whole tiles: {report.tiles}")
    print(f"  {report.copied} files copied, {report.present} already there")
    return 0

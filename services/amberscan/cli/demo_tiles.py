"""`amberscan demo-tiles`: the demo area's z/x/y tile server (what the 'demo' provider reads)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from amberscan.cli import options

if TYPE_CHECKING:
    from amberscan.common.settings import Settings


def add_parser(sub: options.Subparsers) -> None:
    p = options.command(
        sub,
        "demo-tiles",
        "serve the demo area's z/x/y tiles (the 'demo' provider)",
        run,
        examples=["amberscan demo-tiles", "amberscan demo-tiles --host 0.0.0.0 --port 18080"],
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=18080, help="port to listen on (default 18080)")
    p.add_argument(
        "--data",
        type=Path,
        help="folder with the texty-amber tiles/*.png (default: AMBERSCAN_DEMO_DATA_DIR, else "
        "the shared data set's tiles/)",
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    from amberscan.common.data import shared_data_dir
    from amberscan.tiler import demo

    data = args.data or settings.imagery.demo_data_dir or shared_data_dir(settings.data, "tiles")
    demo.serve(args.host, args.port, Path(data))
    return 0

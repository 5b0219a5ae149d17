"""Where the shared texty-amber data set is: one rule for every process, test and script.

Looked for in this order:

1. the setting `AMBERSCAN_SHARED_DATA` (`DataConfig.shared_data`): when it is set, only there;
2. `shared/data/texty-amber` beside the checkout, then beside each folder above it: a clone
   with `shared/` beside it (as CI makes) finds `../shared/...`; a git worktree kept in a folder
   of worktrees finds `../../shared/...`.

No machine's absolute path is assumed. When no place holds the data, `SharedDataMissing` lists
every place that was looked at. `python -m amberscan.common.data [PART]` prints the folder (or
says where it looked) for the Makefile and the stack scripts.
"""

from __future__ import annotations

import sys
from pathlib import Path

from amberscan.common.settings import DataConfig, load_settings
from amberscan.errors import AmberscanError

# services/amberscan/common/data.py → the checkout.
CHECKOUT = Path(__file__).resolve().parents[3]
DATA_SET = Path("shared", "data", "texty-amber")


class SharedDataMissing(AmberscanError):
    """The shared data set is in none of the places looked at (the message lists them)."""


def places(configured: Path | None = None, checkout: Path = CHECKOUT) -> list[Path]:
    """Where the data set may be, in the order they are tried."""
    if configured is not None:
        return [Path(configured)]
    return [folder / DATA_SET for folder in checkout.parents]


def find_shared_data(
    configured: Path | None = None, part: str = "", *, checkout: Path = CHECKOUT
) -> Path:
    """The data set's folder, or its sub-folder `part` ("tiles", "superpixels").

    Args:
        configured: The folder the settings name (`DataConfig.shared_data`), if any.
        part: A sub-folder the data set must hold.
        checkout: The checkout to look beside (the one this module belongs to).

    Raises:
        SharedDataMissing: no place holds it; the message names every place looked at.
    """
    looked = [place / part if part else place for place in places(configured, checkout)]
    for place in looked:
        if place.is_dir():
            return place
    how = (
        "named by AMBERSCAN_SHARED_DATA"
        if configured is not None
        else "set AMBERSCAN_SHARED_DATA to the texty-amber folder"
    )
    raise SharedDataMissing(
        f"the shared texty-amber data set{f' ({part}/)' if part else ''} is not at "
        + ", ".join(str(p) for p in looked)
        + f" ({how})"
    )


def shared_data_dir(data: DataConfig, part: str = "") -> Path:
    """`find_shared_data` for the data set the settings name (or the checkout's, by default)."""
    return find_shared_data(data.shared_data, part)


def main(argv: list[str] | None = None) -> int:
    """Print the data set's folder (or `PART` of it); exit 1 saying where it looked if absent."""
    args = sys.argv[1:] if argv is None else argv
    try:
        print(shared_data_dir(load_settings().data, args[0] if args else ""))
    except SharedDataMissing as error:
        print(f"amberscan: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

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

import filecmp
import os
import re
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
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


# The whole example tiles: positive1.png ... negative3.png.
TILE_NAME = re.compile(r"(positive|negative)\d+\.png")
CLASSES = ("positive", "negative")


class DataImportRefused(AmberscanError):
    """A folder `amberscan data import` will not take (the message says what and where)."""


@dataclass
class Imported:
    """What an import laid out: crops per class, their tiles, whole tiles; copied or present."""

    target: Path
    layout: str
    crops: dict[str, int] = field(default_factory=dict)
    tiles_of: dict[str, int] = field(default_factory=dict)
    tiles: int = 0
    copied: int = 0
    present: int = 0


def import_target(configured: Path | None = None, checkout: Path = CHECKOUT) -> Path:
    """Where an import lays the data set: the first place `find_shared_data` looks."""
    return places(configured, checkout)[0]


def _source_layout(source: Path) -> tuple[str, dict[str, Path], Path]:
    """The layout of `source`: its name, its crop folder per class, its whole-tile folder."""
    texty = source / "model" / "datasets"
    if texty.is_dir():
        return "texty/amber-methodology", {c: texty / c for c in CLASSES}, texty / "example"
    if (source / "superpixels").is_dir():
        crops = source / "superpixels"
        return "shared", {c: crops / c for c in CLASSES}, source / "tiles"
    raise DataImportRefused(
        f"{source}: neither a clone of texty/amber-methodology (no model/datasets/) nor a "
        "folder in the shared layout (no superpixels/)"
    )


def _visible(folder: Path) -> Iterator[Path]:
    return (p for p in sorted(folder.iterdir()) if not p.name.startswith("."))


def _check_image(path: Path) -> None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.verify()
    except (OSError, UnidentifiedImageError, SyntaxError) as error:
        raise DataImportRefused(f"{path}: not a readable image ({error})") from error


def _plan(source: Path) -> tuple[str, list[tuple[Path, Path]], Imported]:
    """Every (source file, path under the target) an import copies; refuses what does not fit."""
    from amberscan.model.dataset import DatasetError, parse_crop_name

    layout, crop_dirs, tile_dir = _source_layout(source)
    report = Imported(Path(), layout)
    files: list[tuple[Path, Path]] = []
    for label, folder in crop_dirs.items():
        if not folder.is_dir():
            raise DataImportRefused(f"{source} ({layout}): no {folder.relative_to(source)}/ folder")
        tile_ids = set()
        count = 0
        for path in _visible(folder):
            if not path.is_file():
                raise DataImportRefused(f"{path}: not a file (a crop was expected)")
            try:
                tile_ids.add(parse_crop_name(path.name))
            except DatasetError as error:
                raise DataImportRefused(f"{folder}: {error}") from error
            _check_image(path)
            files.append((path, Path("superpixels", label, path.name)))
            count += 1
        if not count:
            raise DataImportRefused(f"{folder}: no {label} crops (an empty class)")
        report.crops[label], report.tiles_of[label] = count, len(tile_ids)
    if not tile_dir.is_dir():
        raise DataImportRefused(
            f"{source} ({layout}): no {tile_dir.relative_to(source)}/ folder of whole tiles"
        )
    for path in _visible(tile_dir):
        if not TILE_NAME.fullmatch(path.name):
            raise DataImportRefused(
                f"{path}: not a whole tile's name (positive1.png ... negative3.png)"
            )
        _check_image(path)
        files.append((path, Path("tiles", path.name)))
        report.tiles += 1
    if not report.tiles:
        raise DataImportRefused(f"{tile_dir}: no whole tiles (positive1.png ... negative3.png)")
    return layout, files, report


def import_data(source: Path, target: Path) -> Imported:
    """Lay out the labelled set of `source` under `target` as the project reads it.

    `source` is a clone of texty/amber-methodology (`model/datasets/{positive,negative}/` crops,
    `model/datasets/example/` whole tiles) or a folder already in the shared layout
    (`superpixels/{positive,negative}/`, `tiles/`). Files are copied, never moved; a file already
    at the target with the same bytes is left alone, so importing again changes nothing. Every
    file is checked before any is copied.

    Raises:
        DataImportRefused: a missing folder, a crop name that is not the data set's, a file that
            is not an image, an empty class, or a target file with other bytes (each named).
    """
    source = source.expanduser().resolve()
    target = target.expanduser().resolve()
    if not source.is_dir():
        raise DataImportRefused(f"{source}: no such folder")
    _, files, report = _plan(source)
    report.target = target
    for path, relative in files:
        destination = target / relative
        if destination.exists():
            if destination.samefile(path) or filecmp.cmp(path, destination, shallow=False):
                report.present += 1
                continue
            raise DataImportRefused(
                f"{destination}: already there with other bytes than {path} (not overwritten; "
                "import into an empty folder, or remove it)"
            )
    for path, relative in files:
        destination = target / relative
        if destination.exists():
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        partial = destination.with_name(f".{destination.name}.partial")
        shutil.copyfile(path, partial)  # then renamed: an interrupted import leaves no half file
        os.replace(partial, destination)
        report.copied += 1
    return report


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

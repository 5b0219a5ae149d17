"""Rules for reading rasters as scan tiles: capture dates from tags, resolution, bands and their
scaling to 8-bit RGB, and which dated source (file, STAC item) a scan tile is read from.

Pure: tags, numbers, numpy arrays and shapely geometries in and out; the readers that apply these
rules are in `amberscan.imagery.providers.raster`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from numpy.typing import NDArray
from shapely import geometry as sg
from shapely.geometry.base import BaseGeometry
from shapely.ops import unary_union

from amberscan.common.settings import RASTER_MIN_COVERAGE
from amberscan.imagery.dates import normalize_date

# Tags naming when the imagery was captured, most specific first. GDAL exposes satellite and
# aerial products' acquisition time (IMD/RPC metadata, the IMAGERY domain) as ACQUISITIONDATETIME;
# TIFFTAG_DATETIME is the file's own date, which orthophoto tools set to the capture date.
DATE_TAGS = (
    "ACQUISITIONDATETIME",
    "ACQUISITION_DATETIME",
    "ACQUISITIONDATE",
    "ACQUISITION_DATE",
    "DATE_ACQUIRED",
    "IMAGERY_DATE",
    "TIFFTAG_DATETIME",
)
T = TypeVar("T")


def date_from_tags(tags: Mapping[str, str]) -> str:
    """The capture date (ISO) named by a raster's tags, "" when none does.

    Keys are matched without regard to case; the first of `DATE_TAGS` with a readable date wins.
    """
    upper = {key.upper(): value for key, value in tags.items()}
    for name in DATE_TAGS:
        if date := normalize_date(str(upper.get(name, ""))):
            return date
    return ""


@dataclass(frozen=True)
class BandRule:
    """How a raster's bands become 8-bit RGB: which three bands, and the linear scale.

    Attributes:
        bands: 1-based band indexes read as red, green, blue.
        scale_max: The value mapped to 255 (0 maps to 0, values are clipped); None keeps uint8
            values as they are.
        description: The rule in words, for logs and errors.
    """

    bands: tuple[int, int, int]
    scale_max: float | None
    description: str


def rgb_bands(where: str, colorinterp: Sequence[str]) -> tuple[int, int, int]:
    """The 1-based red, green, blue band indexes under `band_rule`'s rule (ValueError if none)."""
    interp = [c.lower() for c in colorinterp]
    colours = {c: i + 1 for i, c in reversed(list(enumerate(interp)))}
    if all(c in colours for c in ("red", "green", "blue")):
        return (colours["red"], colours["green"], colours["blue"])
    usable = [i + 1 for i, c in enumerate(interp) if c not in ("alpha", "undefined_mask")]
    if len(usable) < 3:
        raise ValueError(
            f"{where}: {len(usable)} colour band(s) ({', '.join(interp) or 'none'}); "
            "amberscan needs RGB (three bands)"
        )
    return (usable[0], usable[1], usable[2])


def band_rule(
    where: str,
    dtype: str,
    colorinterp: Sequence[str],
    nbits: int | None = None,
    percentile_98: float | None = None,
    maximum: float | None = None,
) -> BandRule:
    """The stated rule turning a raster's bands into 8-bit RGB, or ValueError saying why not.

    Bands: those whose colour interpretation is red, green and blue; else, when the raster has at
    least three bands and none is marked red/green/blue, bands 1, 2, 3 (alpha and mask bands are
    never counted). Fewer than three colour bands (grey, a single index) is refused: the method was
    trained on RGB.

    Values: uint8 is used as it is. Any other integer or float type is scaled linearly from
    [0, M] to [0, 255] and clipped, with M = 2^NBITS − 1 when the file declares its bit depth
    (e.g. 12-bit sensors in 16-bit files), else 1.0 for floats whose maximum is at most 1
    (reflectance), else the 98th percentile of the three bands' values (one M for all three, so
    colours keep their balance). Complex and boolean rasters are refused.

    Args:
        where: The raster, for the error message.
        dtype: Its numpy data type name (e.g. "uint16").
        colorinterp: Colour interpretation of each band, lower case ("red", "alpha", "gray"…).
        nbits: The file's NBITS, when declared.
        percentile_98: The 98th percentile of the chosen bands' values (non-uint8 rasters).
        maximum: The largest value of the chosen bands (non-uint8 rasters).
    """
    bands = rgb_bands(where, colorinterp)
    kind = np.dtype(dtype).kind
    if kind == "u" and np.dtype(dtype).itemsize == 1:
        return BandRule(bands, None, f"bands {bands} as 8-bit RGB")
    if kind not in "uif":
        raise ValueError(f"{where}: {dtype} bands cannot be read as RGB imagery")
    if nbits:
        top = float((1 << nbits) - 1)
        return BandRule(bands, top, f"bands {bands}, {dtype} NBITS={nbits}: 0..{top:g} → 0..255")
    if kind == "f" and maximum is not None and maximum <= 1.0:
        return BandRule(bands, 1.0, f"bands {bands}, {dtype} in 0..1 → 0..255")
    if percentile_98 is None or not np.isfinite(percentile_98) or percentile_98 <= 0:
        raise ValueError(f"{where}: {dtype} bands with no positive values to scale to 8 bits")
    return BandRule(
        bands, float(percentile_98), f"bands {bands}, {dtype}: 0..{percentile_98:g} (p98) → 0..255"
    )


def to_rgb8(data: NDArray[np.generic], rule: BandRule) -> NDArray[np.uint8]:
    """(3, H, W) band values as an (H, W, 3) uint8 image under `rule`."""
    bands = np.asarray(data)
    if rule.scale_max is None:
        scaled = bands.astype(np.uint8, copy=False)
    else:
        values = bands.astype(np.float32) * np.float32(255.0 / rule.scale_max)
        scaled = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(np.moveaxis(scaled, 0, -1))


def check_resolution(where: str, resolution_m: float, max_m: float) -> None:
    """ValueError when a raster is coarser than the method needs (names its resolution)."""
    if resolution_m > max_m:
        raise ValueError(
            f"{where}: {resolution_m:.2f} m/px is coarser than the {max_m:g} m/px the method "
            "needs (it was tuned on ~0.4 m/px aerial imagery: pits are a few metres wide)"
        )


@dataclass(frozen=True)
class Dated:
    """A source of pixels with its capture date and footprint (WGS84)."""

    key: str  # the file or item it names
    date: str
    footprint: BaseGeometry


def covered_share(
    tile_bounds: tuple[float, float, float, float], shapes: Sequence[BaseGeometry]
) -> float:
    """Share of a tile's bbox (WGS84) that the union of `shapes` covers, 0 to 1."""
    box = sg.box(*tile_bounds)
    if not shapes:
        return 0.0
    return float(unary_union(list(shapes)).intersection(box).area / box.area)


def choose_sources(
    tile_bounds: tuple[float, float, float, float],
    sources: Sequence[Dated],
    vintage: str = "",
    min_coverage: float = RASTER_MIN_COVERAGE,
) -> tuple[str, list[Dated]]:
    """The capture date a scan tile is read at, and the sources of that date over it.

    With `vintage` (an ISO date), that date. Otherwise the newest date whose sources cover at
    least `min_coverage` of the tile together, else (nothing covers that much) the date covering
    most. Sources are listed largest share of the tile first, so a mosaic fills from them in that
    order. ("", []) when no source touches the tile.
    """
    box = sg.box(*tile_bounds)
    touching = [s for s in sources if s.footprint.intersects(box) and not s.footprint.touches(box)]
    by_date: dict[str, list[Dated]] = {}
    for source in touching:
        by_date.setdefault(source.date, []).append(source)
    if vintage:
        chosen = normalize_date(vintage) or vintage
        group = by_date.get(chosen, [])
        return (chosen, _largest_first(box, group)) if group else ("", [])
    if not by_date:
        return "", []
    shares = {d: covered_share(tile_bounds, [s.footprint for s in g]) for d, g in by_date.items()}
    enough = [d for d in by_date if shares[d] >= min_coverage]
    date = max(enough) if enough else max(by_date, key=lambda d: (shares[d], d))
    return date, _largest_first(box, by_date[date])


def _largest_first(box: sg.Polygon, group: list[Dated]) -> list[Dated]:
    return sorted(group, key=lambda s: (-s.footprint.intersection(box).area, s.key))


def newest_dates(
    tiles: Sequence[tuple[T, tuple[float, float, float, float]]],
    sources: Sequence[Dated],
    min_coverage: float = RASTER_MIN_COVERAGE,
) -> dict[T, str]:
    """For each (tile, bounds), the date `choose_sources` reads it at (tiles no source covers
    at least `min_coverage` of are left out)."""
    out: dict[T, str] = {}
    for tile, bounds in tiles:
        date, chosen = choose_sources(bounds, sources, "", min_coverage)
        if chosen and covered_share(bounds, [s.footprint for s in chosen]) >= min_coverage:
            out[tile] = date
    return out

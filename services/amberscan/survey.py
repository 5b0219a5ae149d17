"""A survey-scale set of SYNTHETIC detections in a schema of its own (`amberscan survey-fixture`).

The 2018 survey scored about 450,000 zoom-16 tiles over ~70,000 km² of north-western Ukraine
(the amber belt of the Rivne, Zhytomyr and Volyn regions). This command fills a separate schema
with that many synthetic detections on a contiguous block of zoom-16 tiles over that extent
(900 × 500 tiles by default, west edge 25.0° E, north edge 52.0° N; about 66,600 km²), so the
map, its vector tiles and the summary can be measured at that scale (`benchmarks/survey_map.py`).

Every row says what it is: provider `synthetic`, scan `synthetic-survey`, model `synthetic-1`;
the map shows a SYNTHETIC notice for them. The schema must not be the configured one
(`AMBERSCAN_DATABASE_SCHEMA`), and the command refuses a schema that holds any other rows: real
and synthetic detections never mix.

Flagged tiles cluster around random mining centres (about 1.5 % of tiles are flagged) and carry
damaged-area polygons (one small box per positive superpixel) as the aggregator writes them.
The layout is reproducible from `--seed`.
"""

from __future__ import annotations

import asyncio
import io
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from amberscan.common.settings import Settings
from amberscan.errors import AmberscanError

ZOOM = 16
PROVIDER = "synthetic"
SCAN_ID = "synthetic-survey"
MODEL = "synthetic-1"
DEFAULT_SCHEMA = "amberscan_synthetic"
WEST, NORTH = 25.0, 52.0
COLUMNS = (
    "tile_id, imagery_date, model_version, backbone_version, scan_id, z, x, y, provider, "
    "flagged, positives, segment_count, min_positives, hectares, scores, demo, tile_geom, "
    "positives_geom"
)


@dataclass(frozen=True)
class Layout:
    """The block of tiles: `columns` × `rows` zoom-16 tiles from tile (x0, y0)."""

    x0: int
    y0: int
    columns: int
    rows: int

    @property
    def count(self) -> int:
        return self.columns * self.rows


def layout(tiles: int, west: float = WEST, north: float = NORTH) -> Layout:
    """A block of about `tiles` tiles, 9 columns to 5 rows, from (`west`, `north`)."""
    rows = max(1, round((tiles * 5 / 9) ** 0.5))
    columns = max(1, tiles // rows)
    n = 2**ZOOM
    x0 = int((west + 180.0) / 360.0 * n)
    lat = np.radians(north)
    y0 = int((1.0 - np.log(np.tan(lat) + 1.0 / np.cos(lat)) / np.pi) / 2.0 * n)
    return Layout(x0, y0, columns, rows)


def lon_of(x: NDArray[Any]) -> NDArray[np.float64]:
    """Longitude of zoom-16 tile column `x` (fractional for a point inside the tile)."""
    return np.asarray(x / 2.0**ZOOM * 360.0 - 180.0, dtype=np.float64)


def lat_of(y: NDArray[Any]) -> NDArray[np.float64]:
    """Latitude of zoom-16 tile row `y` (its north edge; fractional inside the tile)."""
    return np.asarray(np.degrees(np.arctan(np.sinh(np.pi * (1.0 - 2.0 * y / 2.0**ZOOM)))))


def quadkeys(x: NDArray[np.int64], y: NDArray[np.int64]) -> NDArray[np.str_]:
    """Zoom-16 quadkeys of tiles (x, y), as Bing Maps numbers them."""
    digits = np.zeros((x.size, ZOOM), dtype=np.uint8)
    for i in range(ZOOM):
        bit = ZOOM - 1 - i
        digits[:, i] = ord("0") + ((x >> bit) & 1) + 2 * ((y >> bit) & 1)
    return digits.view(f"S{ZOOM}").ravel().astype(str)


def flag_probability(
    lon: NDArray[np.float64], lat: NDArray[np.float64], rng: np.random.Generator, centres: int
) -> NDArray[np.float64]:
    """Chance that a tile is flagged: a low background plus Gaussian mining clusters."""
    west, east, south, north = lon.min(), lon.max(), lat.min(), lat.max()
    p = np.full(lon.shape, 0.002)
    cx = rng.uniform(west + 0.4 * (east - west), east, centres)  # the belt lies to the east
    cy = rng.uniform(south, north, centres)
    sigma = rng.uniform(0.004, 0.025, centres)  # degrees: about 0.5-3 km
    peak = rng.uniform(0.2, 0.8, centres)
    for i in range(centres):
        near = (np.abs(lon - cx[i]) < 4 * sigma[i]) & (np.abs(lat - cy[i]) < 4 * sigma[i])
        d2 = ((lon[near] - cx[i]) * 0.63) ** 2 + (lat[near] - cy[i]) ** 2
        p[near] += peak[i] * np.exp(-d2 / (2 * sigma[i] ** 2))
    return np.asarray(np.clip(p, 0.0, 0.9), dtype=np.float64)


def _polygon(w: float, s: float, e: float, n: float) -> str:
    return f"(({w:.7f} {s:.7f},{e:.7f} {s:.7f},{e:.7f} {n:.7f},{w:.7f} {n:.7f},{w:.7f} {s:.7f}))"


def rows_text(
    lay: Layout, start: int, stop: int, rng: np.random.Generator, p_flag: NDArray[np.float64]
) -> str:
    """COPY text of tiles `start`..`stop` of the block (row-major from the north-west)."""
    index = np.arange(start, stop)
    x = lay.x0 + index % lay.columns
    y = lay.y0 + index // lay.columns
    west, east = lon_of(x), lon_of(x + 1)
    north, south = lat_of(y), lat_of(y + 1)
    keys = quadkeys(x, y)
    n = stop - start
    flagged = rng.random(n) < p_flag[start:stop]
    segments = rng.integers(24, 37, n)
    positives = np.where(flagged, rng.integers(3, 13, n), rng.choice(3, n, p=[0.8, 0.15, 0.05]))
    # Hectares of the positive superpixels: the tile's area shared evenly among its superpixels.
    tile_ha = (east - west) * 111.32 * np.cos(np.radians(north)) * (north - south) * 110.57 * 100
    hectares = positives * tile_ha / segments
    month = rng.integers(5, 10, n)
    day = rng.integers(1, 29, n)
    out = io.StringIO()
    for i in range(n):
        k = int(segments[i])
        scores = rng.uniform(0.0, 0.45, k)
        scores[: positives[i]] = rng.uniform(0.6, 0.999, positives[i])
        tile = "SRID=4326;POLYGON" + _polygon(west[i], south[i], east[i], north[i])
        damage = r"\N"
        if flagged[i]:
            dx, dy = (east[i] - west[i]) / 6, (north[i] - south[i]) / 6
            parts = []
            for _ in range(int(positives[i])):
                u, v = rng.uniform(0, 5, 2)
                w, s = west[i] + u * dx, south[i] + v * dy
                parts.append(_polygon(w, s, w + dx, s + dy))
            damage = "SRID=4326;MULTIPOLYGON(" + ",".join(parts) + ")"
        out.write(
            f"{keys[i]}\t2017-{month[i]:02d}-{day[i]:02d}\t{MODEL}\tsynthetic\t{SCAN_ID}\t"
            f"{ZOOM}\t{x[i]}\t{y[i]}\t{PROVIDER}\t{'t' if flagged[i] else 'f'}\t{positives[i]}\t"
            f"{k}\t2\t{hectares[i]:.4f}\t{{{','.join(f'{s:.3f}' for s in scores)}}}\tf\t"
            f"{tile}\t{damage}\n"
        )
    return out.getvalue()


async def fill(settings: Settings, schema: str, tiles: int, seed: int) -> dict[str, Any]:
    """Replace the synthetic detections of `schema` by `tiles` new ones; a summary."""
    from amberscan.common.db import Database

    if schema == settings.database.schema_name:
        raise AmberscanError(
            f"schema {schema!r} is the configured AMBERSCAN_DATABASE_SCHEMA: synthetic "
            "detections go to a schema of their own (--schema)"
        )
    started = time.perf_counter()
    lay = layout(tiles)
    rng = np.random.default_rng(seed)
    index = np.arange(lay.count)
    lon = lon_of(lay.x0 + index % lay.columns + 0.5)
    lat = lat_of(lay.y0 + index // lay.columns + 0.5)
    p_flag = flag_probability(lon, lat, rng, centres=100)
    async with Database(settings.database, schema=schema) as db:
        real = await db.fetch("SELECT count(*) FROM detections WHERE provider <> %s", PROVIDER)
        if real[0][0]:
            raise AmberscanError(
                f"schema {schema!r} holds {real[0][0]} detections that are not synthetic: "
                "choose another --schema (real and synthetic rows never mix)"
            )
        async with db.pool.connection() as conn, conn.transaction():
            await conn.execute(b"DELETE FROM detections")
            async with conn.cursor().copy(f"COPY detections ({COLUMNS}) FROM STDIN".encode()) as cp:
                for start in range(0, lay.count, 20_000):
                    text = await asyncio.to_thread(
                        rows_text, lay, start, min(start + 20_000, lay.count), rng, p_flag
                    )
                    await cp.write(text.encode())
        await db.execute("ANALYZE detections")
        counts = await db.fetch(
            "SELECT count(*), count(*) FILTER (WHERE flagged), "
            "coalesce(sum(hectares) FILTER (WHERE flagged), 0), ST_Extent(tile_geom)::text "
            "FROM detections"
        )
    total, flagged, hectares, extent = counts[0]
    return {
        "schema": schema,
        "tiles": int(total),
        "flagged": int(flagged),
        "hectares": round(float(hectares), 1),
        "extent": extent,
        "seconds": round(time.perf_counter() - started, 1),
    }

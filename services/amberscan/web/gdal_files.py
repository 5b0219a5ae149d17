"""GeoPackage and FlatGeobuf exports, written by GDAL (through pyogrio) from a stream of Arrow
batches, so memory holds one batch of rows whatever the export's size.

GDAL writes to a file (both formats are finished by seeking back: the GeoPackage's SQLite
pages, the FlatGeobuf's header and spatial index), so the web app writes a temporary file and
then streams it out; the command writes where it is told. GDAL builds a FlatGeobuf's spatial
index in memory, about 0.5 KB a feature (measured: +47 MB for 100,000), so a FlatGeobuf of more
than `FGB_INDEX_MAX` features is written without one (a valid file, read in full; GDAL's
`ogr2ogr` can index it): memory stays bounded whatever the export's size.

GDAL's writer runs in a thread; the rows come from the event loop (an async database cursor),
one batch at a time, through `asyncio.run_coroutine_threadsafe`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from amberscan.common.db import Database
from amberscan.web import area_queries
from amberscan.web.core import Filters
from amberscan.web.export_queries import ThresholdSource, count_rows, export_rows
from amberscan.web.exporting import (
    ESTIMATE_FIELDS,
    ESTIMATE_LAYER,
    FIELDS,
    FORMATS,
    GEOMETRY_TYPES,
    columns,
    estimate_columns,
)

BATCH = 1000
FGB_INDEX_MAX = 100_000


def _schema(fields: tuple[tuple[str, str], ...] = FIELDS) -> Any:
    import pyarrow as pa

    types = {
        "str": pa.string(),
        "float": pa.float64(),
        "int": pa.int32(),
        "bool": pa.bool_(),
        "time": pa.timestamp("ms", tz="UTC"),
    }
    return pa.schema(
        [pa.field("geometry", pa.binary(), nullable=False)]
        + [pa.field(name, types[kind]) for name, kind in fields]
    )


async def write_layer(
    path: Path,
    fmt: str,
    layer: str,
    rows: AsyncGenerator[dict[str, Any], None],
    *,
    append: bool = False,
    batch: int = BATCH,
    layer_options: dict[str, str] | None = None,
    fields: tuple[tuple[str, str], ...] = FIELDS,
    to_columns: Callable[[Iterable[Mapping[str, Any]]], dict[str, list[Any]]] = columns,
) -> int:
    """Write `rows` (export rows with their geometry as `wkb`) as layer `layer` of the `fmt`
    ("gpkg" or "fgb") file at `path`, added to the file when `append`, with GDAL's
    `layer_options`; returns the row count. `rows` is closed however the writing ends. The
    rows are shaped into `fields` by `to_columns` (the detection layers' by default)."""
    import pyarrow as pa
    import pyogrio

    driver = FORMATS[fmt][0]
    if not driver:
        raise ValueError(f"format {fmt!r} is not written by GDAL")
    loop = asyncio.get_running_loop()
    schema = _schema(fields)
    stop = threading.Event()
    written = 0

    async def next_batch() -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while len(out) < batch:
            row = await anext(rows, None)
            if row is None:
                break
            out.append(row)
        return out

    def batches() -> Iterator[Any]:
        nonlocal written
        while not stop.is_set():
            chunk = asyncio.run_coroutine_threadsafe(next_batch(), loop).result()
            if not chunk:
                return
            written += len(chunk)
            yield pa.RecordBatch.from_pydict(to_columns(chunk), schema=schema)

    def write() -> None:
        pyogrio.write_arrow(
            pa.RecordBatchReader.from_batches(schema, batches()),
            str(path),
            layer=layer,
            driver=driver,
            geometry_name="geometry",
            geometry_type=GEOMETRY_TYPES[layer],
            crs="EPSG:4326",
            append=append,
            layer_options=layer_options,
        )

    writer = asyncio.ensure_future(asyncio.to_thread(write))
    try:
        await asyncio.shield(writer)
    except asyncio.CancelledError:
        # The thread cannot be cancelled: let it stop at the next batch, then close the rows.
        stop.set()
        await asyncio.gather(writer, return_exceptions=True)
        raise
    finally:
        await rows.aclose()
    return written


async def write_file(
    path: Path,
    fmt: str,
    layers: tuple[str, ...],
    db: Database,
    filters: Filters,
    thresholds: ThresholdSource,
    images: Any,
) -> dict[str, int]:
    """The `fmt` export of `layers` under `filters` at `path` (replaced), one layer after the
    other on one connection at a time; returns each layer's row count. `images` (the web
    app's `ImageCache`) gives the area estimates' marked superpixels."""
    path.unlink(missing_ok=True)
    counts: dict[str, int] = {}
    for i, layer in enumerate(layers):
        if layer == ESTIMATE_LAYER:
            found = await area_queries.export_reports(db, images, filters)
            counts[layer] = await write_layer(
                path,
                fmt,
                layer,
                _each(found),
                append=i > 0,
                fields=ESTIMATE_FIELDS,
                to_columns=estimate_columns,
            )
            continue
        options = None
        if fmt == "fgb":
            small = await count_rows(db, filters, layer) <= FGB_INDEX_MAX
            options = {"SPATIAL_INDEX": "YES" if small else "NO"}
        rows = export_rows(db, filters, layer, "wkb", thresholds)
        counts[layer] = await write_layer(
            path, fmt, layer, rows, append=i > 0, layer_options=options
        )
    return counts


async def _each(items: list[dict[str, Any]]) -> AsyncGenerator[dict[str, Any], None]:
    for item in items:
        yield item

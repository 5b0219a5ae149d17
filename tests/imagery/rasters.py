"""Real rasters for the raster-source tests: COGs made with rio-cogeo from the shared tiles,
placed at the demo area (in web mercator, aligned to the scan-tile grid, and in a UTM zone), a
static STAC catalogue written with pystac, and an HTTP file server that honours range requests
and counts what it sends."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mercantile
import numpy as np
import pystac
import rasterio
from aiohttp import web
from numpy.typing import NDArray
from rasterio.io import MemoryFile
from rasterio.transform import from_origin
from rasterio.warp import Resampling, calculate_default_transform, reproject
from rio_cogeo.cogeo import cog_translate
from rio_cogeo.profiles import cog_profiles

from amberscan.geo.tiles import Tile
from amberscan.tiler import demo

UTM_35N = "EPSG:32635"  # 24-30 E: the demo area is at 26.87 E


def demo_block(tiles_dir: Path) -> tuple[NDArray[np.uint8], Tile]:
    """The demo area's 4×2 scan tiles as one zoom-18-resolution mosaic, and its NW scan tile."""
    server = demo.DemoTileServer(tiles_dir)
    origin = min((d.tile for d in demo.demo_layout()), key=lambda t: (t.y, t.x))
    return server.mosaic, origin


def write_cog(
    path: Path,
    bands: NDArray[Any],
    *,
    crs: str | None,
    transform: Any,
    tags: Mapping[str, str] | None = None,
    nodata: float | None = None,
    colorinterp: list[Any] | None = None,
    nbits: int | None = None,
) -> Path:
    """Write (bands, H, W) values as a deflate COG (lossless: pixels survive exactly)."""
    count, height, width = bands.shape
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": count,
        "dtype": str(bands.dtype),
        "transform": transform,
    }
    if crs:
        profile["crs"] = crs
    if nodata is not None:
        profile["nodata"] = nodata
    config = cog_profiles.get("deflate")
    if nbits:
        profile["nbits"] = config["nbits"] = nbits
    with MemoryFile() as memory:
        with memory.open(**profile) as dst:
            dst.write(bands)
            if colorinterp:
                dst.colorinterp = colorinterp
        with memory.open() as src:
            cog_translate(
                src,
                str(path),
                config,
                in_memory=True,
                quiet=True,
                additional_cog_metadata=dict(tags or {}),
                nodata=nodata,
            )
    return path


def mercator_transform(tile: Tile, size: int = 1024) -> Any:
    """The affine transform of a `size`-px image exactly covering `tile` (web mercator)."""
    left, _, right, top = mercantile.xy_bounds(tile.x, tile.y, tile.z)
    return from_origin(left, top, (right - left) / size, (right - left) / size)


def mercator_block_cog(path: Path, tiles_dir: Path, date: str = "2017:05:01 10:00:00") -> Path:
    """The whole demo block as one COG in web mercator, aligned pixel for pixel to the grid."""
    mosaic, origin = demo_block(tiles_dir)
    return write_cog(
        path,
        np.moveaxis(mosaic, -1, 0),
        crs="EPSG:3857",
        transform=mercator_transform(origin),
        tags={"TIFFTAG_DATETIME": date} if date else None,
    )


def tile_cog(path: Path, tile: Tile, image: NDArray[np.uint8], **kwargs: Any) -> Path:
    """One scan tile's 1024×1024 image as a web-mercator COG covering exactly that tile."""
    return write_cog(
        path,
        np.moveaxis(image, -1, 0),
        crs="EPSG:3857",
        transform=mercator_transform(tile),
        **kwargs,
    )


def utm_block_cog(path: Path, tiles_dir: Path, resolution_m: float = 0.35) -> Path:
    """The demo block reprojected to UTM zone 35N (its footprint turns: nodata at the edges)."""
    mosaic, origin = demo_block(tiles_dir)
    bands = np.moveaxis(mosaic, -1, 0)
    src_transform = mercator_transform(origin)
    height, width = mosaic.shape[:2]
    left, top = src_transform.c, src_transform.f
    right, bottom = left + width * src_transform.a, top + height * src_transform.e
    dst_transform, dst_w, dst_h = calculate_default_transform(
        "EPSG:3857", UTM_35N, width, height, left, bottom, right, top, resolution=resolution_m
    )
    out = np.zeros((3, dst_h, dst_w), dtype=np.uint8)
    for band in range(3):
        reproject(
            bands[band],
            out[band],
            src_transform=src_transform,
            src_crs="EPSG:3857",
            dst_transform=dst_transform,
            dst_crs=UTM_35N,
            resampling=Resampling.bilinear,
            src_nodata=None,
            dst_nodata=0,
        )
    # An alpha band marks the reprojected footprint (black pixels inside it stay valid).
    inside = np.zeros((dst_h, dst_w), dtype=np.uint8)
    reproject(
        np.full((height, width), 255, dtype=np.uint8),
        inside,
        src_transform=src_transform,
        src_crs="EPSG:3857",
        dst_transform=dst_transform,
        dst_crs=UTM_35N,
        resampling=Resampling.nearest,
        dst_nodata=0,
    )
    ci = rasterio.enums.ColorInterp
    return write_cog(
        path,
        np.concatenate([out, inside[None]]),
        crs=UTM_35N,
        transform=dst_transform,
        tags={"ACQUISITIONDATETIME": "2018-06-02T09:30:00Z"},
        colorinterp=[ci.red, ci.green, ci.blue, ci.alpha],
    )


@dataclass
class Catalogue:
    """A static STAC catalogue under `root`, served at `base`, whose items' visual assets are
    per-scan-tile COGs of the demo images (written on first use)."""

    root: Path
    base: str
    images: dict[Tile, NDArray[np.uint8]]

    def item(self, tile: Tile, date: str, source: Tile | None = None) -> pystac.Item:
        """An item over `tile` dated `date`, its COG made from `source`'s demo image."""
        name = f"{tile.quadkey}-{date}.tif"
        path = self.root / "cogs" / name
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tile_cog(path, tile, self.images[source or tile])
        return stac_item(f"{tile.quadkey}-{date}", tile, date, f"{self.base}/cogs/{name}")

    def write(self, items: list[pystac.Item]) -> str:
        """(Re)write the catalogue with `items`; returns its URL."""
        write_catalogue(self.root / "stac", items)
        return f"{self.base}/stac/catalog.json"


def stac_item(item_id: str, tile: Tile, date: str, href: str) -> pystac.Item:
    """A STAC item over one scan tile with its COG as the `visual` asset."""
    import datetime as dt

    w, s, e, n = tile.bounds()
    item = pystac.Item(
        id=item_id,
        geometry={"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]},
        bbox=[w, s, e, n],
        datetime=dt.datetime.fromisoformat(f"{date}T10:00:00+00:00"),
        properties={},
    )
    item.add_asset(
        "visual",
        pystac.Asset(href=href, media_type=pystac.MediaType.COG, roles=["visual"]),
    )
    return item


def write_catalogue(root: Path, items: list[pystac.Item], collection: str = "ortho") -> Path:
    """A self-contained static catalogue (catalog → collection → items) under `root`."""
    catalog = pystac.Catalog(id="amberscan-test", description="test orthophotos")
    extent = pystac.Extent(
        pystac.SpatialExtent([[-180.0, -85.0, 180.0, 85.0]]), pystac.TemporalExtent([[None, None]])
    )
    coll = pystac.Collection(id=collection, description="orthophotos", extent=extent)
    catalog.add_child(coll)
    for item in items:
        coll.add_item(item.clone())
    catalog.normalize_hrefs(str(root))
    catalog.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    return root / "catalog.json"


@dataclass
class Served:
    """What a `file_server` sent: requests seen (path, Range header) and body bytes."""

    requests: list[tuple[str, str]] = field(default_factory=list)
    bytes_sent: int = 0


def file_server(root: Path, served: Served) -> web.Application:
    """Static files under `root` with range requests (aiohttp's FileResponse), counted."""

    async def count(request: web.Request, response: web.StreamResponse) -> None:
        # Called as the headers go out, when a file response knows its (range's) length.
        served.requests.append((request.path, request.headers.get("Range", "")))
        if request.method != "HEAD":  # a HEAD names the file's length but sends no body
            served.bytes_sent += int(response.content_length or 0)

    app = web.Application()
    app.on_response_prepare.append(count)
    app.router.add_static("/", root)
    return app


def stac_api(items: list[pystac.Item], collection: str = "ortho") -> web.Application:
    """A STAC API (landing page advertising item search, and /search) over `items`.

    This stands in for a remote API this machine cannot reach: real HTTP and real STAC JSON in
    the API's shape; the filtering (bbox, datetime, collections) is the spec's, done here."""
    from shapely import geometry as sg

    async def landing(request: web.Request) -> web.Response:
        base = f"{request.scheme}://{request.host}"
        return web.json_response(
            {
                "type": "Catalog",
                "id": "test-api",
                "description": "a test STAC API",
                "stac_version": "1.0.0",
                "conformsTo": [
                    "https://api.stacspec.org/v1.0.0/core",
                    "https://api.stacspec.org/v1.0.0/item-search",
                ],
                "links": [
                    {"rel": "self", "href": f"{base}/", "type": "application/json"},
                    {"rel": "root", "href": f"{base}/", "type": "application/json"},
                    {
                        "rel": "search",
                        "href": f"{base}/search",
                        "type": "application/geo+json",
                        "method": "POST",
                    },
                    {
                        "rel": "search",
                        "href": f"{base}/search",
                        "type": "application/geo+json",
                        "method": "GET",
                    },
                ],
            }
        )

    async def search(request: web.Request) -> web.Response:
        body = await request.json() if request.method == "POST" else dict(request.query)
        bbox = body.get("bbox")
        if isinstance(bbox, str):
            bbox = [float(v) for v in bbox.split(",")]
        start, _, end = str(body.get("datetime") or "../..").partition("/")
        found = []
        for item in items:
            stamp = item.datetime.isoformat() if item.datetime else ""
            if bbox and not sg.shape(item.geometry).intersects(sg.box(*bbox)):
                continue
            if start not in ("", "..") and stamp[:10] < start[:10]:
                continue
            if end not in ("", "..") and stamp[:10] > end[:10]:
                continue
            if body.get("collections") and collection not in body["collections"]:
                continue
            found.append({**item.to_dict(), "collection": collection})
        return web.json_response({"type": "FeatureCollection", "features": found, "links": []})

    app = web.Application()
    app.router.add_get("/", landing)
    app.router.add_route("*", "/search", search)
    return app


def wmts_capabilities(base: str, times: list[str], extra_layers: bool = True) -> str:
    """A WMTS 1.0.0 capabilities document: layer `ortho` with a Time dimension on a Web Mercator
    matrix set (REST tiles), a layer `ortho-1992` offered only on a national grid (EPSG:2180),
    and a layer `ortho_2016-06-01` without Time (one layer per release)."""
    matrices = "".join(
        f"""
      <TileMatrix><ows:Identifier>{z}</ows:Identifier>
        <ScaleDenominator>{559082264.0287178 / (1 << z)!r}</ScaleDenominator>
        <TopLeftCorner>-20037508.3427892 20037508.3427892</TopLeftCorner>
        <TileWidth>256</TileWidth><TileHeight>256</TileHeight>
        <MatrixWidth>{1 << z}</MatrixWidth><MatrixHeight>{1 << z}</MatrixHeight></TileMatrix>"""
        for z in range(19)
    )
    values = "".join(f"<Value>{t}</Value>" for t in times)
    extra = (
        f"""
    <Layer><ows:Title>Orthophoto 1992 grid</ows:Title><ows:Identifier>ortho-1992</ows:Identifier>
      <Style isDefault="true"><ows:Identifier>default</ows:Identifier></Style>
      <Format>image/png</Format>
      <TileMatrixSetLink><TileMatrixSet>PL-1992</TileMatrixSet></TileMatrixSetLink>
      <ResourceURL format="image/png" resourceType="tile" template="{base}/wmts/ortho-1992/{{TileMatrix}}/{{TileRow}}/{{TileCol}}.png"/>
    </Layer>
    <Layer><ows:Title>Orthophoto release of 2016</ows:Title><ows:Identifier>ortho_2016-06-01</ows:Identifier>
      <ows:WGS84BoundingBox><ows:LowerCorner>26.86 51.27</ows:LowerCorner><ows:UpperCorner>26.93 51.31</ows:UpperCorner></ows:WGS84BoundingBox>
      <Style isDefault="true"><ows:Identifier>default</ows:Identifier></Style>
      <Format>image/png</Format>
      <TileMatrixSetLink><TileMatrixSet>GoogleMapsCompatible</TileMatrixSet></TileMatrixSetLink>
      <ResourceURL format="image/png" resourceType="tile" template="{base}/wmts/ortho_2016-06-01/none/{{TileMatrixSet}}/{{TileMatrix}}/{{TileRow}}/{{TileCol}}.png"/>
    </Layer>"""
        if extra_layers
        else ""
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<Capabilities xmlns="http://www.opengis.net/wmts/1.0" xmlns:ows="http://www.opengis.net/ows/1.1"
  xmlns:xlink="http://www.w3.org/1999/xlink" version="1.0.0">
  <ows:ServiceIdentification><ows:Title>test orthophotos</ows:Title>
    <ows:ServiceType>OGC WMTS</ows:ServiceType><ows:ServiceTypeVersion>1.0.0</ows:ServiceTypeVersion>
  </ows:ServiceIdentification>
  <Contents>
    <Layer><ows:Title>Orthophoto</ows:Title><ows:Identifier>ortho</ows:Identifier>
      <ows:WGS84BoundingBox><ows:LowerCorner>26.86 51.27</ows:LowerCorner><ows:UpperCorner>26.93 51.31</ows:UpperCorner></ows:WGS84BoundingBox>
      <Style isDefault="true"><ows:Identifier>default</ows:Identifier></Style>
      <Format>image/png</Format>
      <Dimension><ows:Identifier>Time</ows:Identifier><Default>{times[-1] if times else ""}</Default>{values}</Dimension>
      <TileMatrixSetLink><TileMatrixSet>GoogleMapsCompatible</TileMatrixSet></TileMatrixSetLink>
      <ResourceURL format="image/png" resourceType="tile" template="{base}/wmts/ortho/{{Time}}/{{TileMatrixSet}}/{{TileMatrix}}/{{TileRow}}/{{TileCol}}.png"/>
    </Layer>{extra}
    <TileMatrixSet><ows:Identifier>GoogleMapsCompatible</ows:Identifier>
      <ows:SupportedCRS>urn:ogc:def:crs:EPSG::3857</ows:SupportedCRS>{matrices}
    </TileMatrixSet>
    <TileMatrixSet><ows:Identifier>PL-1992</ows:Identifier>
      <ows:SupportedCRS>urn:ogc:def:crs:EPSG::2180</ows:SupportedCRS>
      <TileMatrix><ows:Identifier>0</ows:Identifier><ScaleDenominator>30000000</ScaleDenominator>
        <TopLeftCorner>850000 100000</TopLeftCorner><TileWidth>512</TileWidth><TileHeight>512</TileHeight>
        <MatrixWidth>1</MatrixWidth><MatrixHeight>1</MatrixHeight></TileMatrix>
    </TileMatrixSet>
  </Contents>
</Capabilities>
"""


@dataclass
class WmtsServer:
    """State of a `wmts_app`: its Time values (a test may add one) and the tiles it sent."""

    times: list[str]
    sent: list[tuple[str, str, int, int, int]] = field(default_factory=list)


def wmts_app(tiles_dir: Path, state: WmtsServer) -> web.Application:
    """Capabilities at /wmts/capabilities.xml and the demo block's tiles at every Time value
    (the demo tile server's pixels: a WMTS scan must give the demo provider's verdicts)."""
    server = demo.DemoTileServer(tiles_dir)

    async def capabilities(request: web.Request) -> web.Response:
        base = f"{request.scheme}://{request.host}"
        return web.Response(
            text=wmts_capabilities(base, state.times), content_type="application/xml"
        )

    async def tile(request: web.Request) -> web.Response:
        info = request.match_info
        layer, time = info["layer"], info["time"]
        if layer == "ortho" and time not in state.times:
            raise web.HTTPBadRequest(text=f"no Time {time}")
        z, row, col = int(info["z"]), int(info["row"]), int(info["col"])
        png = server.png(z, col, row)
        if png is None:
            raise web.HTTPNotFound()
        state.sent.append((layer, time, z, row, col))
        return web.Response(body=png, content_type="image/png")

    app = web.Application()
    app.router.add_get("/wmts/capabilities.xml", capabilities)
    app.router.add_get(r"/wmts/{layer}/{time}/{tms}/{z:\d+}/{row:\d+}/{col:\d+}.png", tile)
    return app


@contextmanager
def served_in_thread(make_app: Callable[[], web.Application]) -> Iterator[str]:
    """`make_app()` on loopback in a thread with its own event loop, while the block runs; yields
    its base URL. For servers that a pipeline running in the test's loop reads from: a busy
    loop must not stall the imagery server, as it would not in production."""
    from tests.streams import free_port

    port = free_port()
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    runner: list[web.AppRunner] = []

    def serve() -> None:
        asyncio.set_event_loop(loop)
        runner.append(web.AppRunner(make_app()))
        loop.run_until_complete(runner[0].setup())
        loop.run_until_complete(web.TCPSite(runner[0], "127.0.0.1", port).start())
        ready.set()
        loop.run_forever()
        loop.run_until_complete(runner[0].cleanup())
        loop.close()

    thread = threading.Thread(target=serve, name=f"served-{port}", daemon=True)
    thread.start()
    if not ready.wait(30):
        raise RuntimeError(f"the test server on port {port} did not start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)

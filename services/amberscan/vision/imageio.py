"""Decoding tiles into RGB arrays, and encoding arrays as PNG and as the stored tile's GeoTIFF.

The contract downstream is an (H, W, 3) uint8 RGB array of aerial imagery. Anything else is
refused here with `InvalidImage`, whose message names the source and the problem, so the runner
dead-letters a bad tile with a reason instead of failing somewhere inside SLIC.

What is accepted and how it is turned into RGB:

- RGB: as is. RGBX (padding byte): the padding is dropped.
- Palette (P): expanded to RGB. A palette with transparency follows the RGBA rule.
- RGBA / RGBa: accepted only when every pixel is fully opaque (alpha 255), then alpha is dropped.
  A transparent pixel means "no imagery here" (an edge tile of a provider's coverage); filling it
  with a colour would feed made-up pixels to the classifier, so such tiles are refused.
- CMYK and YCbCr: converted to RGB by Pillow.
- 16-bit RGB (PNG, TIFF): Pillow's decoder keeps the top byte of each sample (``v >> 8``), which
  is the right scaling for data that uses the full 16-bit range. Imagery with fewer significant
  bits in a 16-bit container (11- or 12-bit satellite counts) comes out dark and must be
  stretched before it reaches amberscan.
- Grayscale (1, L, LA, I, I;16, F): refused. The model was trained on colour aerial imagery and
  SLIC runs in Lab; a single band would be segmented and classified as something it is not.

EXIF orientation is ignored: a tile's pixel grid is tied to its geographic bounds, as in GDAL.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image, UnidentifiedImageError

from amberscan.errors import InvalidImage

# What Pillow raises from inside its plugins and decoders on malformed input.
_DECODE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    TypeError,
    KeyError,
    struct.error,
    zlib.error,
    Image.DecompressionBombError,
)
# Raster formats tile providers serve. Restricting Pillow to these keeps it from handing an
# untrusted file to an external program (EPS goes to Ghostscript) or to a rarely used decoder.
FORMATS = ("PNG", "JPEG", "WEBP", "TIFF", "GIF", "BMP")
_GRAYSCALE_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
_CONVERTIBLE_MODES = frozenset({"RGBX", "CMYK", "YCbCr"})
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"BM", "BMP"),
)


def decode_image(
    data: bytes, source: str, *, max_pixels: int = 40_000_000, min_side: int = 32
) -> NDArray[np.uint8]:
    """Decode an encoded image into an RGB array, refusing anything that is not usable imagery.

    The declared size is checked before any pixel is decoded, and the whole image is then
    decoded at once, so a truncated file fails here rather than yielding grey rows.

    Args:
        data: The encoded image, in one of `FORMATS`.
        source: What the bytes are (a path, a blob key, "tile 18/151234/87211"); it starts
            every error message.
        max_pixels: Largest width * height accepted. Pillow's own bomb limit
            (``PIL.Image.MAX_IMAGE_PIXELS``) still applies when it is lower.
        min_side: Smallest width or height accepted.

    Returns:
        An (H, W, 3) C-contiguous uint8 array in RGB order.

    Raises:
        InvalidImage: Empty input, not an image, truncated or corrupt, too many pixels, a side
            shorter than `min_side`, grayscale, transparent pixels, or an unsupported mode.
    """
    if not data:
        raise InvalidImage(f"{source}: empty input (0 bytes)")
    kind = _sniff(data)
    try:
        image = Image.open(io.BytesIO(data), formats=FORMATS)
    except UnidentifiedImageError:
        raise InvalidImage(
            f"{source}: not an image in an accepted format ({', '.join(FORMATS)}); "
            f"the first bytes say {kind}"
        ) from None
    except Image.DecompressionBombError as error:
        raise InvalidImage(f"{source}: refused as a decompression bomb ({error})") from None
    except _DECODE_ERRORS as error:
        raise InvalidImage(f"{source}: image truncated or corrupt ({kind}: {error})") from None

    with image:
        kind = image.format or kind
        width, height = image.size
        limit = max_pixels
        if Image.MAX_IMAGE_PIXELS is not None:
            limit = min(limit, int(Image.MAX_IMAGE_PIXELS))
        if width * height > limit:
            raise InvalidImage(
                f"{source}: {kind} declares {width}x{height} = {width * height} pixels, "
                f"more than the limit of {limit} (decompression bomb?)"
            )
        if min(width, height) < min_side:
            raise InvalidImage(
                f"{source}: {kind} is {width}x{height}, smaller than {min_side} px on a side"
            )
        try:
            image.load()
        except _DECODE_ERRORS as error:
            raise InvalidImage(f"{source}: image truncated or corrupt ({kind}: {error})") from None
        return _to_rgb(image, source, kind)


def read_image(path: str | Path) -> NDArray[np.uint8]:
    """Read and decode an image file; see `decode_image` for what is accepted.

    Args:
        path: The file to read; it is the source named in error messages.

    Returns:
        An (H, W, 3) uint8 RGB array.

    Raises:
        InvalidImage: The file cannot be read, or its content is not usable imagery.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise InvalidImage(f"{path}: cannot read ({error.strerror or error})") from None
    return decode_image(data, str(path))


# zlib level 1: a 1024-px tile takes 0.075 s of CPU to write instead of 0.42 s at Pillow's
# default 6, for a file 13 % larger (measured); reading is as fast either way.
PNG_COMPRESS_LEVEL = 1


def encode_png(image: NDArray[np.uint8], compress_level: int = PNG_COMPRESS_LEVEL) -> bytes:
    """Encode an RGB (or single-band) uint8 array as PNG (lossless at any level).

    Args:
        image: An (H, W, 3) or (H, W) uint8 array.
        compress_level: zlib level, 0-9.

    Returns:
        The PNG file's bytes.

    Raises:
        ValueError: The array is not uint8, or not (H, W) / (H, W, 3).
    """
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise ValueError(f"encode_png needs uint8, got {array.dtype}")
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)):
        raise ValueError(f"encode_png needs an (H, W) or (H, W, 3) array, got {array.shape}")
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(
        buffer, format="PNG", compress_level=compress_level
    )
    return buffer.getvalue()


# A stored scan tile: GeoTIFF, Zstandard level 1 with horizontal differencing, 256-px blocks.
# Measured on a 1024-px tile: written in 35 ms and read in 13 ms of CPU, 1.26 MB; a PNG at zlib
# level 1 took 116 ms and 57 ms for 1.33 MB, and a tile is written once and read by two stages.
TILE_TIFF_OPTIONS: dict[str, object] = {
    "compress": "zstd",
    "zstd_level": 1,
    "predictor": 2,
    "interleave": "pixel",
    "tiled": True,
    "blockxsize": 256,
    "blockysize": 256,
}


def encode_tile(image: NDArray[np.uint8], bounds: tuple[float, float, float, float]) -> bytes:
    """Encode a scan tile as a lossless GeoTIFF, georeferenced in web mercator.

    Args:
        image: (H, W, 3) uint8 RGB.
        bounds: (west, south, east, north) in web-mercator metres (EPSG:3857): the tile's
            extent (`geo.tiles.Tile.xy_bounds`).

    Returns:
        The file's bytes (any TIFF reader decodes them: Pillow, GDAL, QGIS).

    Raises:
        ValueError: The array is not (H, W, 3) uint8, or is empty.
    """
    # rasterio loads GDAL: imported when a tile is written, not by every user of this module.
    import rasterio
    from rasterio.io import MemoryFile

    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3 or array.size == 0:
        raise ValueError(
            f"encode_tile needs an (H, W, 3) uint8 array, got {array.dtype} {array.shape}"
        )
    height, width = array.shape[:2]
    west, south, east, north = bounds
    transform = rasterio.Affine(
        (east - west) / width, 0.0, west, 0.0, (south - north) / height, north
    )
    with MemoryFile() as memory:
        with memory.open(
            driver="GTiff",
            width=width,
            height=height,
            count=3,
            dtype="uint8",
            photometric="RGB",
            crs=rasterio.CRS.from_epsg(3857),
            transform=transform,
            **TILE_TIFF_OPTIONS,
        ) as dataset:
            dataset.write(np.moveaxis(array, 2, 0))
        return bytes(memory.read())


def _to_rgb(image: Image.Image, source: str, kind: str) -> NDArray[np.uint8]:
    mode = image.mode
    if mode in _GRAYSCALE_MODES:
        raise InvalidImage(f"{source}: expected RGB imagery, got grayscale ({kind} mode {mode})")
    if mode == "P" or mode == "PA":
        # A palette entry or chunk may mark colours transparent: decide on the expanded alpha.
        transparent = mode == "PA" or "transparency" in image.info
        image = image.convert("RGBA" if transparent else "RGB")
        mode = image.mode
    if mode in ("RGBA", "RGBa"):
        rgba = np.asarray(image.convert("RGBA") if mode == "RGBa" else image)
        see_through = int(np.count_nonzero(rgba[..., 3] != 255))
        if see_through:
            raise InvalidImage(
                f"{source}: {see_through} of {rgba.shape[0] * rgba.shape[1]} pixels are "
                f"transparent (alpha < 255): no imagery there"
            )
        return np.ascontiguousarray(rgba[..., :3])
    if mode in _CONVERTIBLE_MODES:
        image = image.convert("RGB")
        mode = image.mode
    if mode != "RGB":
        raise InvalidImage(f"{source}: unsupported {kind} pixel mode {mode}, expected RGB")
    array = np.array(image)  # a copy the caller owns: Pillow's buffer view is read-only
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise InvalidImage(f"{source}: {kind} decoded to {array.dtype} {array.shape}, not RGB")
    return array


def _sniff(data: bytes) -> str:
    """The format the first bytes announce, for messages about files Pillow could not open."""
    for magic, name in _MAGIC:
        if data.startswith(magic):
            return name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    return "unknown format"

"""Decoding: every kind of bad input ends as InvalidImage naming the source and the problem."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

from amberscan.errors import InvalidImage, InvalidInput, PoisonMessage
from amberscan.geo.tiles import Tile
from amberscan.vision.imageio import decode_image, encode_png, encode_tile, read_image

SOURCE = "tile 18/151234/87211"


def _pillow_bytes(image: Image.Image, fmt: str = "PNG", **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _raw_png(array: np.ndarray, bit_depth: int, colour_type: int) -> bytes:
    """A PNG written without Pillow, so Pillow's reading of it is tested, not its round trip."""
    height, width = array.shape[:2]
    sample = ">u2" if bit_depth == 16 else "u1"
    rows = b"".join(b"\x00" + array[r].astype(sample).tobytes() for r in range(height))
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(rows))
        + _chunk(b"IEND", b"")
    )


def _declared_png(width: int, height: int) -> bytes:
    """A PNG header declaring a huge RGB image, followed by a few bytes of pixel data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(b"\x00" * 1000))
        + _chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def tile_path(shared_data: Path) -> Path:
    return shared_data / "tiles" / "positive1.png"


@pytest.fixture(scope="module")
def tile_png(tile_path: Path) -> bytes:
    return tile_path.read_bytes()


@pytest.fixture(scope="module")
def tile_rgb(tile_path: Path) -> np.ndarray:
    with Image.open(tile_path) as image:
        return np.array(image.convert("RGB"))


def _rgb(height: int = 40, width: int = 50, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _refused(data: bytes, *words: str, **kwargs: object) -> str:
    with pytest.raises(InvalidImage) as caught:
        decode_image(data, SOURCE, **kwargs)  # type: ignore[arg-type]
    message = str(caught.value)
    assert message.startswith(f"{SOURCE}: "), message
    for word in words:
        assert word in message, message
    return message


# --- good input ----------------------------------------------------------------------------


def test_real_tile_decodes_to_its_rgb_pixels(tile_png: bytes, tile_rgb: np.ndarray) -> None:
    image = decode_image(tile_png, SOURCE)
    assert image.dtype == np.uint8 and image.shape == (975, 998, 3)
    assert image.flags.c_contiguous and image.flags.writeable
    np.testing.assert_array_equal(image, tile_rgb)


def test_read_image_reads_a_file(tile_path: Path, tile_rgb: np.ndarray) -> None:
    np.testing.assert_array_equal(read_image(tile_path), tile_rgb)
    np.testing.assert_array_equal(read_image(str(tile_path)), tile_rgb)


def test_read_image_names_a_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.png"
    with pytest.raises(InvalidImage, match=f"^{missing}: cannot read"):
        read_image(missing)


def test_errors_are_the_domain_s_not_the_stream_s() -> None:
    # The runner decides a bad image is poison; the decoder only says it is invalid input.
    assert issubclass(InvalidImage, InvalidInput) and not issubclass(InvalidImage, PoisonMessage)


@pytest.mark.parametrize("fmt", ["PNG", "TIFF", "BMP", "WEBP"])
def test_lossless_formats_round_trip(fmt: str) -> None:
    rgb = _rgb()
    params = {"lossless": True} if fmt == "WEBP" else {}
    decoded = decode_image(_pillow_bytes(Image.fromarray(rgb), fmt, **params), SOURCE)
    np.testing.assert_array_equal(decoded, rgb)


def test_jpeg_decodes_close_to_the_original(tile_rgb: np.ndarray) -> None:
    rgb = tile_rgb[:200, :300]
    decoded = decode_image(_pillow_bytes(Image.fromarray(rgb), "JPEG", quality=95), SOURCE)
    assert decoded.shape == rgb.shape
    assert np.abs(decoded.astype(int) - rgb).mean() < 3


def test_encode_png_round_trips() -> None:
    rgb = _rgb(33, 47)
    np.testing.assert_array_equal(decode_image(encode_png(rgb), SOURCE), rgb)


@pytest.mark.parametrize(
    "bad",
    [np.zeros((4, 4, 3), np.float32), np.zeros((4, 4, 4), np.uint8), np.zeros(4, np.uint8)],
)
def test_encode_png_refuses_what_is_not_an_rgb_array(bad: np.ndarray) -> None:
    with pytest.raises(ValueError):
        encode_png(bad)


# --- empty, not an image, truncated, corrupt --------------------------------------------------


def test_a_stored_tile_is_a_lossless_georeferenced_tiff(tile_rgb: np.ndarray) -> None:
    import rasterio
    from rasterio.io import MemoryFile

    tile = np.ascontiguousarray(
        np.pad(tile_rgb, ((0, 1024 - tile_rgb.shape[0]), (0, 1024 - tile_rgb.shape[1]), (0, 0)))
    )
    bounds = Tile(37640, 21610, 16).xy_bounds()
    data = encode_tile(tile, bounds)
    assert data[:4] == b"II*\x00"
    np.testing.assert_array_equal(decode_image(data, "tile"), tile)
    with MemoryFile(data) as memory, memory.open() as dataset:
        assert dataset.crs == rasterio.CRS.from_epsg(3857)
        assert dataset.bounds == pytest.approx(bounds)
        assert dataset.compression.name.lower() == "zstd"
        np.testing.assert_array_equal(np.moveaxis(dataset.read(), 0, 2), tile)


def test_a_tile_of_any_size_round_trips(tile_rgb: np.ndarray) -> None:
    # 999 x 974 px, as a raster source's tile may be: its last blocks are partly padding.
    data = encode_tile(tile_rgb, (0.0, 0.0, 999.0, 974.0))
    np.testing.assert_array_equal(decode_image(data, "tile"), tile_rgb)


@pytest.mark.parametrize(
    "bad",
    [np.zeros((4, 4), np.uint8), np.zeros((4, 4, 3), np.float32), np.zeros((0, 4, 3), np.uint8)],
)
def test_encode_tile_refuses_what_is_not_an_rgb_array(bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="encode_tile needs"):
        encode_tile(bad, (0.0, 0.0, 1.0, 1.0))


def test_empty_bytes() -> None:
    _refused(b"", "empty input")


@pytest.mark.parametrize(
    "data",
    [b"hello, world", b"<html><body>503 Service Unavailable</body></html>", bytes(range(256))],
)
def test_not_an_image(data: bytes) -> None:
    _refused(data, "not an image")


def test_formats_that_run_external_programs_are_refused() -> None:
    # Pillow would hand EPS to Ghostscript; tile providers never serve it.
    eps = _pillow_bytes(Image.fromarray(_rgb()), "EPS")
    _refused(eps, "not an image in an accepted format")


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.999])
def test_truncated_real_png(tile_png: bytes, keep: float) -> None:
    cut = tile_png[: int(len(tile_png) * keep)]
    _refused(cut, "image truncated or corrupt (PNG:")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_png_cut_inside_its_header(tile_png: bytes) -> None:
    _refused(tile_png[:20], "image truncated or corrupt (PNG:")


def test_truncated_jpeg(tile_rgb: np.ndarray) -> None:
    jpeg = _pillow_bytes(Image.fromarray(tile_rgb), "JPEG")
    _refused(jpeg[: len(jpeg) // 2], "image truncated or corrupt (JPEG:")


def test_png_with_a_corrupt_chunk(tile_png: bytes) -> None:
    data = bytearray(tile_png)
    data[len(data) // 2] ^= 0xFF  # inside the pixel data: a CRC or inflate error
    _refused(bytes(data), "image truncated or corrupt (PNG:")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), fmt=st.sampled_from(["PNG", "JPEG", "TIFF", "GIF", "BMP", "WEBP"]))
def test_any_damage_gives_an_image_or_invalid_image(data: st.DataObject, fmt: str) -> None:
    """Fuzz: flipped, cut and inserted bytes never escape as a library's exception."""
    original = bytearray(_pillow_bytes(Image.fromarray(_rgb(36, 40, seed=1)), fmt))
    damaged = bytearray(original)
    for _ in range(data.draw(st.integers(1, 4))):
        action = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        position = data.draw(st.integers(0, max(0, len(damaged) - 1)))
        if action == "flip" and damaged:
            damaged[position] ^= data.draw(st.integers(1, 255))
        elif action == "cut":
            del damaged[position:]
        else:
            damaged[position:position] = data.draw(st.binary(min_size=1, max_size=8))
    try:
        image = decode_image(bytes(damaged), SOURCE)
    except InvalidImage as error:
        assert str(error).startswith(f"{SOURCE}: ")
    else:
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3


# --- size limits ---------------------------------------------------------------------------------


def test_declared_size_above_the_limit_is_refused_before_decoding() -> None:
    # 8000 x 8000 = 64 Mpx: over our 40 Mpx, under Pillow's own limit; the data is 1 kB.
    _refused(_declared_png(8000, 8000), "declares 8000x8000", "decompression bomb")


def test_pillows_decompression_bomb_error_becomes_invalid_image() -> None:
    # 20000 x 20000 = 400 Mpx: Pillow refuses it while opening.
    _refused(_declared_png(20000, 20000), "decompression bomb")


def test_between_pillows_warning_and_error_limits_is_refused() -> None:
    # Pillow warns while opening (100 Mpx > its 89 Mpx) and we then refuse it.
    with pytest.warns(Image.DecompressionBombWarning):
        _refused(_declared_png(10000, 10000), "declares 10000x10000")


def test_a_tiny_compressed_but_large_png_is_refused() -> None:
    # A real, complete PNG of 7000 x 7000 black pixels compresses to about 150 kB.
    zeros = Image.new("RGB", (7000, 7000))
    data = _pillow_bytes(zeros, "PNG", compress_level=9)
    assert len(data) < 1_000_000
    _refused(data, "declares 7000x7000", max_pixels=40_000_000)


def test_max_pixels_is_the_callers_limit() -> None:
    png = encode_png(_rgb(100, 100))
    _refused(png, "10000 pixels", "limit of 5000", max_pixels=5000)
    assert decode_image(png, SOURCE, max_pixels=10_000).shape == (100, 100, 3)


@pytest.mark.parametrize("shape", [(31, 100), (100, 31), (1, 1)])
def test_too_small(shape: tuple[int, int]) -> None:
    _refused(encode_png(_rgb(*shape)), "smaller than 32 px")


def test_min_side_is_the_callers_limit() -> None:
    assert decode_image(encode_png(_rgb(1, 1)), SOURCE, min_side=1).shape == (1, 1, 3)


# --- modes -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "fmt"), [("L", "PNG"), ("1", "PNG"), ("I", "TIFF"), ("F", "TIFF"), ("LA", "PNG")]
)
def test_grayscale_is_refused(mode: str, fmt: str) -> None:
    gray = Image.fromarray(_rgb()).convert(mode)
    message = _refused(_pillow_bytes(gray, fmt), "expected RGB imagery, got grayscale")
    assert f"mode {mode}" in message


def test_sixteen_bit_grayscale_is_refused() -> None:
    gray16 = np.random.default_rng(2).integers(0, 65536, (40, 50), dtype=np.uint16)
    _refused(_raw_png(gray16, 16, 0), "got grayscale")


def test_sixteen_bit_rgb_keeps_the_top_byte() -> None:
    rgb16 = np.random.default_rng(3).integers(0, 65536, (40, 50, 3), dtype=np.uint16)
    decoded = decode_image(_raw_png(rgb16, 16, 2), SOURCE)
    np.testing.assert_array_equal(decoded, (rgb16 >> 8).astype(np.uint8))


def test_sixteen_bit_opaque_rgba_keeps_the_top_byte_of_rgb() -> None:
    rgba16 = np.random.default_rng(4).integers(0, 65536, (40, 50, 4), dtype=np.uint16)
    rgba16[..., 3] = 65535
    decoded = decode_image(_raw_png(rgba16, 16, 6), SOURCE)
    np.testing.assert_array_equal(decoded, (rgba16[..., :3] >> 8).astype(np.uint8))


def test_opaque_rgba_drops_alpha() -> None:
    rgb = _rgb()
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    np.testing.assert_array_equal(decode_image(encode_rgba(rgba), SOURCE), rgb)


@pytest.mark.parametrize("alpha", [0, 128, 254])
def test_any_transparent_pixel_is_refused(alpha: int) -> None:
    rgba = np.dstack([_rgb(), np.full((40, 50), 255, np.uint8)])
    rgba[7, 9, 3] = alpha
    _refused(encode_rgba(rgba), "1 of 2000 pixels are transparent", "no imagery")


def encode_rgba(rgba: np.ndarray) -> bytes:
    return _pillow_bytes(Image.fromarray(rgba, "RGBA"))


def test_palette_becomes_rgb() -> None:
    rgb = _rgb()
    palette = Image.fromarray(rgb).quantize(colors=64)
    decoded = decode_image(_pillow_bytes(palette), SOURCE)
    np.testing.assert_array_equal(decoded, np.array(palette.convert("RGB")))


def test_palette_with_a_used_transparent_entry_is_refused() -> None:
    palette = Image.fromarray(_rgb()).quantize(colors=64)
    index = int(np.array(palette)[0, 0])
    _refused(_pillow_bytes(palette, transparency=index), "transparent")


def test_palette_with_an_unused_transparent_entry_is_accepted() -> None:
    palette = Image.fromarray(_rgb()).quantize(colors=64)  # entries 64.. are unused
    decoded = decode_image(_pillow_bytes(palette, transparency=200), SOURCE)
    np.testing.assert_array_equal(decoded, np.array(palette.convert("RGB")))


def test_cmyk_becomes_rgb() -> None:
    rgb = _rgb()
    cmyk = Image.fromarray(rgb).convert("CMYK")
    np.testing.assert_array_equal(decode_image(_pillow_bytes(cmyk, "TIFF"), SOURCE), rgb)
    jpeg = decode_image(_pillow_bytes(cmyk, "JPEG", quality=95), SOURCE)
    assert jpeg.shape == rgb.shape and jpeg.dtype == np.uint8

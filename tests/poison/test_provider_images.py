"""Poison from the imagery provider, through the running pipeline (#10, "What to build" 3).

One scan of the 8-tile demo area in which the provider serves, for one zoom-18 child of each of
six scan tiles: nothing (a zero-byte body), a truncated PNG, a 16-bit grayscale PNG, a
decompression bomb (a PNG header declaring 20000×20000 px), an 8-bit grayscale PNG and a palette
PNG with a transparent colour. Each of those tiles must end failed with a reason naming the
provider tile and the problem, and a dead letter from the tiler naming the tile, the scan and
the origin; a 16-bit RGB PNG and an opaque palette PNG are usable imagery (scaled, expanded) and
their tiles end done; the stages keep running.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from amberscan.common import topics
from amberscan.common.settings import Settings, replace
from amberscan.tiler import demo
from tests.pipeline.test_faults import tile_server
from tests.poison.conftest import running
from tests.vision.test_imageio import _declared_png, _raw_png

pytestmark = pytest.mark.stack


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _rgb(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def _transparent_palette(png: bytes) -> bytes:
    palette = Image.open(io.BytesIO(png)).convert("RGB").quantize(64)
    buffer = io.BytesIO()
    palette.save(buffer, format="PNG", transparency=0)
    return buffer.getvalue()


# (what the provider serves, given the real PNG of that child; the reason expected, or "" for
# usable imagery)
CASES: list[tuple[str, Callable[[bytes], bytes], str]] = [
    ("zero-byte", lambda png: b"", "empty input (0 bytes)"),
    ("truncated", lambda png: png[: len(png) // 2], "truncated or corrupt"),
    (
        "16-bit grayscale",
        lambda png: _raw_png(_rgb(png)[..., 0].astype(np.uint16) * 257, 16, 0),
        "got grayscale",
    ),
    ("decompression bomb", lambda png: _declared_png(20000, 20000), "decompression bomb"),
    ("grayscale", lambda png: _png(Image.open(io.BytesIO(png)).convert("L")), "got grayscale"),
    ("palette with transparency", _transparent_palette, "transparent"),
    ("16-bit RGB", lambda png: _raw_png(_rgb(png).astype(np.uint16) * 257, 16, 2), ""),
    (
        "palette",
        lambda png: _png(Image.open(io.BytesIO(png)).convert("RGB").quantize(256)),
        "",
    ),
]


async def test_bad_provider_images_fail_only_their_tiles(
    stack_settings: Settings, shared_data: Path
) -> None:
    tiles = demo.demo_tiles()
    assert len(tiles) == len(CASES)
    server = demo.DemoTileServer(shared_data / "tiles")
    # One zoom-18 child of each scan tile is replaced, in its scan tile's place.
    victims = {}
    for tile, (name, make, reason) in zip(tiles, CASES, strict=True):
        child = (demo.DEMO_FETCH_ZOOM, tile.x * 4 + 1, tile.y * 4 + 2)
        real = server.png(*child)
        assert real is not None
        victims[child] = (tile, name, make(real), reason)

    def corrupt(z: int, x: int, y: int) -> bytes | None:
        victim = victims.get((z, x, y))
        return victim[2] if victim else None

    async with tile_server(shared_data, corrupt) as url:
        settings = replace(stack_settings, imagery={"demo_tiles_url": url})
        async with running(settings) as pipeline:
            request = demo.demo_scan_request()
            summary = await pipeline.scan(request)
            bad = [v for v in victims.values() if v[3]]
            letters = await pipeline.letters(expect=len(bad))
            pipeline.check_alive()

    assert summary.complete and summary.error == "", summary
    failures = {f["tile_id"]: f["reason"] for f in summary.failures}
    by_tile = {letter.tile_id: letter for letter in letters}
    origin = topics.topic_name(settings.kafka.topic_prefix, topics.SCAN_REQUESTS)
    for child, (tile, name, _, reason) in victims.items():
        where = "/".join(map(str, child))
        if not reason:
            assert tile.quadkey not in failures, f"{name}: {failures.get(tile.quadkey)}"
            continue
        assert tile.quadkey in failures, f"{name}: tile {tile.quadkey} did not fail"
        assert where in failures[tile.quadkey] and reason in failures[tile.quadkey], (
            name,
            failures[tile.quadkey],
        )
        letter = by_tile[tile.quadkey]
        assert (letter.service, letter.scan_id) == ("tiler", request.scan_id), name
        assert letter.origin_topic == origin and reason in letter.reason, (name, letter.reason)
    assert summary.failed == len(bad) and summary.done == len(CASES) - len(bad), summary

"""The map's imagery, permalink, before/after swipe and write controls in a real headless
Chromium (#27), against the real stack. Screenshots land in artifacts/screenshots/."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from amberscan import keys
from amberscan.common.db import Database
from amberscan.common.settings import Settings, replace
from amberscan.geo.tiles import Tile
from amberscan.v1 import messages_pb2 as pb
from amberscan.vision.imageio import encode_tile
from amberscan.web.app import make_app
from tests.streams import served
from tests.web.conftest import TILES, TOKEN, Seeded
from tests.web.routes.test_changes import upsert
from tests.web.routes.test_imagery import resized, store_geotiffs
from tests.web.test_browser import SCREENSHOTS, _click_at, _idle, _ready, _wait, browser

pytestmark = pytest.mark.stack
__all__ = ["browser"]  # the fixture, shared with test_browser
POSITIVE1 = TILES["positive1"][0]


def _lonlat(tile: Tile) -> tuple[float, float]:
    return tile.center()


def _shot(driver: Any, name: str) -> np.ndarray:
    """The page as RGB pixels (and saved for a person to look at)."""
    png = driver.get_screenshot_as_png()
    (SCREENSHOTS / name).write_bytes(png)
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


def _tile_box(driver: Any, tile: Tile) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) page pixels where the main map draws `tile`."""
    west, south, east, north = tile.bounds()
    return tuple(
        round(v)
        for v in driver.execute_script(
            "const m = window.amberMap, r = m.getCanvas().getBoundingClientRect();"
            "const a = m.project([arguments[0], arguments[3]]), b = m.project([arguments[2], arguments[1]]);"
            "return [r.left + a.x, r.top + a.y, r.left + b.x, r.top + b.y];",
            west,
            south,
            east,
            north,
        )
    )


def _difference(shot: np.ndarray, box: tuple[int, int, int, int], image: np.ndarray) -> float:
    """Mean absolute difference between the screen inside `box` and `image` drawn there, over
    the box's middle (edges blend with the neighbours)."""
    left, top, right, bottom = box
    width, height = right - left, bottom - top
    expected = resized(image, width) if width == height else None
    assert expected is not None, f"tile drawn {width}x{height}"
    m = width // 8
    seen = shot[top + m : bottom - m, left + m : right - m]
    return float(np.abs(seen - expected[m:-m, m:-m]).mean())


def _imagery_requests(driver: Any) -> list[dict[str, Any]]:
    return list(
        driver.execute_script(
            "return performance.getEntriesByType('resource')"
            ".filter((e) => e.name.includes('/tiles/imagery/'))"
            ".map((e) => ({url: e.name, status: e.responseStatus, size: e.encodedBodySize}));"
        )
    )


def imagery_and_permalink(driver: Any, base: str) -> dict[str, Any]:
    from selenium.webdriver.common.by import By

    seen: dict[str, Any] = {}
    lon, lat = _lonlat(POSITIVE1)
    # A permalink: zoom 16 on positive1, the scanned imagery without the detections over it.
    driver.get(f"{base}/?layers=base,scanned#16/{lat:.6f}/{lon:.6f}")
    _ready(driver)
    _idle(driver)
    seen["zoom"] = driver.execute_script("return window.amberMap.getZoom()")
    seen["centre"] = driver.execute_script(
        "const c = window.amberMap.getCenter(); return [c.lng, c.lat]"
    )
    seen["requests"] = _imagery_requests(driver)
    seen["shot"] = _shot(driver, "map-imagery.png")
    seen["box"] = _tile_box(driver, POSITIVE1)

    # Change the view and the controls; the address follows; opened anew, it restores them.
    driver.find_element(By.ID, "layer-detections").click()
    driver.execute_script("document.body.dataset.idle = '0'")
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element(By.ID, "year")).select_by_value("2014")
    _idle(driver)
    driver.execute_script(
        "document.body.dataset.idle = '0'; window.amberMap.jumpTo({center: [arguments[0], arguments[1]], zoom: 15.5})",
        lon + 0.001,
        lat - 0.001,
    )
    _idle(driver)
    _wait(driver, lambda d: "15.50/" in d.current_url)
    seen["url"] = driver.current_url
    driver.get("about:blank")
    driver.get(seen["url"])
    _ready(driver)
    _idle(driver)
    seen["restored"] = driver.execute_script(
        "const m = window.amberMap, c = m.getCenter();"
        "return {zoom: m.getZoom(), centre: [c.lng, c.lat],"
        " year: document.getElementById('year').value,"
        " layers: [...document.querySelectorAll('#layers input:checked')].map((i) => i.value),"
        " detections: document.body.dataset.detections};"
    )
    seen["restored_requests"] = _imagery_requests(driver)
    return seen


async def test_imagery_layer_and_permalink(
    browser, server: str, seeded: Seeded, shared_data: Path
) -> None:  # type: ignore[no-untyped-def]
    stored = await store_geotiffs(seeded, shared_data)
    seen = await asyncio.to_thread(imagery_and_permalink, browser, server)
    lon, lat = _lonlat(POSITIVE1)
    assert seen["zoom"] == pytest.approx(16) and seen["centre"] == pytest.approx(
        [lon, lat], abs=1e-5
    )
    # MapLibre's zoom counts 512-px tiles: at zoom 16 it draws the 256-px tiles of zoom 17, so
    # positive1 is the four of its children.
    wanted = {
        f"/tiles/imagery/17/{2 * POSITIVE1.x + dx}/{2 * POSITIVE1.y + dy}.png"
        for dx in (0, 1)
        for dy in (0, 1)
    }
    loaded = [r for r in seen["requests"] if any(w in r["url"] for w in wanted)]
    assert {w for w in wanted if any(w in r["url"] for r in loaded)} == wanted, seen["requests"]
    assert all(r["status"] == 200 and r["size"] > 1000 for r in loaded), seen["requests"]
    # On screen where the tile is: its own image (not its neighbour's).
    box = seen["box"]
    assert _difference(seen["shot"], box, stored["positive1"]) < 12
    assert _difference(seen["shot"], box, stored["negative1"]) > 20

    restored = seen["restored"]
    assert "year=2014" in seen["url"] and "layers=" not in seen["url"]  # all three: the default
    assert restored["zoom"] == pytest.approx(15.5, abs=0.01)
    assert restored["centre"] == pytest.approx([lon + 0.001, lat - 0.001], abs=1e-5)
    assert restored["year"] == "2014" and restored["layers"] == ["base", "scanned", "detections"]
    assert int(restored["detections"]) >= 1
    # The imagery layer follows the vintage.
    assert any("vintage=2014" in r["url"] for r in seen["restored_requests"])


def swipe(driver: Any, base: str) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    lon, lat = _lonlat(POSITIVE1)
    driver.get(f"{base}/?year=2017&before=2014&swipe=50&layers=scanned#16/{lat:.6f}/{lon:.6f}")
    _ready(driver)
    _idle(driver)
    _wait(driver, lambda d: d.execute_script("return document.body.dataset.compare") == "2014", 60)
    seen["box"] = _tile_box(driver, POSITIVE1)
    seen["divider"] = driver.execute_script(
        "return document.getElementById('swipe-divider').getBoundingClientRect().left"
    )
    seen["half"] = _shot(driver, "map-swipe.png")
    driver.execute_script(
        "const s = document.getElementById('swipe'); s.value = '100';"
        "s.dispatchEvent(new Event('input'));"
    )
    seen["url"] = driver.current_url
    seen["all_before"] = _shot(driver, "map-swipe-before.png")
    return seen


async def test_before_after_swipe(browser, seeded: Seeded, shared_data: Path) -> None:  # type: ignore[no-untyped-def]
    """positive1's place in 2014 and, rescanned, in 2017 (another image): the swipe shows 2014
    left of the divider and 2017 right of it; moved to the right edge, 2014 all over."""
    stored = await store_geotiffs(seeded, shared_data)
    later = stored["negative2"]  # the 2017 image of the place: visibly another
    key = await seeded.store.put(
        encode_tile(later, POSITIVE1.xy_bounds()), keys.TILE_IMAGES, "tif", "image/tiff"
    )
    row = pb.Detection()
    row.CopyFrom(seeded.tiles["positive1"])
    row.imagery_date, row.image_key = "2017-07-01", key
    await upsert(seeded, row)
    async with served(make_app(seeded.settings)) as base:
        seen = await asyncio.to_thread(swipe, browser, base)
    left, top, right, bottom = seen["box"]
    middle = (left + right) // 2
    assert abs(seen["divider"] - middle) <= 2  # the divider halves the map, and the tile
    assert right - left == bottom - top
    width = right - left
    m, half = width // 8, width // 2
    screen = seen["half"]
    before, after = resized(stored["positive1"], width), resized(later, width)
    west_half = screen[top + m : bottom - m, left + m : left + half - 4]
    east_half = screen[top + m : bottom - m, left + half + 4 : right - m]
    assert np.abs(west_half - before[m:-m, m : half - 4]).mean() < 12
    assert np.abs(east_half - after[m:-m, half + 4 : -m]).mean() < 12
    assert np.abs(east_half - before[m:-m, half + 4 : -m]).mean() > 20
    assert "swipe=100" in seen["url"] and "before=2014" in seen["url"]
    whole = seen["all_before"][top + m : bottom - m, left + m : right - m]
    assert np.abs(whole - before[m:-m, m:-m]).mean() < 12


def write_controls(driver: Any, base: str, tile: pb.Detection, token: bool) -> dict[str, Any]:
    from selenium.webdriver.common.by import By

    seen: dict[str, Any] = {}
    page = f"{base}/tile/{tile.tile_id}?imagery_date={tile.imagery_date}&model={tile.models.classifier}"
    driver.get(page)
    driver.execute_script("localStorage.clear()")
    driver.get(page)
    _ready(driver)
    # The page has asked the server whether it takes writes.
    _wait(driver, lambda d: d.execute_script("return document.body.dataset.writable") in ("0", "1"))
    token_field = driver.find_element(By.ID, "token")
    seen["token_field"] = token_field.is_displayed()
    seen["buttons_empty"] = driver.find_element(By.ID, "review-confirmed").is_displayed()
    if token:
        token_field.send_keys(TOKEN)
        _wait(driver, lambda d: d.execute_script("return document.body.dataset.writes") == "1")
    else:
        driver.execute_script("localStorage.setItem('amberscan-token', arguments[0])", TOKEN)
        driver.get(page)
        _ready(driver)
        _wait(driver, lambda d: d.execute_script("return document.body.dataset.writable") == "0")
    seen["buttons_token"] = [
        driver.find_element(By.ID, i).is_displayed()
        for i in ("review-confirmed", "review-rejected", "reject-and-mark", "relabel")
    ]
    # The map's popup, the token remembered from the tile page.
    lon, lat = _lonlat(POSITIVE1)
    driver.get(f"{base}/#16/{lat:.6f}/{lon:.6f}")
    _ready(driver)
    _idle(driver)
    _wait(driver, lambda d: d.execute_script("return document.body.dataset.writable") is not None)
    _click_at(driver, lon, lat)
    _wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, ".maplibregl-popup .review-confirmed"))
    seen["popup_buttons"] = driver.find_element(
        By.CSS_SELECTOR, ".maplibregl-popup .review-confirmed"
    ).is_displayed()
    return seen


async def test_write_controls_need_a_token(browser, server: str, seeded: Seeded) -> None:  # type: ignore[no-untyped-def]
    """With AMBERSCAN_WEB_TOKEN set, the review buttons show once the page has a token; on a
    server without one, never (nor the token field), even with a token remembered."""
    tile = seeded.tiles["positive1"]
    with_token = await asyncio.to_thread(write_controls, browser, server, tile, True)
    assert with_token == {
        "token_field": True,
        "buttons_empty": False,
        "buttons_token": [True, True, True, True],
        "popup_buttons": True,
    }
    async with served(make_app(seeded.settings)) as base:  # no token configured
        without = await asyncio.to_thread(write_controls, browser, base, tile, False)
    assert without == {
        "token_field": False,
        "buttons_empty": False,
        "buttons_token": [False, False, False, False],
        "popup_buttons": False,
    }


def summary_text(driver: Any, base: str) -> str:
    from selenium.webdriver.common.by import By

    driver.get(base + "/")
    _ready(driver)
    return str(driver.find_element(By.ID, "summary").text)


async def test_the_map_summary_matches_a_scan_the_moment_it_ends(  # type: ignore[no-untyped-def]
    browser, stack_settings: Settings, database: Database
) -> None:
    """The map open during a scan (its aggregates refreshed at start, empty, and not again for
    an hour); the scan ends; the page opened then says what the scan's last line says."""
    from amberscan import scanning
    from amberscan.sink.service import write_detection
    from tests.web.routes.test_map_freshness import detection

    settings = replace(stack_settings, web={"map_refresh_s": 3600})
    async with served(make_app(settings)) as base:
        before = await asyncio.to_thread(summary_text, browser, base)
        await database.execute(
            "INSERT INTO scans (scan_id, tiles_expected) VALUES (%s, %s)", "scan-map", len(TILES)
        )
        for name in TILES:
            await write_detection(database, detection(name, "scan-map"))
        ended = await scanning.follow(
            database, "scan-map", len(TILES), timeout_s=10, progress=False, poll_s=0.05
        )
        after = await asyncio.to_thread(summary_text, browser, base)
    assert "tiles scanned 0" in before
    assert ended.complete and (ended.done, ended.flagged) == (4, 2)
    assert f"tiles scanned {ended.done}" in after and f"flagged {ended.flagged}" in after
    assert f"hectares (flagged) {ended.hectares:.2f}" in after

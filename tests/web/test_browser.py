"""The web pages in a real headless Chromium (Debian's chromium + chromium-driver), via Selenium.

Screenshots land in artifacts/screenshots/ for a person to look at.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from amberscan.geo.tiles import Tile
from amberscan.v1 import messages_pb2 as pb
from amberscan.web.app import make_app
from tests.web import chromium
from tests.web.conftest import HOSTILE, TOKEN, Seeded
from tests.web.scan_features import produce_scan_features

pytestmark = pytest.mark.stack
SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"


@pytest.fixture
def browser() -> Iterator[object]:
    profile = tempfile.mkdtemp(prefix="amberscan-chromium-")
    driver = chromium.start(profile)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _wait(driver, condition, timeout: float = 30):  # type: ignore[no-untyped-def]
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(condition)


def _ready(driver) -> None:  # type: ignore[no-untyped-def]
    _wait(driver, lambda d: d.execute_script("return document.body.dataset.ready") == "1")


def _image_loaded(driver, selector: str) -> None:  # type: ignore[no-untyped-def]
    _wait(
        driver,
        lambda d: d.execute_script(
            "const i = document.querySelector(arguments[0]);"
            "return !!i && i.complete && i.naturalWidth > 0;",
            selector,
        ),
    )


def _enter_token(driver) -> None:  # type: ignore[no-untyped-def]
    """Type the token; the page then shows its write controls (#27: hidden without one)."""
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, "token").send_keys(TOKEN)
    _wait(driver, lambda d: d.execute_script("return document.body.dataset.writes") == "1")


# What a test reports when the map never settles: enough to tell a request that never came back
# from a map that loaded and never said so.
MAP_STATE = """
const m = window.amberMap;
return {
  status: document.getElementById("status")?.textContent,
  dataset: {...document.body.dataset},
  selects: [...document.querySelectorAll("select")].map((s) => s.id + "=" + s.value),
  loaded: m && m.loaded(), moving: m && m.isMoving(),
  sources: m && Object.fromEntries(Object.keys(m.getStyle().sources).map((k) => [k, m.isSourceLoaded(k)])),
};
"""


def _idle(driver) -> None:  # type: ignore[no-untyped-def]
    """The map has loaded and drawn every tile in view."""
    from selenium.common.exceptions import TimeoutException

    try:
        _wait(driver, lambda d: d.execute_script("return document.body.dataset.idle") == "1", 60)
    except TimeoutException as e:
        raise TimeoutException(f"the map never settled: {driver.execute_script(MAP_STATE)}") from e


def _view(driver, lon: float, lat: float, zoom: float) -> None:  # type: ignore[no-untyped-def]
    driver.execute_script(
        "document.body.dataset.idle = '0'; window.amberMap.jumpTo({center: [arguments[0], arguments[1]], zoom: arguments[2]})",
        lon,
        lat,
        zoom,
    )
    _idle(driver)


def _count(driver, what: str) -> int:  # type: ignore[no-untyped-def]
    return int(driver.execute_script(f"return document.body.dataset.{what}") or 0)


def _click_at(driver, lon: float, lat: float) -> None:  # type: ignore[no-untyped-def]
    """Click the map canvas where (lon, lat) is drawn."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    canvas = driver.find_element(By.CSS_SELECTOR, "#map canvas")
    x, y, width, height = driver.execute_script(
        "const p = window.amberMap.project([arguments[0], arguments[1]]);"
        "const c = window.amberMap.getCanvas();"
        "return [p.x, p.y, c.clientWidth, c.clientHeight];",
        lon,
        lat,
    )
    ActionChains(driver).move_to_element_with_offset(
        canvas, int(x - width / 2), int(y - height / 2)
    ).click().perform()


def _choose(driver, select_id: str, value: str) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver.execute_script("document.body.dataset.idle = '0'")
    Select(driver.find_element(By.ID, select_id)).select_by_value(value)
    _idle(driver)


def map_and_debugger(driver, base: str, flagged: tuple[float, float]) -> dict[str, object]:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    seen: dict[str, object] = {}
    lon, lat = flagged
    driver.get(base + "/")
    _ready(driver)
    _idle(driver)
    seen["notice"] = driver.find_element(By.ID, "demo-notice").text
    seen["summary"] = driver.find_element(By.ID, "summary").text
    # The whole region: zoomed out, aggregated cells.
    _view(driver, lon, lat, 8)
    seen["region_cells"] = _count(driver, "cells")
    seen["region_detections"] = _count(driver, "detections")
    driver.save_screenshot(str(SCREENSHOTS / "map-region.png"))
    # Zoom to one tile: its polygon and its damaged areas.
    _view(driver, lon, lat, 16)
    seen["tile_detections"] = _count(driver, "detections")
    seen["tile_damage"] = _count(driver, "damage")
    driver.save_screenshot(str(SCREENSHOTS / "map-tile.png"))
    # Four tiles in view; a filter by vintage keeps those of 2014.
    _view(driver, lon, lat, 14)
    seen["polygons"] = _count(driver, "detections")
    _choose(driver, "year", "2014")
    seen["polygons_2014"] = _count(driver, "detections")
    _choose(driver, "year", "")

    # Click the flagged tile, then the popup's link to the tile debugger.
    _view(driver, lon, lat, 16)
    _click_at(driver, lon, lat)
    link = _wait(
        driver, lambda d: d.find_element(By.CSS_SELECTOR, ".maplibregl-popup a.open-debugger")
    )
    seen["popup"] = _wait(
        driver, lambda d: d.find_element(By.CSS_SELECTOR, ".maplibregl-popup-content").text
    )
    driver.save_screenshot(str(SCREENSHOTS / "map-popup.png"))
    link.click()
    _wait(driver, lambda d: "/tile/" in d.current_url)
    _ready(driver)
    _image_loaded(driver, "#overlay")
    seen["debugger_url"] = driver.current_url
    seen["facts"] = driver.find_element(By.ID, "facts").text
    seen["tile_heading"] = driver.find_element(By.ID, "title").text
    seen["injected"] = len(driver.find_elements(By.ID, "xss")) + (driver.title == "xss")

    # Select a superpixel by clicking the overlay; relabel it; reject the detection, marking
    # its positive superpixels not mining; the history lists each action.
    from selenium.webdriver.common.action_chains import ActionChains

    _enter_token(driver)
    driver.find_element(By.ID, "reviewer").clear()
    driver.find_element(By.ID, "reviewer").send_keys("ana")
    image = driver.find_element(By.ID, "overlay")
    ActionChains(driver).move_to_element_with_offset(image, 40, 40).click().perform()
    _wait(driver, lambda d: "superpixel" in d.find_element(By.ID, "selection").text)
    seen["selection"] = driver.find_element(By.ID, "selection").text
    driver.find_element(By.ID, "class-not_mining").click()
    driver.find_element(By.ID, "relabel").click()
    _wait(driver, lambda d: "not mining" in d.find_element(By.ID, "status").text)
    driver.find_element(By.ID, "review-confirmed").click()
    _wait(driver, lambda d: "review saved: confirmed" in d.find_element(By.ID, "status").text)
    driver.find_element(By.ID, "reject-and-mark").click()
    _wait(driver, lambda d: "marked not mining" in d.find_element(By.ID, "status").text)
    seen["marked_status"] = driver.find_element(By.ID, "status").text
    _wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#history tbody tr")) >= 3)
    _image_loaded(driver, "#overlay")
    seen["history"] = [
        row.get_attribute("data-action")
        for row in driver.find_elements(By.CSS_SELECTOR, "#history tbody tr")
    ]
    seen["history_text"] = driver.find_element(By.ID, "history").text
    driver.execute_script("window.scrollTo(0, 0)")
    driver.save_screenshot(str(SCREENSHOTS / "tile-debugger.png"))

    # The map after a reload shows the review.
    driver.get(base + "/")
    _ready(driver)
    _view(driver, lon, lat, 14)
    _choose(driver, "review", "rejected")
    seen["rejected_polygons"] = _count(driver, "detections")
    seen["summary_after"] = driver.find_element(By.ID, "summary").text
    driver.save_screenshot(str(SCREENSHOTS / "map-after-review.png"))
    return seen


def audit(driver, base: str) -> dict[str, object]:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    seen: dict[str, object] = {}
    driver.get(base + "/audit")
    _ready(driver)
    _enter_token(driver)
    n = driver.find_element(By.ID, "n")
    n.clear()
    n.send_keys("10")
    driver.find_element(By.ID, "draw").click()
    _wait(driver, lambda d: "/audit/" in d.current_url)
    _ready(driver)
    _image_loaded(driver, "#tile")
    seen["before"] = driver.find_element(By.ID, "estimate").text
    seen["sample_rows"] = len(driver.find_elements(By.CSS_SELECTOR, "#sample tbody tr"))
    for button in ("confirm", "reject"):
        previous = driver.find_element(By.ID, "estimate").text
        driver.find_element(By.ID, button).click()
        _wait(driver, lambda d, p=previous: d.find_element(By.ID, "estimate").text != p)
        _ready(driver)
        seen[f"after_{button}"] = driver.find_element(By.ID, "estimate").text
    _image_loaded(driver, "#tile")
    driver.save_screenshot(str(SCREENSHOTS / "audit.png"))
    return seen


def change_view(driver, base: str, centre: tuple[float, float]) -> dict[str, object]:  # type: ignore[no-untyped-def]
    seen: dict[str, object] = {}
    driver.get(base + "/")
    _ready(driver)
    _view(driver, *centre, 14)
    _choose(driver, "year", "2017")
    seen["vintage"] = _count(driver, "detections")
    _choose(driver, "change", "new")
    seen["new"] = _count(driver, "detections")
    seen["new_tiles"] = driver.execute_script(
        "return [...new Set(window.amberMap.queryRenderedFeatures({layers: ['detections']})"
        ".map(f => f.properties.tile_id))]"
    )
    driver.save_screenshot(str(SCREENSHOTS / "map-change.png"))
    _choose(driver, "change", "gone")
    seen["gone"] = _count(driver, "detections")
    seen["by_year"] = driver.find_element("id", "by-year").text
    # The exclusion area drawn, the tile inside it marked excluded, the summary by reason.
    _choose(driver, "change", "")
    _choose(driver, "year", "")
    seen["excluded_tiles"] = driver.execute_script(
        "return [...new Set(window.amberMap.queryRenderedFeatures({layers: ['detections']})"
        ".filter(f => f.properties.excluded).map(f => f.properties.tile_id))]"
    )
    seen["exclusion_outlines"] = driver.execute_script(
        "return window.amberMap.queryRenderedFeatures({layers: ['exclusions']}).length"
    )
    seen["summary"] = driver.find_element("id", "summary").text
    driver.save_screenshot(str(SCREENSHOTS / "map-exclusion.png"))
    return seen


def explore_and_label(driver, base: str, tile: str, query: str) -> dict[str, object]:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    seen: dict[str, object] = {}
    driver.get(base + "/explore")
    _ready(driver)
    seen["about"] = driver.find_element(By.ID, "about").text
    points = driver.find_elements(By.CSS_SELECTOR, "#plot .pt")
    seen["points"] = len(points)
    point = driver.find_elements(By.CSS_SELECTOR, "#plot a.pt")[0]
    ActionChains(driver).move_to_element(point).perform()
    tip = _wait(driver, lambda d: d.find_element(By.ID, "tooltip"))
    _wait(driver, lambda d: "hidden" not in tip.get_attribute("class"))
    _image_loaded(driver, "#tooltip img")
    seen["tooltip"] = tip.text
    driver.save_screenshot(str(SCREENSHOTS / "explore.png"))
    driver.find_element(By.ID, "colour").send_keys("class")
    seen["class_legend"] = driver.find_element(By.ID, "legend").text
    point = driver.find_elements(By.CSS_SELECTOR, "#plot a.pt")[0]
    point.click()
    _wait(driver, lambda d: "/tile/" in d.current_url)
    _ready(driver)
    seen["explore_click_url"] = driver.current_url

    driver.get(f"{base}/label/{tile}?{query}")
    _ready(driver)
    seen["label_heading"] = driver.find_element(By.ID, "title").text
    seen["label_other_view"] = driver.find_element(By.ID, "other-view").get_attribute("href")
    _image_loaded(driver, "#overlay")
    _enter_token(driver)
    image = driver.find_element(By.ID, "overlay")
    for dx, dy in ((-200, -150), (150, 100)):
        _image_loaded(driver, "#overlay")
        driver.execute_script("document.getElementById('status').textContent = ''")
        ActionChains(driver).move_to_element_with_offset(image, dx, dy).click().perform()
        _wait(driver, lambda d: "mining" in d.find_element(By.ID, "status").text)
        _ready(driver)
    _image_loaded(driver, "#overlay")
    seen["labelled"] = driver.execute_script(
        "return [...document.querySelectorAll('#superpixels tbody tr')]"
        ".filter(r => r.children[3].textContent === 'mining').map(r => +r.dataset.segment)"
    )
    driver.execute_script("window.scrollTo(0, 0)")
    driver.save_screenshot(str(SCREENSHOTS / "label.png"))
    return seen


async def test_map_debugger_and_review(browser, server: str, seeded: Seeded) -> None:  # type: ignore[no-untyped-def]
    flagged = seeded.tiles["positive1"]
    centre = Tile(flagged.tile.x, flagged.tile.y, flagged.tile.z).center()
    seen = await asyncio.to_thread(map_and_debugger, browser, server, centre)
    assert "DEMO" in str(seen["notice"])
    assert "tiles scanned 4" in str(seen["summary"])
    assert seen["region_cells"] >= 1 and seen["region_detections"] == 0
    assert seen["tile_detections"] >= 1 and seen["tile_damage"] >= 1
    assert seen["polygons"] == 4 and seen["polygons_2014"] == 2
    assert "DEMO" in str(seen["popup"]) and "FLAGGED" in str(seen["popup"])
    assert flagged.tile_id in str(seen["popup"])
    assert f"/tile/{flagged.tile_id}" in str(seen["debugger_url"])
    assert seen["tile_heading"] == "Tile debugger"
    assert "FLAGGED" in str(seen["facts"]) and "efficientnet_lite0@1" in str(seen["facts"])
    assert HOSTILE in str(seen["facts"]) and seen["injected"] == 0
    history = seen["history"]
    assert isinstance(history, list)
    assert history[:3] == ["not_mining", "confirmed", "rejected"]
    assert history.count("not_mining") == 1 + flagged.positives  # the relabel, then the marks
    assert "ana" in str(seen["history_text"])
    assert seen["rejected_polygons"] == 1
    assert "rejected 1" in str(seen["summary_after"])


async def test_audit_page_steps_through_a_sample(browser, server: str, seeded: Seeded) -> None:  # type: ignore[no-untyped-def]
    seen = await asyncio.to_thread(audit, browser, server)
    assert seen["sample_rows"] == 2  # the two flagged tiles
    assert "no tile judged yet (2 sampled)" in str(seen["before"])
    assert "precision 1.000" in str(seen["after_confirm"]) and "1 of 2 judged" in str(
        seen["after_confirm"]
    )
    assert "precision 0.500 (95 % CI 0.095–0.905), 2 of 2 judged" in str(seen["after_reject"])


async def test_change_view(browser, seeded: Seeded) -> None:  # type: ignore[no-untyped-def]
    from amberscan.web import exclusion_queries, params
    from tests.streams import served
    from tests.web.routes.test_changes import VINTAGE_2017, upsert
    from tests.web.routes.test_exclusions import around

    for name, flagged in VINTAGE_2017.items():
        row = pb.Detection()
        row.CopyFrom(seeded.tiles[name])
        row.imagery_date = "2017-07-01"
        row.flagged, row.positives, row.hectares = flagged, 5 if flagged else 1, 2.5 * flagged
        await upsert(seeded, row)
    first = seeded.tiles["positive1"]
    centre = Tile(first.tile.x, first.tile.y, first.tile.z).center()
    quarry = seeded.tiles["positive2"]
    area = around(Tile(quarry.tile.x, quarry.tile.y, quarry.tile.z), "licensed quarry")
    await exclusion_queries.add(seeded.db, params.exclusion_areas(area), "test")
    async with served(make_app(seeded.settings)) as base:
        seen = await asyncio.to_thread(change_view, browser, base, centre)
    assert seen["vintage"] == 4
    assert seen["new"] == 1 and seen["new_tiles"] == [seeded.tiles["negative1"].tile_id]
    assert seen["gone"] == 1  # positive1: flagged in 2014, not in 2017
    # 2017: negative1 flagged (new damage); positive2 flagged but in the exclusion area.
    assert "2017 4 1 2.50 2.50" in str(seen["by_year"])
    assert seen["excluded_tiles"] == [quarry.tile_id] and seen["exclusion_outlines"] >= 1
    assert "licensed quarry" in str(seen["summary"])


async def test_explore_tooltip_and_labelling(browser, server: str, seeded: Seeded) -> None:  # type: ignore[no-untyped-def]
    target = seeded.tiles["negative1"]
    query = f"imagery_date={target.imagery_date}&model={target.models.classifier}"
    await produce_scan_features(seeded)  # 3 superpixels of each of the 4 tiles
    seen = await asyncio.to_thread(explore_and_label, browser, server, target.tile_id, query)
    assert seen["points"] == 12
    assert "PCA of 12 superpixel feature vectors from backbone" in str(seen["about"])
    assert "scan scan-test" in str(seen["about"])
    assert "tile " in str(seen["tooltip"]) and "DEMO" in str(seen["tooltip"])
    assert "score " in str(seen["tooltip"])
    assert "unlabelled: 12" in str(seen["class_legend"])
    assert "/tile/" in str(seen["explore_click_url"])
    assert seen["label_heading"] == "Label superpixels"
    assert "/tile/" in str(seen["label_other_view"])
    labelled = seen["labelled"]
    assert isinstance(labelled, list) and len(labelled) == 2
    # Clicks at the upper left and lower right of the tile: neither is the top-left superpixel 0
    # (which a click mapped with an unloaded image's zero size would hit).
    assert 0 not in labelled


def fitted_to(driver, base: str, bbox: tuple[float, float, float, float]) -> list[float]:  # type: ignore[no-untyped-def]
    driver.get(base + "/?bbox=" + ",".join(f"{v:.6f}" for v in bbox))
    _ready(driver)
    _idle(driver)
    return driver.execute_script(  # type: ignore[no-any-return]
        "const b = window.amberMap.getBounds();"
        "return [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()];"
    )


async def test_an_alerts_map_link_fits_the_map_to_its_tiles(
    browser, server: str, seeded: Seeded
) -> None:  # type: ignore[no-untyped-def]
    """#30: an alert's map link (`/?bbox=W,S,E,N`) opens the map on its tiles, not on the
    detections' whole extent."""
    flagged = seeded.tiles["positive1"]
    # A tile ten tiles east of the seeded detections: their extent does not hold it.
    bbox = Tile(flagged.tile.x + 10, flagged.tile.y, flagged.tile.z).bounds()
    west, south, east, north = await asyncio.to_thread(fitted_to, browser, server, bbox)
    assert west <= bbox[0] and south <= bbox[1] and east >= bbox[2] and north >= bbox[3]
    width = bbox[2] - bbox[0]
    assert abs((west + east) / 2 - (bbox[0] + bbox[2]) / 2) < width / 4, (west, east, bbox)
    assert east - west < 6 * width, (west, east, bbox)


def review_queue(driver, base: str, keys: str, query: str = "") -> dict[str, object]:  # type: ignore[no-untyped-def]
    """Open /review (with `query`), type the token and name, then press `keys` one per shown
    tile (`u` undoes the previous action); the tiles in the order shown ("" for none left)."""
    from selenium.webdriver.common.by import By

    seen: dict[str, object] = {"shown": []}
    shown: list[str] = seen["shown"]  # type: ignore[assignment]
    driver.get(base + "/review" + query)
    _ready(driver)
    driver.find_element(By.ID, "token").send_keys(TOKEN)
    driver.find_element(By.ID, "reviewer").clear()
    driver.find_element(By.ID, "reviewer").send_keys("ana")
    driver.execute_script("document.activeElement.blur()")
    body = driver.find_element(By.TAG_NAME, "body")
    for key in keys:
        _ready(driver)
        _image_loaded(driver, "#current")
        tile = driver.execute_script("return document.body.dataset.tile")
        shown.append(tile)
        if len(shown) == 1:
            seen["position"] = driver.find_element(By.ID, "position").text
            driver.save_screenshot(str(SCREENSHOTS / "review-queue.png"))
        body.send_keys(key)
        # The next tile comes up (or, after an undo, the one undone).
        _wait(driver, lambda d, t=tile: d.execute_script("return document.body.dataset.tile") != t)
    _ready(driver)
    _wait(driver, lambda d: d.execute_script("return document.body.dataset.pending") == "0")
    seen["progress"] = driver.find_element(By.ID, "progress").text
    seen["status"] = driver.find_element(By.ID, "status").text
    return seen


async def test_the_review_queue_by_keyboard(browser, server: str, seeded: Seeded) -> None:  # type: ignore[no-untyped-def]
    """Ten tiles judged with the keyboard in the queue's order, one verdict undone and given
    again; the reviews land with who and when, the marks of `m` as labels."""
    from amberscan.web import review_queries
    from tests.web.client import get
    from tests.web.routes.test_changes import upsert

    # Eight more tiles (the seeded images at other places), twelve in the queue in all.
    for k in range(8):
        source = seeded.tiles["positive1" if k % 2 else "negative1"]
        row = pb.Detection()
        row.CopyFrom(source)
        tile = Tile(37640 + k, 22003, 16)
        row.tile_id, row.tile.x, row.tile.y = tile.quadkey, tile.x, tile.y
        row.scores[:] = [min(0.99, s + 0.01 * k) for s in source.scores]
        await upsert(seeded, row)
    _, queue = await get(f"{server}/api/review-queue", limit="50")
    order = [f"{t['tile_id']}|{t['imagery_date']}" for t in queue["tiles"]]
    assert queue["matched"] == 12
    # c r m, undo the m (its tile comes back), then m again and seven more.
    keys = "crmu" + "mcrcsrcr"
    seen = await asyncio.to_thread(review_queue, browser, server, keys)
    shown = seen["shown"]
    assert isinstance(shown, list) and len(shown) == len(keys)
    assert shown[4] == shown[2]  # after the undo (pressed on the 4th tile), the 3rd again
    first_seen = list(dict.fromkeys(shown))
    assert first_seen == order[:10]  # ten tiles, in the queue's order
    judged = {t: k for t, k in zip(shown, keys, strict=True) if k != "u"}
    assert "9 judged" in str(seen["progress"]) and "1 skipped" in str(seen["progress"])
    rows = await seeded.db.fetch(
        "SELECT tile_id, imagery_date, verdict, reviewer, reviewed_at FROM reviews"
    )
    landed = {f"{t}|{d}": (v, who, at) for t, d, v, who, at in rows}
    want = {"c": "confirmed", "r": "rejected", "m": "rejected"}
    assert {t: v for t, (v, _, _) in landed.items()} == {
        t: want[k] for t, k in judged.items() if k != "s"
    }
    assert all(who == "ana" and at is not None for _, who, at in landed.values())
    marked = shown[2]
    tile_id, date = marked.split("|")
    events = await review_queries.history(seeded.db, tile_id, date)
    actions = [e["action"] for e in events]
    # Rejected and marked, cleared by the undo (marks too), rejected and marked again.
    assert actions[0] == "rejected" and "cleared" in actions and actions.count("rejected") == 2
    assert actions.count("not_mining") == 2 * actions.count("label_cleared")
    assert all(e["reviewer"] == "ana" for e in events)


async def test_undo_puts_back_the_verdict_it_replaced(browser, server: str, seeded: Seeded) -> None:  # type: ignore[no-untyped-def]
    """A tile bo rejected that a later model flags again is in the queue; ana confirms it, then
    undoes: bo's rejection is back (restored by ana, saying so), not cleared."""
    from google.protobuf.timestamp_pb2 import Timestamp

    from tests.web.client import AUTH, post, target
    from tests.web.routes.test_changes import upsert

    tile = seeded.tiles["positive1"]
    status, _ = await post(
        f"{server}/api/reviews", {**target(tile), "verdict": "rejected", "reviewer": "bo"}, AUTH
    )
    assert status == 200
    again = pb.Detection()
    again.CopyFrom(tile)
    again.models.classifier, again.scan_id = "clf-test-2", "replay-clf-test-2"
    later = Timestamp()
    later.GetCurrentTime()
    again.detected_at.CopyFrom(later)
    await upsert(seeded, again)
    west, south, east, north = Tile(tile.tile.x, tile.tile.y, tile.tile.z).bounds()
    inset = (east - west) / 4
    only = f"?bbox={west + inset},{south + inset},{east - inset},{north - inset}"
    seen = await asyncio.to_thread(review_queue, browser, server, "cu", only)
    key = f"{tile.tile_id}|{tile.imagery_date}"
    assert seen["shown"] == [key, ""]  # the tile, then the empty queue the undo left
    rows = await seeded.db.fetch(
        "SELECT verdict, reviewer, note FROM reviews WHERE tile_id = %s", tile.tile_id
    )
    assert len(rows) == 1
    verdict, reviewer, note = rows[0]
    assert (verdict, reviewer) == ("rejected", "ana") and "restores bo's verdict" in note, rows


def review_without_token(driver, base: str) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """Open /review without typing the token and press `c`: what shows, and the status."""
    from selenium.webdriver.common.by import By

    driver.get(base + "/review")
    _ready(driver)
    _wait(driver, lambda d: d.execute_script("return document.body.dataset.writable") == "1")
    shown = {
        name: driver.find_element(By.CSS_SELECTOR, selector).is_displayed()
        for name, selector in (("keys", "#keys"), ("read-only", ".read-only"))
    }
    tile = driver.execute_script("return document.body.dataset.tile")
    driver.find_element(By.TAG_NAME, "body").send_keys("c")
    _wait(driver, lambda d: "read-only" in d.find_element(By.ID, "status").text)
    still = driver.execute_script("return document.body.dataset.tile")
    return {**shown, "stayed": tile == still and bool(tile)}


async def test_the_review_page_is_read_only_without_the_token(  # type: ignore[no-untyped-def]
    browser, server: str, seeded: Seeded
) -> None:
    """Without the token the keys are not offered, the page says why, and `c` saves nothing."""
    seen = await asyncio.to_thread(review_without_token, browser, server)
    assert seen == {"keys": False, "read-only": True, "stayed": True}
    assert await seeded.db.fetch("SELECT tile_id FROM reviews") == []


def labelling_page(driver, base: str, tile: str, query: str) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """The labelling page's visible text, its superpixel table's header, and what a click on a
    superpixel says."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    driver.get(f"{base}/label/{tile}?{query}")
    _ready(driver)
    _image_loaded(driver, "#overlay")
    image = driver.find_element(By.ID, "overlay")
    ActionChains(driver).move_to_element_with_offset(image, 10, 10).click().perform()
    _wait(driver, lambda d: "superpixel" in d.find_element(By.ID, "selection").text)
    return {
        "text": driver.find_element(By.TAG_NAME, "body").text,
        "header": [
            th.text for th in driver.find_elements(By.CSS_SELECTOR, "#superpixels th") if th.text
        ],
        "selection": driver.find_element(By.ID, "selection").text,
    }


async def test_a_blind_labelling_page_shows_nothing_of_the_model(  # type: ignore[no-untyped-def]
    browser, server: str, seeded: Seeded
) -> None:
    """`?blind=1` (a blind area design's link): the superpixels without scores or flags, the
    facts without the rule, threshold, hectares or verdict, and no link to the debugger; the
    same page without it shows them."""
    tile = seeded.tiles["positive1"]
    query = f"imagery_date={tile.imagery_date}"
    blind = await asyncio.to_thread(
        labelling_page, browser, server, tile.tile_id, query + "&blind=1"
    )
    seeing = await asyncio.to_thread(labelling_page, browser, server, tile.tile_id, query)
    assert seeing["header"] == ["#", "score", "positive", "label", "area px"]
    assert "score" in str(seeing["selection"]) and "rule outcome" in str(seeing["text"])
    assert blind["header"] == ["#", "label", "area px"]
    assert "score" not in str(blind["selection"])
    text = str(blind["text"])
    for shown in ("rule outcome", "threshold", "FLAGGED", "hectares", "tile debugger"):
        assert shown not in text, (shown, text)
    assert not any(f"{s:.3f}" in text for s in tile.scores if s > 0.0005)

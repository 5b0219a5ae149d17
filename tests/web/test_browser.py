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

from tests.web.conftest import HOSTILE, TOKEN, Seeded
from tests.web.scan_features import produce_scan_features

pytestmark = pytest.mark.stack
SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture
def browser() -> Iterator[object]:
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    if not Path(CHROMEDRIVER).exists():
        pytest.fail("chromium-driver is missing: apt-get install -y chromium chromium-driver")
    profile = tempfile.mkdtemp(prefix="amberscan-chromium-")
    options = Options()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--window-size=1400,900",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
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


def map_and_debugger(driver, base: str, flagged_tile: str) -> dict[str, object]:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    seen: dict[str, object] = {}
    driver.get(base + "/")
    _ready(driver)
    paths = driver.find_elements(By.CSS_SELECTOR, "path.det")
    seen["polygons"] = len(paths)
    seen["flagged_polygons"] = len(driver.find_elements(By.CSS_SELECTOR, "path.det-flagged"))
    seen["notice"] = driver.find_element(By.ID, "demo-notice").text
    seen["summary"] = driver.find_element(By.ID, "summary").text
    driver.save_screenshot(str(SCREENSHOTS / "map.png"))

    # Click a flagged polygon, then the popup's link to the tile debugger.
    flagged = driver.find_elements(By.CSS_SELECTOR, "path.det-flagged")[0]
    ActionChains(driver).move_to_element(flagged).click().perform()
    link = _wait(
        driver, lambda d: d.find_element(By.CSS_SELECTOR, ".leaflet-popup a.open-debugger")
    )
    # Leaflet fades the popup in, and Selenium's .text is only the visible text: wait until
    # the popup is visible rather than reading it mid-fade.
    seen["popup"] = _wait(
        driver, lambda d: d.find_element(By.CSS_SELECTOR, ".leaflet-popup-content").text
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

    # Select a superpixel by clicking the overlay; relabel it; reject the detection.
    driver.find_element(By.ID, "token").send_keys(TOKEN)
    image = driver.find_element(By.ID, "overlay")
    ActionChains(driver).move_to_element_with_offset(image, 40, 40).click().perform()
    _wait(driver, lambda d: "superpixel" in d.find_element(By.ID, "selection").text)
    seen["selection"] = driver.find_element(By.ID, "selection").text
    driver.find_element(By.ID, "class-not_mining").click()
    driver.find_element(By.ID, "relabel").click()
    _wait(driver, lambda d: "not mining" in d.find_element(By.ID, "status").text)
    driver.find_element(By.ID, "review-rejected").click()
    _wait(driver, lambda d: "review saved" in d.find_element(By.ID, "status").text)
    _image_loaded(driver, "#overlay")
    driver.execute_script("window.scrollTo(0, 0)")
    driver.save_screenshot(str(SCREENSHOTS / "tile-debugger.png"))

    # The map after a reload shows the review.
    driver.get(base + "/")
    _ready(driver)
    seen["rejected_polygons"] = len(driver.find_elements(By.CSS_SELECTOR, "path.det-rejected"))
    seen["summary_after"] = driver.find_element(By.ID, "summary").text
    driver.save_screenshot(str(SCREENSHOTS / "map-after-review.png"))
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
    driver.find_element(By.ID, "token").send_keys(TOKEN)
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
    flagged = seeded.tiles["positive1"].tile_id
    seen = await asyncio.to_thread(map_and_debugger, browser, server, flagged)
    assert seen["polygons"] == 4
    assert seen["flagged_polygons"] == 2
    assert "DEMO" in str(seen["notice"])
    assert "tiles scanned 4" in str(seen["summary"])
    assert "DEMO" in str(seen["popup"]) and "FLAGGED" in str(seen["popup"])
    assert "/tile/" in str(seen["debugger_url"])
    assert seen["tile_heading"] == "Tile debugger"
    assert "FLAGGED" in str(seen["facts"]) and "efficientnet_lite0@1" in str(seen["facts"])
    assert HOSTILE in str(seen["facts"]) and seen["injected"] == 0
    assert seen["rejected_polygons"] == 1
    assert "rejected 1" in str(seen["summary_after"])


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

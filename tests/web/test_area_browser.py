"""The area-estimate page in a real headless Chromium (#28): draw a design of the demo area,
judge its tiles with the page's buttons, upload reporting units, and read the estimate with its
interval per unit; `amberscan area --json` gives the same figures; the main map's panel shows
the estimate of the design of the vintage shown. Screenshots: artifacts/screenshots/area.png,
map-area-estimate.png."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import pytest

from amberscan.cli import area as area_command
from tests.web.client import AUTH, get, post
from tests.web.conftest import TOKEN, Seeded
from tests.web.routes.test_area import REGION, UNITS, add_grid, add_later_vintage, review
from tests.web.test_browser import SCREENSHOTS, _choose, _idle, _ready, _wait, browser

pytestmark = pytest.mark.stack
__all__ = ["browser"]  # the fixture, shared with the other page tests


def sample_and_judge(driver, base: str, units: Path) -> dict[str, object]:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    seen: dict[str, object] = {}
    driver.get(base + "/area")
    _ready(driver)
    driver.find_element(By.ID, "token").send_keys(TOKEN)
    driver.find_element(By.ID, "bbox").send_keys(",".join(str(v) for v in REGION))
    n = driver.find_element(By.ID, "n")
    n.clear()
    n.send_keys("9")
    driver.find_element(By.ID, "draw").click()
    _wait(driver, lambda d: "/area/" in d.current_url)
    _ready(driver)
    seen["design"] = driver.current_url.rsplit("/", 1)[-1]
    seen["before"] = driver.find_element(By.ID, "estimate").text
    seen["sample_rows"] = len(driver.find_elements(By.CSS_SELECTOR, "#sample tbody tr"))
    seen["label_link"] = driver.find_element(By.ID, "label").get_attribute("href")
    for k in range(9):
        previous = driver.find_element(By.ID, "position").text
        driver.find_element(By.ID, "confirm" if k % 3 == 0 else "reject").click()
        if k < 8:  # the page moves on to the next unreviewed tile
            _wait(driver, lambda d, p=previous: d.find_element(By.ID, "position").text != p)
        else:
            _wait(driver, lambda d: "9 of 9 judged" in d.find_element(By.ID, "estimate").text)
        _ready(driver)
    seen["after"] = driver.find_element(By.ID, "estimate").text
    driver.find_element(By.ID, "units").send_keys(str(units))
    _wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#unit-table tbody tr")) == 2)
    _ready(driver)
    seen["units"] = [
        [td.text for td in tr.find_elements(By.TAG_NAME, "td")]
        for tr in driver.find_elements(By.CSS_SELECTOR, "#unit-table tbody tr")
    ]
    seen["figures"] = driver.find_element(By.ID, "figures").text
    driver.save_screenshot(str(SCREENSHOTS / "area.png"))
    return seen


async def test_area_page_samples_judges_and_estimates_per_unit(  # type: ignore[no-untyped-def]
    browser, server: str, seeded: Seeded, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await add_grid(seeded)
    units = tmp_path / "units.geojson"
    units.write_text(json.dumps(UNITS))
    seen = await asyncio.to_thread(sample_and_judge, browser, server, units)
    assert seen["sample_rows"] == 9
    assert "blind=1" in str(seen["label_link"])  # a blind design marks on a blind page
    assert "no estimate yet: 0 of 9" in str(seen["before"])
    assert "mining " in str(seen["after"]) and "95 % CI" in str(seen["after"])

    parser = argparse.ArgumentParser()
    area_command.add_parser(parser.add_subparsers())
    args = parser.parse_args(
        ["area", "--design", str(seen["design"]), "--units", str(units), "--json"]
    )
    assert await asyncio.to_thread(area_command.run, args, seeded.settings) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["reviewed"] == 9
    assert [s["sampled"] for s in report["strata"]] == [3, 3, 3]
    confirmed = sum(t["review"] == "confirmed" for t in report["tiles"])
    assert confirmed == 3
    shown = {row[0]: row for row in seen["units"]}  # type: ignore[union-attr]
    for unit in report["units"]:
        row = shown[unit["name"]]
        mining = unit["mining_ha"]
        assert row[1] == f"{mining['estimate']:.2f}"
        assert row[2] == f"{mining['low']:.2f} – {mining['high']:.2f}"
        assert row[3] == f"{unit['mapped_ha']:.2f}"
        assert row[6] == str(unit["reviewed"])
    whole = report["estimate"]["mining_ha"]
    assert f"{whole['estimate']:.2f}" in str(seen["figures"])


def map_panel(driver, base: str) -> dict[str, object]:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    seen: dict[str, object] = {}
    driver.get(base + "/")
    _ready(driver)
    _idle(driver)
    box = driver.find_element(By.ID, "area-estimate")
    seen["shown"] = box.is_displayed()
    seen["text"] = box.text
    seen["link"] = driver.find_element(By.ID, "area-estimate-link").get_attribute("href")
    driver.save_screenshot(str(SCREENSHOTS / "map-area-estimate.png"))
    _choose(driver, "year", "2015")  # no design of that vintage: no estimate shown
    seen["other_vintage_shown"] = box.is_displayed()
    seen["other_vintage_design"] = driver.execute_script("return document.body.dataset.areaDesign")
    _choose(driver, "year", "")
    seen["back"] = box.text
    driver.find_element(By.ID, "area-estimate-link").click()
    _wait(driver, lambda d: "/area/" in d.current_url)
    _ready(driver)
    seen["page"] = driver.find_element(By.ID, "estimate").text
    return seen


async def test_map_panel_shows_the_estimate_of_the_vintage_shown(  # type: ignore[no-untyped-def]
    browser, server: str, seeded: Seeded
) -> None:
    await add_grid(seeded)
    bbox = ",".join(str(v) for v in REGION)
    status, design = await post(
        f"{server}/api/area/designs", {"bbox": bbox, "n": 12, "seed": 5}, AUTH
    )
    assert status == 201 and design["sampled"] == 12
    for k, t in enumerate(design["tiles"][:11]):  # all but one judged
        await review(server, t, "confirmed" if k % 3 == 0 else "rejected")
    status, report = await get(f"{server}/api/area/designs/{design['id']}")
    assert status == 200 and report["reviewed"] == 11
    mining = report["estimate"]["mining_ha"]
    assert mining is not None and mining["se"] is not None and mining["se"] > 0

    seen = await asyncio.to_thread(map_panel, browser, server)
    assert seen["shown"], seen
    text = str(seen["text"])
    half = mining["high"] - mining["estimate"]
    assert f"{mining['estimate']:.2f} ± {half:.2f} ha" in text, text
    assert f"95 % CI {mining['low']:.2f} – {mining['high']:.2f}" in text, text
    assert "11 of 12 sample tiles judged" in text, text
    assert str(seen["link"]).endswith(f"/area/{design['id']}")
    assert seen["other_vintage_shown"] is False and seen["other_vintage_design"] == ""
    assert seen["back"] == text
    assert "11 of 12 judged" in str(seen["page"])


def judge_changes(driver, base: str, design: int) -> dict[str, object]:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    seen: dict[str, object] = {}
    driver.get(f"{base}/area/{design}")
    _ready(driver)
    driver.find_element(By.ID, "token").send_keys(TOKEN)
    seen["vintage_buttons"] = driver.find_element(By.ID, "confirm").is_displayed()
    seen["captions"] = [
        driver.find_element(By.ID, i).text for i in ("before-caption", "after-caption")
    ]
    buttons = ("new-damage", "old-damage", "no-damage")
    for k in range(6):
        previous = driver.find_element(By.ID, "position").text
        driver.find_element(By.ID, buttons[k % 3]).click()
        if k < 5:
            _wait(driver, lambda d, p=previous: d.find_element(By.ID, "position").text != p)
        else:
            _wait(driver, lambda d: "6 of 6 judged" in d.find_element(By.ID, "estimate").text)
        _ready(driver)
    seen["estimate"] = driver.find_element(By.ID, "estimate").text
    driver.save_screenshot(str(SCREENSHOTS / "area-change.png"))
    return seen


async def test_area_page_judges_new_damage_at_both_dates(  # type: ignore[no-untyped-def]
    browser, server: str, seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    await add_grid(seeded)
    await add_later_vintage(seeded)
    bbox = ",".join(str(v) for v in REGION)
    body = {"bbox": bbox, "year_before": "2014", "year": "2016", "n": 6, "seed": 2}
    status, design = await post(f"{server}/api/area/designs", body, AUTH)
    assert status == 201 and design["kind"] == "change" and design["sampled"] == 6
    seen = await asyncio.to_thread(judge_changes, browser, server, design["id"])
    assert seen["vintage_buttons"] is False
    first = design["tiles"][0]
    assert seen["captions"] == [
        f"earlier: {first['imagery_date_before']}",
        f"later: {first['imagery_date']}",
    ]
    assert "new mining 2014–2016" in str(seen["estimate"])

    parser = argparse.ArgumentParser()
    area_command.add_parser(parser.add_subparsers())
    args = parser.parse_args(["area", "--design", str(design["id"]), "--json"])
    assert await asyncio.to_thread(area_command.run, args, seeded.settings) == 0
    report = json.loads(capsys.readouterr().out)
    # The buttons in review order: new mining, there before, none at the later date.
    by_position = sorted(report["tiles"], key=lambda t: t["position"])
    assert [t["review"] for t in by_position] == ["new", "not new", "not new"] * 2
    assert [t["review_before"] for t in by_position] == ["rejected", "confirmed", "unreviewed"] * 2
    mining = report["estimate"]["mining_ha"]
    assert f"{mining['estimate']:.2f}" in str(seen["estimate"])

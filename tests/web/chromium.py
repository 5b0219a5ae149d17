"""Debian's headless Chromium through Selenium, as the browser tests and the map benchmark run
it: software WebGL (SwiftShader, for MapLibre), no network of its own, a throwaway profile."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
FLAGS = (
    "--headless",
    "--no-sandbox",
    # MapLibre draws with WebGL: software rendering (SwiftShader), no GPU needed.
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    "--ignore-gpu-blocklist",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1400,900",
)


def start(profile: Path | str) -> Any:
    """A Chromium WebDriver with its profile in `profile` (the caller removes it)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    if not Path(CHROMEDRIVER).exists():
        raise RuntimeError(
            "chromium-driver is missing: apt-get install -y chromium chromium-driver"
        )
    options = Options()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    return driver

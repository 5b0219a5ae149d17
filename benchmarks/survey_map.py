"""The map at survey scale: vector tiles, the summary and the browser on 450,000 detections.

Needs the synthetic fixture (`amberscan survey-fixture`, schema `amberscan_synthetic`) on the
running stack's PostGIS. Serves the web app on that schema in this process and reports:

* vector-tile latency p50/p95 and the largest tile at zooms 6, 10, 14 and 17, over tiles drawn
  at random inside the fixture's extent (the same tiles for every zoom's sample size);
* the summary API's latency, from the aggregates (`map_cells`) and, as the baseline measured in
  the same run, computed from the detections themselves (the ratio is baseline / aggregates);
* the GeoJSON API at one zoom-14 view (the old map's way, `limit=1000` per page) as the baseline
  of the zoom-14 vector tile;
* with `--browser`: the time headless Chromium takes to a rendered whole-region view (first
  `idle` of the map after navigation start), in a fresh profile (cold: nothing cached; the
  target is held to this one) and on a second visit (warm), for MapLibre GL JS (the map) and
  for Leaflet + protomaps-leaflet (the alternative, same tiles).

    .venv/bin/python benchmarks/survey_map.py [--samples 40] [--browser]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import shutil
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

from amberscan.common.settings import Settings, load_settings, replace
from amberscan.geo.tiles import Tile
from amberscan.survey import DEFAULT_SCHEMA
from amberscan.web.app import make_app

HERE = Path(__file__).resolve().parent
NODE_MODULES = HERE.parent / "web" / "node_modules"
ZOOMS = (6, 10, 14, 17)
TARGET_MS, TARGET_KB, SUMMARY_MS, RENDER_S = 150.0, 500.0, 300.0, 3.0


def tile_of(lon: float, lat: float, z: int) -> tuple[int, int]:
    n = 2**z
    y = (1 - math.log(math.tan(math.radians(lat)) + 1 / math.cos(math.radians(lat))) / math.pi) / 2
    return int((lon + 180) / 360 * n), int(y * n)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else math.nan


async def timed(session: aiohttp.ClientSession, url: str) -> tuple[float, int, int]:
    started = time.perf_counter()
    async with session.get(url) as r:
        body = await r.read()
    return (time.perf_counter() - started) * 1000, len(body), r.status


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bench_app(settings: Settings) -> web.Application:
    app = make_app(settings)
    app.router.add_static("/bench/page/", HERE / "survey_map_leaflet")
    if NODE_MODULES.is_dir():
        app.router.add_static("/bench/node_modules/", NODE_MODULES)
    return app


def render_time(base: str, path: str) -> tuple[float, float]:
    """Seconds from navigation start to the first rendered view in a fresh Chromium (cold: no
    cache, no compiled code), then on a second visit in the same profile (warm)."""
    from selenium.webdriver.support.ui import WebDriverWait

    # The browser tests' way of starting Chromium (from the checkout: tests/ is not installed).
    sys.path.insert(0, str(HERE.parent))
    from tests.web import chromium

    profile = tempfile.mkdtemp(prefix="amberscan-bench-")
    driver = chromium.start(profile)
    try:
        seconds = []
        for _ in range(2):
            driver.get(base + path)
            WebDriverWait(driver, 120).until(
                lambda d: d.execute_script("return document.body.dataset.ready") == "1"
            )
            seconds.append(int(driver.execute_script("return document.body.dataset.renderedMs")))
        return seconds[0] / 1000, seconds[1] / 1000
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--schema", default=DEFAULT_SCHEMA)
    parser.add_argument("--samples", type=int, default=40, help="tiles per zoom")
    parser.add_argument("--browser", action="store_true", help="also time headless Chromium")
    parser.add_argument("--runs", type=int, default=3, help="browser runs per map library")
    args = parser.parse_args(argv)
    settings = replace(
        load_settings(), database={"schema_name": args.schema}, web={"port": free_port()}
    )
    runner = web.AppRunner(bench_app(settings))
    started = time.perf_counter()
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", settings.web.port).start()
    base = f"http://127.0.0.1:{settings.web.port}"
    print(f"app started in {time.perf_counter() - started:.1f} s (map_cells filled if empty)")
    failures: list[str] = []
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(base + "/api/summary") as r:
                summary = await r.json()
            if summary["synthetic"] < 100_000:
                print(
                    f"schema {args.schema} holds {summary['tiles']} detections: fill it with "
                    "`amberscan survey-fixture` first",
                    file=sys.stderr,
                )
                return 2
            west, south, east, north = summary["extent"]
            print(f"fixture: {summary['tiles']} SYNTHETIC detections, extent {summary['extent']}")
            rng = random.Random(14)
            points = [
                (rng.uniform(west, east), rng.uniform(south, north)) for _ in range(args.samples)
            ]
            print(f"{'zoom':>4} {'tiles':>5} {'p50 ms':>8} {'p95 ms':>8} {'max KB':>8}")
            for z in ZOOMS:
                times, sizes = [], []
                for lon, lat in points:
                    x, y = tile_of(lon, lat, z)
                    ms, size, status = await timed(
                        session, f"{base}/tiles/detections/{z}/{x}/{y}.mvt"
                    )
                    assert status == 200, (z, x, y, status)
                    times.append(ms)
                    sizes.append(size)
                p50, p95, kb = pct(times, 0.5), pct(times, 0.95), max(sizes) / 1024
                print(f"{z:>4} {len(times):>5} {p50:>8.1f} {p95:>8.1f} {kb:>8.1f}")
                if z <= 14 and (p95 > TARGET_MS or kb > TARGET_KB):
                    failures.append(f"zoom {z}: p95 {p95:.0f} ms, max {kb:.0f} KB")

            cells = [(await timed(session, base + "/api/summary"))[0] for _ in range(20)]
            # Baseline: the same summary computed from the detections (no aggregates).
            from amberscan.common.db import Database
            from amberscan.web import queries
            from amberscan.web.core import Filters

            live = []
            async with Database(settings.database) as db:
                for _ in range(3):
                    t0 = time.perf_counter()
                    await queries.summary(db, Filters(), None)
                    live.append((time.perf_counter() - t0) * 1000)
            s50, s95 = pct(cells, 0.5), pct(cells, 0.95)
            ratio = statistics.median(live) / s50
            print(
                f"summary API: p50 {s50:.1f} ms, p95 {s95:.1f} ms (from the detections: "
                f"{statistics.median(live):.0f} ms; ratio {ratio:.0f}x)"
            )
            if s95 > SUMMARY_MS:
                failures.append(f"summary p95 {s95:.0f} ms")
            lon, lat = points[0]
            x, y = tile_of(lon, lat, 14)
            bbox = ",".join(f"{v:.6f}" for v in Tile(x, y, 14).bounds())
            geo = [
                (await timed(session, f"{base}/api/detections?bbox={bbox}&limit=1000"))[0]
                for _ in range(5)
            ]
            mvt = [
                (await timed(session, f"{base}/tiles/detections/14/{x}/{y}.mvt"))[0]
                for _ in range(5)
            ]
            print(
                f"one zoom-14 view: vector tile {statistics.median(mvt):.1f} ms, GeoJSON API "
                f"{statistics.median(geo):.1f} ms (ratio {statistics.median(geo) / statistics.median(mvt):.1f}x)"
            )
        if args.browser:
            for name, path in (
                ("MapLibre GL JS", "/"),
                ("Leaflet + protomaps-leaflet", "/bench/page/index.html"),
            ):
                if path.startswith("/bench/") and not NODE_MODULES.is_dir():
                    print(f"{name}: web/node_modules missing (make setup-web)")
                    continue
                runs = [await asyncio.to_thread(render_time, base, path) for _ in range(args.runs)]
                median = statistics.median(cold for cold, _ in runs)
                warm = statistics.median(w for _, w in runs)
                shown = ", ".join(f"{c:.2f}" for c, _ in runs)
                print(
                    f"whole-region view, {name}: cold median {median:.2f} s ({shown}); "
                    f"second visit median {warm:.2f} s"
                )
                if path == "/" and median > RENDER_S:
                    failures.append(f"whole-region view {median:.2f} s")
    finally:
        await runner.cleanup()
    targets = f"targets: tiles at zoom <= 14 p95 <= {TARGET_MS:.0f} ms and <= {TARGET_KB:.0f} KB"
    targets += f", summary <= {SUMMARY_MS:.0f} ms, whole-region view <= {RENDER_S:.0f} s"
    print(targets + (": all met" if not failures else ": MISSED " + "; ".join(failures)))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

"""The small form of `make chaos`, in CI: `stack/chaos.py --ci` on a private stack of its own.

24 demo-mosaic tiles (the tiler slowed, its last 2 tiles held until every fault is in, so the
scan outlasts the faults); every one of the six
services SIGKILLed once, while its metrics show records read and not committed, and restarted;
one process's link to Kafka cut and healed (a network partition); Kafka (while producers write),
MinIO, PostgreSQL and the model server each SIGKILLed and restarted once, mid-scan; then nothing
may be lost or stored twice, every verdict and score must equal those of a fault-free scan of
the same tiles, and records must have been redelivered (the faults reached work in flight). The
shared stack's servers are never touched: the private one has its own directory and ports
(26000+).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.stack

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(1800)
def test_chaos_ci_loses_nothing(tmp_path: Path) -> None:
    report = tmp_path / "chaos.json"
    # Not under pytest's tmp_path: that is private to root, and PostgreSQL runs as postgres.
    stack = ROOT / ".stack-chaos-ci"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AMBERSCAN_STACK_")}
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "stack" / "chaos.py"),
            "--ci",
            "--stack-dir",
            str(stack),
            "--port-base",
            "26000",
            "--json",
            str(report),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1700,
        check=False,
    )
    tail = "\n".join(result.stdout.splitlines()[-40:]) + "\n" + result.stderr[-3000:]
    assert report.exists(), tail
    r = json.loads(report.read_text())
    print(tail)
    assert (r["tiles"], r["lost"], r["duplicate_rows"]) == (24, 0, 0), tail
    assert (r["verdict_mismatches"], r["score_mismatches"]) == (0, 0), tail
    assert r["done"] + r["failed"] == 24 and r["failed"] == r["reference_failed"], tail
    assert set(r["service_kills_by_service"]) == {
        "tiler",
        "segmenter",
        "feature",
        "classifier",
        "aggregator",
        "sink",
    }, tail
    assert r["server_kills"] == 4 and not r["faults_not_injected"], tail
    assert r["partitions"] == 1 and r["redeliveries"] > 0, tail
    assert result.returncode == 0 and r["problems"] == [], tail
    assert not (stack / "run" / "kafka.pid").exists()  # the private stack was stopped


def load_chaos(monkeypatch: pytest.MonkeyPatch) -> Any:
    """stack/chaos.py as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("stack_chaos", ROOT / "stack" / "chaos.py")
    assert spec is not None and spec.loader is not None
    chaos = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "stack_chaos", chaos)  # its dataclasses look themselves up
    spec.loader.exec_module(chaos)
    return chaos


async def test_the_tile_gate_holds_the_last_tiles_until_released(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Of 3 zoom-16 scan tiles with 1 held, the provider tiles (zoom 18) of the first two pass
    at once, those of the third wait for the release, and every answer is the server's own."""
    import aiohttp
    from aiohttp import web

    from tests.streams import free_port, served

    chaos = load_chaos(monkeypatch)
    asked: list[str] = []

    async def tile(request: web.Request) -> web.Response:
        asked.append(request.path)
        return web.Response(body=request.path.encode(), headers={"ETag": '"e"'})

    app = web.Application()
    app.router.add_get("/tiles/{z}/{x}/{y}.png", tile)
    async with served(app) as upstream, aiohttp.ClientSession() as session:
        gate = chaos.TileGate(upstream, free_port(), scan_zoom=16, held=1, tiles=3)
        await gate.start()
        try:

            async def get(x: int, y: int) -> tuple[int, bytes, str]:
                url = gate.url().format(z=18, x=x, y=y)
                async with session.get(url) as answer:
                    return answer.status, await answer.read(), answer.headers["ETag"]

            # Scan tiles (0, 0) and (1, 0): provider tiles x 0-3 and 4-7 at zoom 18.
            assert await get(1, 2) == (200, b"/tiles/18/1/2.png", '"e"')
            assert (await get(5, 0))[0] == 200
            third = asyncio.ensure_future(get(9, 1))  # scan tile (2, 0): held
            for _ in range(200):  # until the gate holds it
                if gate.waiting:
                    break
                await asyncio.sleep(0.05)
            assert gate.waiting == 1 and not third.done()
            assert (await get(6, 3))[0] == 200  # an admitted scan tile still passes
            gate.release()
            assert await asyncio.wait_for(third, 10) == (200, b"/tiles/18/9/1.png", '"e"')
            assert asked[-1] == "/tiles/18/9/1.png" and gate.waiting == 0
        finally:
            await gate.stop()


def test_a_port_base_among_the_ephemeral_ports_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chaos = load_chaos(monkeypatch)
    ranges = tmp_path / "ip_local_port_range"
    ranges.write_text("32768\t60999\n")
    clash = chaos.ephemeral_clash(39000, 39600, ranges)
    assert clash is not None and "32768-60999" in clash and "below 32168" in clash
    assert chaos.ephemeral_clash(32500, 33100, ranges) is not None  # overlapping the low end
    assert chaos.ephemeral_clash(26000, 26600, ranges) is None
    assert chaos.ephemeral_clash(61000, 61600, ranges) is None
    assert chaos.ephemeral_clash(39000, 39600, tmp_path / "missing") is None

"""`amberscan watch add|list|remove`, run in-process against the real PostGIS."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from shapely import geometry as sg

from amberscan import cli
from amberscan.common.db import Database
from amberscan.common.settings import Settings
from amberscan.tiler import demo
from tests.sources import MISSING
from tests.streams import free_port

pytestmark = pytest.mark.stack


@pytest.fixture
def env(
    stack_settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[Path]:
    """The command's environment: this test's schema; yields a region file."""
    monkeypatch.setenv("AMBERSCAN_DATABASE_SCHEMA", stack_settings.database.schema_name)
    region = tmp_path / "region.geojson"
    region.write_text(json.dumps(sg.mapping(sg.box(*demo.demo_bbox()))))
    yield region
    asyncio.run(_drop(stack_settings))


async def _drop(settings: Settings) -> None:
    async with Database(settings.database) as db:
        await db.drop_schema()


def test_add_list_remove(env: Path, tmp_path: Path, shared_data: Path, capsys) -> None:
    from tests.imagery.rasters import tile_cog

    folder = tmp_path / "drone"
    folder.mkdir()
    tile = demo.demo_tiles()[0]
    tile_cog(
        folder / "a.tif",
        tile,
        demo.demo_images(shared_data / "tiles")[tile],
        tags={"TIFFTAG_DATETIME": "2020:01:01 00:00:00"},
    )
    argv = [
        "watch",
        "add",
        str(env),
        "--provider",
        "geotiff",
        "--source",
        str(folder),
        "--every",
        "12h",
        "--name",
        "klesiv",
    ]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("watch 1: ") and "from geotiff every 12h" in out
    assert cli.main(["watch", "list", "--json"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert (listed["watch_id"], listed["name"], listed["provider"]) == (1, "klesiv", "geotiff")
    assert listed["every_s"] == 43200 and listed["sources"] == [str(folder)]
    assert listed["region"]["type"] == "Polygon" and listed["tiles_enqueued"] == 0
    assert cli.main(["watch", "list"]) == 0
    assert "klesiv" in capsys.readouterr().out
    assert cli.main(["watch", "remove", "1"]) == 0
    assert cli.main(["watch", "remove", "1"]) == 2
    assert "no watch 1" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--provider", "stac", "--source", "UNREACHABLE"], "is unreachable"),
        (
            ["--provider", "geotiff", "--source", f"{MISSING}/x.tif"],
            f"{MISSING}/x.tif: no such file",
        ),
        (
            ["--provider", "stac", "--source", "http://127.0.0.1:1/", "--every", "daily"],
            "cadence 'daily'",
        ),
        (  # the source policy (#26 defect 8): not listed, so never listed with the keys
            ["--provider", "geotiff", "--source", "s3://other-tenant/ortho/"],
            "source s3://other-tenant/ortho/ refused: bucket 'other-tenant' is not in "
            "AMBERSCAN_SOURCE_ALLOWED_BUCKETS",
        ),
        (
            ["--provider", "stac", "--source", "https://169.254.169.254/latest/catalog.json"],
            "source https://169.254.169.254/latest/catalog.json refused: 169.254.169.254 is "
            "link-local and not in AMBERSCAN_SOURCE_ALLOWED_HOSTS",
        ),
    ],
)
def test_bad_watches_are_refused(env: Path, extra: list[str], message: str, capsys) -> None:
    extra = [f"http://127.0.0.1:{free_port()}/" if a == "UNREACHABLE" else a for a in extra]
    assert cli.main(["watch", "add", str(env), *extra]) == 2
    assert message in capsys.readouterr().err


def test_tile_servers_are_not_watchable(env: Path, capsys) -> None:
    with pytest.raises(SystemExit):  # argparse: --provider choices are the watchable ones
        cli.main(["watch", "add", str(env), "--provider", "xyz"])
    assert "invalid choice: 'xyz'" in capsys.readouterr().err


def test_cli_names_the_watchable_providers() -> None:
    from amberscan.cli import watch as command
    from amberscan.watch.core import WATCHABLE

    assert command.WATCHABLE == WATCHABLE

"""`amberscan export` as a user runs it, against the real stack: the files it writes read back
with GDAL's own reader (pyogrio), the web API's filters under the same names."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from pathlib import Path

import pyogrio
import pytest

from amberscan.common.blobstore import BlobStore
from amberscan.common.db import Database
from amberscan.common.settings import Settings, environment
from amberscan.web.exporting import FIELDS
from tests.web.conftest import TILES, seed

pytestmark = pytest.mark.stack


def export(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "amberscan.cli", "export", *args],
        env={**os.environ, **environment(settings)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


async def test_export_writes_every_format_with_the_filters(
    stack_settings: Settings, database: Database, shared_data: Path, tmp_path: Path
) -> None:
    await seed(database, BlobStore(stack_settings.s3), shared_data, demo=True)
    (flagged,) = (await database.fetch("SELECT count(*) FROM detections WHERE flagged"))[0]
    (damaged,) = (
        await database.fetch(
            "SELECT count(*) FROM detections WHERE flagged AND positives_geom IS NOT NULL"
        )
    )[0]
    assert 0 < flagged < len(TILES)

    done = export(stack_settings, str(tmp_path / "all.gpkg"))
    assert done.returncode == 0, done.stderr
    assert f"wrote {len(TILES)} tiles, {damaged} damaged_areas" in done.stderr
    for layer, count in (("tiles", len(TILES)), ("damaged_areas", damaged)):
        info = pyogrio.read_info(tmp_path / "all.gpkg", layer=layer)
        assert info["features"] == count and list(info["fields"]) == [n for n, _ in FIELDS]

    done = export(stack_settings, str(tmp_path / "flagged.fgb"), "--flagged")
    assert done.returncode == 0, done.stderr
    info = pyogrio.read_info(tmp_path / "flagged.fgb")
    assert info["features"] == flagged and info["geometry_type"] == "Polygon"

    done = export(
        stack_settings, "-", "--format", "csv", "--layer", "damaged_areas", "--year", "2014"
    )
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    (in_2014,) = (
        await database.fetch(
            "SELECT count(*) FROM detections WHERE flagged AND positives_geom IS NOT NULL"
            " AND left(imagery_date, 4) = '2014'"
        )
    )[0]
    assert len(rows) == in_2014 and all(r["WKT"].startswith("MULTIPOLYGON") for r in rows)


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["out.txt"], "name the format with --format"),
        (["-", "--format", "gpkg"], "written to a file, not to standard output"),
        (["x.csv", "--year", "20x4"], "year='20x4'"),
        (["x.csv", "--region", "/nonexistent/area.geojson"], "--region /nonexistent/area.geojson"),
    ],
)
def test_export_refuses_in_one_line(args: list[str], problem: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "amberscan.cli", "export", *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and problem in done.stderr, done.stderr


def test_the_commands_choices_are_the_web_apps() -> None:
    from amberscan.cli import export as command
    from amberscan.common.changes import CHANGE_FILTERS
    from amberscan.web import exporting
    from amberscan.web.core import REVIEW_STATES

    assert command.LAYERS == exporting.LAYERS
    assert command.FORMATS == tuple(exporting.FORMATS)
    assert command.REVIEWS == REVIEW_STATES
    assert command.CHANGES == tuple(CHANGE_FILTERS)

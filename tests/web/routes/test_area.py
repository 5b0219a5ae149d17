"""Sample-based area estimates against the real stack (#28): the design stored in PostGIS,
reproducible and resumed, verdicts and superpixel marks recorded through the API, the estimate
per reporting unit from the API and from `amberscan area --json`, the same figures."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from amberscan.cli import area as area_command
from amberscan.geo.tiles import Tile, pixel_area_m2
from amberscan.model.area import Observation, Stratum, estimate
from amberscan.sink.core import UPSERT_DETECTION, detection_row
from amberscan.v1 import messages_pb2 as pb
from tests.web.client import AUTH, get, post
from tests.web.conftest import MODEL, TILES, Seeded

pytestmark = pytest.mark.stack

# 40 more zoom-16 tiles west of the seeded four: every 4th flagged, every 4th (offset 1) an
# unflagged tile with a high score, the rest low.
GRID = [Tile(37600 + i % 10, 22000 + i // 10, 16) for i in range(40)]
KIND = ["flagged" if i % 4 == 0 else "high score" if i % 4 == 1 else "rest" for i in range(40)]


def region_of(tiles: list[Tile]) -> tuple[float, float, float, float]:
    boxes = [t.bounds() for t in tiles]
    return (
        min(b[0] for b in boxes) - 1e-4,
        min(b[1] for b in boxes) - 1e-4,
        max(b[2] for b in boxes) + 1e-4,
        max(b[3] for b in boxes) + 1e-4,
    )


REGION = region_of(GRID + [t for t, _, _ in TILES.values()])
# Two reporting units splitting the region at the grid's middle column.
SPLIT = (GRID[5].bounds()[0] + GRID[4].bounds()[2]) / 2


def box(west: float, south: float, east: float, north: float) -> dict[str, Any]:
    ring = [[west, south], [east, south], [east, north], [west, north], [west, south]]
    return {"type": "Polygon", "coordinates": [ring]}


UNITS = {
    "type": "FeatureCollection",
    "features": [
        {
            "type": "Feature",
            "properties": {"name": "west"},
            "geometry": box(*REGION[:2], SPLIT, REGION[3]),
        },
        {"type": "Feature", "properties": {"name": "east"}, "geometry": box(SPLIT, *REGION[1:])},
    ],
}


async def add_grid(seeded: Seeded) -> None:
    for i, (tile, kind) in enumerate(zip(GRID, KIND, strict=True)):
        top = {"flagged": 0.9, "high score": 0.5, "rest": 0.1}[kind]
        detection = pb.Detection(
            tile_id=tile.quadkey,
            scan_id="scan-area",
            tile=pb.TileCoord(x=tile.x, y=tile.y, z=tile.z),
            provider="demo",
            imagery_date="2014-10-11",
            flagged=kind == "flagged",
            positives=3 if kind == "flagged" else 0,
            segment_count=20,
            min_positives=2,
            hectares=0.5 + 0.1 * i if kind == "flagged" else 0.0,
            tile_geojson=json.dumps(tile.polygon()),
            scores=[top] + [0.05] * 19,
            models=pb.ModelVersions(classifier=MODEL, backbone="efficientnet_lite0@1"),
            demo=True,
        )
        async with seeded.db.pool.connection() as conn:
            await conn.execute(UPSERT_DETECTION.encode(), detection_row(detection))


def truth(tile_id: str, stratum: str, k: int) -> str:
    """The verdict the test's reviewer gives: flagged tiles mostly mining, a few omissions."""
    mining = {"flagged": k % 5 != 0, "high score": k % 3 == 0, "rest": k % 7 == 0}
    return "confirmed" if mining[stratum.split(" / ")[0]] else "rejected"


async def stored(seeded: Seeded, design_id: int) -> dict[str, dict[str, Any]]:
    rows = await seeded.db.fetch(
        "SELECT tile_id, stratum, mapped, tile_ha, damaged_ha, position FROM area_tiles"
        " WHERE design_id = %s",
        design_id,
    )
    keys = ("stratum", "mapped", "tile_ha", "damaged_ha", "position")
    return {str(r[0]): dict(zip(keys, r[1:], strict=True)) for r in rows}


async def review(server: str, tile: dict[str, Any], verdict: str) -> None:
    body = {
        "tile_id": tile["tile_id"],
        "imagery_date": tile["imagery_date"],
        "model_version": tile["model_version"],
        "verdict": verdict,
        "reviewer": "tester",
    }
    status, answer = await post(f"{server}/api/reviews", body, AUTH)
    assert status == 200, answer


async def test_design_verdicts_and_estimate_per_unit(
    server: str, seeded: Seeded, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    await add_grid(seeded)
    bbox = ",".join(str(v) for v in REGION)
    body = {"bbox": bbox, "model": MODEL, "n": 30, "seed": 7, "reviewer": "tester"}
    status, design = await post(f"{server}/api/area/designs", body, AUTH)
    assert status == 201, design
    population = await stored(seeded, design["id"])
    assert len(population) == 44
    by_stratum = {s["name"]: s for s in design["strata"]}
    # The seeded tiles: two flagged, two low-scoring; n = 30 shared out evenly, 10 a stratum.
    assert {k: (v["tiles"], v["sampled"]) for k, v in by_stratum.items()} == {
        "flagged": (12, 10),
        "high score": (10, 10),
        "rest": (22, 10),
    }
    assert sorted(t["position"] for t in population.values() if t["position"] is not None) == list(
        range(30)
    )
    assert design["blind"] and all("flagged" not in t for t in design["tiles"])
    assert design["estimate"]["mining_ha"] is None  # nothing reviewed yet
    order = [t["tile_id"] for t in design["tiles"]]

    # Drawing it again resumes it; drawn afresh with the same seed it is the same sample.
    status, again = await post(f"{server}/api/area/designs", {**body, "n": 5}, AUTH)
    assert status == 200 and again["id"] == design["id"] and again["sampled"] == 30
    await seeded.db.execute("DELETE FROM area_designs WHERE design_id = %s", design["id"])
    status, redrawn = await post(f"{server}/api/area/designs", body, AUTH)
    assert status == 201 and [t["tile_id"] for t in redrawn["tiles"]] == order
    design = redrawn
    population = await stored(seeded, design["id"])

    # One sampled seeded tile gets two superpixels marked mining: an area-weighted observation.
    seeded_ids = {d.tile_id for d in seeded.tiles.values()}
    marked_tile = next(t for t in design["tiles"] if t["tile_id"] in seeded_ids)
    for segment in (0, 1):
        status, _ = await post(
            f"{server}/api/labels",
            {
                **{k: marked_tile[k] for k in ("tile_id", "imagery_date", "model_version")},
                "segment": segment,
                "label": "mining",
                "reviewer": "tester",
            },
            AUTH,
        )
        assert status == 200
    verdicts = {}
    for k, t in enumerate(design["tiles"]):
        verdict = (
            "confirmed"
            if t is marked_tile
            else truth(t["tile_id"], population[t["tile_id"]]["stratum"], k)
        )
        verdicts[t["tile_id"]] = verdict
        await review(server, t, verdict)
    status, detail = await get(
        f"{server}/api/tiles/{marked_tile['tile_id']}",
        imagery_date=marked_tile["imagery_date"],
        model=marked_tile["model_version"],
    )
    assert status == 200
    pixels = sum(sp["area_px"] for sp in detail["superpixels"] if sp["index"] in (0, 1))
    marked_ha = (
        pixels * pixel_area_m2(Tile.from_quadkey(marked_tile["tile_id"]), detail["size"][0]) / 1e4
    )

    status, report = await get(f"{server}/api/area/designs/{design['id']}")
    assert status == 200 and report["complete"] and report["reviewed"] == 30
    assert report["observations"] == {"area_weighted": 1, "binary": 29}
    refs = {t["tile_id"]: t["reference_ha"] for t in report["tiles"]}
    assert refs[marked_tile["tile_id"]] == pytest.approx(marked_ha, abs=1e-4)

    # The same figures from the estimator itself, on the stored population and the verdicts.
    def reference(tile_id: str) -> float:
        if tile_id == marked_tile["tile_id"]:
            return marked_ha
        return population[tile_id]["tile_ha"] if verdicts[tile_id] == "confirmed" else 0.0

    strata = [
        Stratum(
            name,
            sum(1 for t in population.values() if t["stratum"] == name),
            sum(t["tile_ha"] for t in population.values() if t["stratum"] == name),
        )
        for name in by_stratum
    ]
    sampled = [tid for tid, t in population.items() if t["position"] is not None]
    expected = estimate(
        strata,
        [
            Observation(
                population[tid]["stratum"],
                population[tid]["mapped"],
                reference(tid),
                population[tid]["tile_ha"],
            )
            for tid in sampled
        ],
    )
    got = report["estimate"]
    assert expected.area is not None and expected.area.se is not None and expected.area.se > 0
    assert got["mining_ha"]["estimate"] == pytest.approx(expected.area.estimate, abs=1e-3)
    assert got["mining_ha"]["se"] == pytest.approx(expected.area.se, abs=1e-3)
    assert got["mining_ha"]["low"] < got["mining_ha"]["estimate"] < got["mining_ha"]["high"]
    assert expected.users is not None and expected.producers is not None
    assert got["users_accuracy"]["estimate"] == pytest.approx(expected.users.estimate, abs=1e-4)
    assert got["producers_accuracy"]["estimate"] == pytest.approx(
        expected.producers.estimate, abs=1e-4
    )
    flagged_damage = sum(t["damaged_ha"] for t in population.values() if t["mapped"])
    assert got["mapped_ha"] == pytest.approx(flagged_damage, abs=1e-3) and flagged_damage > 0

    # Per reporting unit: the two halves add up to the region.
    status, per_unit = await post(
        f"{server}/api/area/designs/{design['id']}/estimate", {"units": UNITS}, AUTH
    )
    assert status == 200, per_unit
    west, east = per_unit["units"]
    assert (west["name"], east["name"]) == ("west", "east")
    assert west["tiles"] + east["tiles"] == 44 and west["reviewed"] + east["reviewed"] == 30
    assert west["mining_ha"]["estimate"] + east["mining_ha"]["estimate"] == pytest.approx(
        got["mining_ha"]["estimate"], abs=1e-3
    )
    assert west["mapped_ha"] + east["mapped_ha"] == pytest.approx(got["mapped_ha"], abs=1e-3)

    # `amberscan area --json` gives the same document's figures.
    units_file = tmp_path / "units.geojson"
    units_file.write_text(json.dumps(UNITS))
    parser = argparse.ArgumentParser()
    area_command.add_parser(parser.add_subparsers())
    args = parser.parse_args(
        ["area", "--design", str(design["id"]), "--units", str(units_file), "--json"]
    )
    assert await asyncio.to_thread(area_command.run, args, seeded.settings) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["estimate"] == per_unit["estimate"]
    assert printed["units"] == per_unit["units"]
    # And drawing through the command resumes the same design.
    args = parser.parse_args(["area", "--bbox", bbox, "--model", MODEL, "--n", "30", "--seed", "7"])
    assert await asyncio.to_thread(area_command.run, args, seeded.settings) == 0
    text = capsys.readouterr().out
    assert f"design {design['id']}:" in text and "30 of 30 tiles reviewed" in text
    assert "mining " in text and "95 % CI" in text


async def test_design_refusals(server: str, seeded: Seeded) -> None:
    status, answer = await post(f"{server}/api/area/designs", {"n": 10}, AUTH)
    assert status == 400 and "region" in answer["error"]
    bbox = ",".join(str(v) for v in REGION)
    status, answer = await post(f"{server}/api/area/designs", {"bbox": bbox}, AUTH)
    assert status == 400 and "n" in answer["error"]
    status, answer = await post(
        f"{server}/api/area/designs", {"bbox": "0,0,0.01,0.01", "n": 5}, AUTH
    )
    assert status == 400 and "no detection" in answer["error"]
    status, _ = await post(f"{server}/api/area/designs", {"bbox": bbox, "n": 5})
    assert status in (401, 403)  # a write needs the token
    status, _ = await get(f"{server}/api/area/designs/999999")
    assert status == 404
    status, answer = await post(
        f"{server}/api/area/designs/1/estimate", {"units": {"type": "Point"}}, AUTH
    )
    assert status == 400 and "units" in answer["error"]


async def test_evidence_pack_of_a_confirmed_site_opens_offline(server: str, seeded: Seeded) -> None:
    import io
    import re
    import zipfile

    import aiohttp
    from PIL import Image

    first, second = seeded.tiles["positive1"], seeded.tiles["positive2"]  # adjacent, flagged
    url = f"{server}/api/sites/{first.tile_id}/evidence.zip"
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        assert r.status == 400 and "confirm" in (await r.json())["error"]
    async with aiohttp.ClientSession() as s:
        async with s.get(
            f"{server}/api/sites/{seeded.tiles['negative1'].tile_id}/evidence.zip"
        ) as r:
            assert r.status == 400 and "not flagged" in (await r.json())["error"]
    await review(
        server,
        {"tile_id": first.tile_id, "imagery_date": first.imagery_date, "model_version": MODEL},
        "confirmed",
    )
    bbox = "26.5,50.7,26.8,50.9"
    status, design = await post(f"{server}/api/area/designs", {"bbox": bbox, "n": 4}, AUTH)
    assert status == 201 and design["sampled"] == 4  # a census of the four tiles
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        assert r.status == 200 and r.content_type == "application/zip"
        assert first.tile_id in r.headers["Content-Disposition"]
        data = await r.read()
    archive = zipfile.ZipFile(io.BytesIO(data))
    root = f"site-{first.tile_id}/"
    names = set(archive.namelist())
    manifest = json.loads(archive.read(root + "manifest.json"))
    assert set(manifest["tiles"]) == {first.tile_id, second.tile_id}
    west, south, east, north = manifest["bounds"]
    lon, lat = manifest["centre"]
    assert west < lon < east and south < lat < north
    dates = {(d["tile_id"], d["imagery_date"]) for d in manifest["detections"]}
    assert dates == {(first.tile_id, first.imagery_date), (second.tile_id, second.imagery_date)}
    judged = next(d for d in manifest["detections"] if d["tile_id"] == first.tile_id)
    assert judged["review"]["verdict"] == "confirmed" and judged["review"]["reviewer"] == "tester"
    assert (
        judged["review"]["reviewed_at"] and judged["review"]["history"][-1]["action"] == "confirmed"
    )
    assert judged["model_version"] == MODEL and judged["scores"] and judged["hectares"] > 0
    for d in manifest["detections"]:
        image = Image.open(io.BytesIO(archive.read(root + d["image"])))
        damage = Image.open(io.BytesIO(archive.read(root + d["damage_image"])))
        assert image.size == damage.size and image.size[0] > 0
        assert image.convert("RGB").tobytes() != damage.convert("RGB").tobytes()  # outlined
    damaged = json.loads(archive.read(root + "damaged_area.geojson"))
    assert len(damaged["features"]) == 2
    assert all(f["geometry"]["type"] == "MultiPolygon" for f in damaged["features"])
    assert manifest["mapped_ha_by_vintage"] == {"2014": first.hectares, "2015": second.hectares}
    [estimate_of_site] = manifest["area_estimates"]
    assert estimate_of_site["design"] == design["id"]
    assert estimate_of_site["estimate"]["mapped_ha"] == pytest.approx(
        first.hectares + second.hectares
    )
    page = archive.read(root + "index.html").decode()
    # Offline: no script, nothing fetched from elsewhere; every image it shows is in the pack.
    assert "<script" not in page and not re.search(r"(src|href)=\"(https?:)?//", page)
    shown = set(re.findall(r'src="([^"]+)"', page))
    assert shown and {root + s for s in shown} <= names


async def test_user_strata_and_a_target_standard_error(server: str, seeded: Seeded) -> None:
    """The user's strata split the map's; a target SE in hectares sets the sample size by
    eq. 13 on the design's own strata; the design is not blind when asked not to be."""
    from amberscan.model.area import plan

    await add_grid(seeded)
    bbox = ",".join(str(v) for v in REGION)
    body = {"bbox": bbox, "target_se_ha": 40.0, "strata": UNITS, "blind": False, "seed": 3}
    status, design = await post(f"{server}/api/area/designs", body, AUTH)
    assert status == 201, design
    counts = {s["name"]: s["tiles"] for s in design["strata"]}
    expected_counts: dict[str, int] = {}
    for i, kind in enumerate(KIND):  # the grid's first five columns are west of the split
        name = f"{kind} / {'west' if i % 10 < 5 else 'east'}"
        expected_counts[name] = expected_counts.get(name, 0) + 1
    expected_counts["flagged / east"] += 2  # the seeded tiles, east of the grid
    expected_counts["rest / east"] += 2
    assert counts == expected_counts and len(counts) == 6
    strata = [Stratum(s["name"], s["tiles"], s["area_ha"]) for s in design["strata"]]
    region_ha = sum(s["area_ha"] for s in design["strata"])
    anticipated = [s["anticipated"] for s in design["strata"]]
    expected = plan(strata, anticipated, target_se=40.0 / region_ha, minimum=30)
    assert [s["sampled"] for s in design["strata"]] == expected
    assert design["sampled"] == sum(expected) < 44
    population = await stored(seeded, design["id"])
    for t in design["tiles"]:  # not blind: each tile's stratum and flag are shown
        assert t["stratum"] == population[t["tile_id"]]["stratum"]
        assert t["flagged"] == population[t["tile_id"]]["mapped"]


LATER = "2016-05-01"
# The grid's 2016 vintage: the 2014 high-score tiles newly flagged; half the 2014 flagged tiles
# flagged again, half no longer.
FLAGGED_2016 = [(i % 4 == 0 and i % 8 != 0) or i % 4 == 1 for i in range(40)]


async def add_later_vintage(seeded: Seeded) -> None:
    for i, tile in enumerate(GRID):
        flagged = FLAGGED_2016[i]
        detection = pb.Detection(
            tile_id=tile.quadkey,
            scan_id="scan-area-2016",
            tile=pb.TileCoord(x=tile.x, y=tile.y, z=tile.z),
            provider="demo",
            imagery_date=LATER,
            flagged=flagged,
            positives=3 if flagged else 0,
            segment_count=20,
            min_positives=2,
            hectares=0.4 + 0.1 * i if flagged else 0.0,
            tile_geojson=json.dumps(tile.polygon()),
            scores=[0.9 if flagged else 0.1] + [0.05] * 19,
            models=pb.ModelVersions(classifier=MODEL, backbone="efficientnet_lite0@1"),
            demo=True,
        )
        async with seeded.db.pool.connection() as conn:
            await conn.execute(UPSERT_DETECTION.encode(), detection_row(detection))


async def test_new_damage_between_two_vintages(
    server: str, seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    """A change design (#28): the tiles with a verdict in both vintages on the change map's
    strata, each judged by its reviews at both dates; the estimate of the new damage is the
    estimator's on those observations, from the API, the design list and `amberscan area`."""
    await add_grid(seeded)
    await add_later_vintage(seeded)
    bbox = ",".join(str(v) for v in REGION)
    body = {"bbox": bbox, "model": MODEL, "year_before": "2014", "year": "2016", "n": 15}
    for bad, problem in (({"year": ""}, "two different vintages"), ({"year": "2014"}, "two")):
        status, answer = await post(f"{server}/api/area/designs", {**body, **bad}, AUTH)
        assert status == 400 and problem in answer["error"], answer
    status, design = await post(f"{server}/api/area/designs", body, AUTH)
    assert status == 201, design
    assert (design["kind"], design["year_before"], design["year"]) == ("change", "2014", "2016")
    population = await stored(seeded, design["id"])
    # The grid only: each seeded tile has one vintage of the two.
    assert set(population) == {t.quadkey for t in GRID}
    kind_of = {t.quadkey: (KIND[i] == "flagged", FLAGGED_2016[i]) for i, t in enumerate(GRID)}
    for tile_id, t in population.items():
        before, after = kind_of[tile_id]
        assert t["stratum"] == ("new" if after and not before else "both" if after else "neither")
        assert t["mapped"] == (after and not before)
    assert {s["name"]: (s["tiles"], s["sampled"]) for s in design["strata"]} == {
        "new": (10, 5),
        "both": (5, 5),
        "neither": (25, 5),
    }
    # A vintage design of the same region and model is another design.
    status, vintage = await post(
        f"{server}/api/area/designs", {"bbox": bbox, "model": MODEL, "year": "2016", "n": 6}, AUTH
    )
    assert status == 201 and vintage["id"] != design["id"] and vintage["kind"] == "vintage"

    tiles = design["tiles"]
    assert all(t["imagery_date"] == LATER and t["imagery_date_before"] for t in tiles)
    truth: dict[str, float] = {}
    left_open = None
    for k, t in enumerate(tiles):
        stratum = population[t["tile_id"]]["stratum"]
        later = {"new": k % 2 == 0, "both": True, "neither": k % 5 == 0}[stratum]
        earlier = stratum == "both"
        await review(server, t, "confirmed" if later else "rejected")
        if later and left_open is None and not earlier:
            left_open = t  # damage at the later date, the earlier one not judged yet
            continue
        if later:
            await review(
                server,
                {**t, "imagery_date": t["imagery_date_before"]},
                "confirmed" if earlier else "rejected",
            )
        truth[t["tile_id"]] = population[t["tile_id"]]["tile_ha"] if later and not earlier else 0.0
    assert left_open is not None
    status, partial = await get(f"{server}/api/area/designs/{design['id']}")
    assert status == 200 and partial["reviewed"] == 14
    shown = {t["tile_id"]: t for t in partial["tiles"]}
    assert shown[left_open["tile_id"]]["review"] == "unreviewed"
    assert shown[left_open["tile_id"]]["review_before"] == "unreviewed"
    await review(
        server, {**left_open, "imagery_date": left_open["imagery_date_before"]}, "rejected"
    )
    truth[left_open["tile_id"]] = population[left_open["tile_id"]]["tile_ha"]

    status, report = await get(f"{server}/api/area/designs/{design['id']}")
    assert status == 200 and report["complete"] and report["reviewed"] == 15
    reviews = {t["tile_id"]: t["review"] for t in report["tiles"]}
    assert reviews == {k: "new" if v > 0 else "not new" for k, v in truth.items()}
    strata = [
        Stratum(
            name,
            sum(1 for t in population.values() if t["stratum"] == name),
            sum(t["tile_ha"] for t in population.values() if t["stratum"] == name),
        )
        for name in ("new", "both", "neither")
    ]
    expected = estimate(
        strata,
        [
            Observation(
                population[tid]["stratum"],
                population[tid]["mapped"],
                ha,
                population[tid]["tile_ha"],
            )
            for tid, ha in truth.items()
        ],
    )
    got = report["estimate"]
    assert expected.area is not None and expected.area.se is not None and expected.area.se > 0
    assert got["mining_ha"]["estimate"] == pytest.approx(expected.area.estimate, abs=1e-3)
    assert got["mining_ha"]["se"] == pytest.approx(expected.area.se, abs=1e-3)
    assert expected.users is not None and expected.producers is not None
    assert got["users_accuracy"]["estimate"] == pytest.approx(expected.users.estimate, abs=1e-4)
    assert got["producers_accuracy"]["estimate"] == pytest.approx(
        expected.producers.estimate, abs=1e-4
    )
    new_mapped = sum(t["damaged_ha"] for t in population.values() if t["stratum"] == "new")
    assert got["mapped_ha"] == pytest.approx(new_mapped, abs=1e-3) and new_mapped > 0

    # Listed by kind and later vintage; the map's panel asks this way.
    status, listed = await get(f"{server}/api/area/designs", year="2016", kind="change")
    assert status == 200 and [d["id"] for d in listed["designs"]] == [design["id"]]
    assert listed["designs"][0]["estimate"] == got and "tiles" not in listed["designs"][0]
    status, listed = await get(f"{server}/api/area/designs", year="2016")
    assert [d["id"] for d in listed["designs"]] == [vintage["id"], design["id"]]
    status, listed = await get(f"{server}/api/area/designs", year="2015")
    assert listed["designs"] == []

    # `amberscan area` resumes it and prints the same figures.
    parser = argparse.ArgumentParser()
    area_command.add_parser(parser.add_subparsers())
    args = parser.parse_args(
        ["area", "--bbox", bbox, "--model", MODEL, "--year-before", "2014", "--year", "2016"]
        + ["--n", "15", "--json"]
    )
    assert await asyncio.to_thread(area_command.run, args, seeded.settings) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["id"] == design["id"] and printed["estimate"] == got
    args = parser.parse_args(["area", "--design", str(design["id"])])
    assert await asyncio.to_thread(area_command.run, args, seeded.settings) == 0
    assert "new damage from 2014 to 2016" in capsys.readouterr().out


# The area tables as a database made before change designs had them (issue 28, items 1-4).
OLD_AREA_TABLES = """
DROP TABLE area_tiles; DROP TABLE area_designs;
CREATE TABLE area_designs (
    design_id bigserial PRIMARY KEY, region_key text NOT NULL,
    region geometry(Geometry, 4326) NOT NULL, year text NOT NULL, model_version text NOT NULL,
    seed bigint NOT NULL, high_score double precision NOT NULL,
    blind boolean NOT NULL DEFAULT true, strata jsonb NOT NULL, created_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(), UNIQUE (region_key, year, model_version)
);
CREATE TABLE area_tiles (
    design_id bigint NOT NULL REFERENCES area_designs ON DELETE CASCADE,
    tile_id text NOT NULL, imagery_date text NOT NULL, model_version text NOT NULL,
    stratum text NOT NULL, mapped boolean NOT NULL, top_score real NOT NULL,
    tile_ha double precision NOT NULL, damaged_ha double precision NOT NULL,
    centre geometry(Point, 4326) NOT NULL, position integer, PRIMARY KEY (design_id, tile_id)
);
INSERT INTO area_designs (region_key, region, year, model_version, seed, high_score, strata,
                          created_by)
VALUES ('k', ST_GeomFromText('POINT(26 50)', 4326), '2016', 'm', 1, 0.3, '[]', 'old');
"""


async def test_a_database_from_before_change_designs_takes_them(database: Any) -> None:
    """The schema adds the kind and the earlier vintage to an existing `area_designs` (its
    designs become vintage designs) and keys designs by them, so a change design of the same
    region, vintage and model can be stored beside the vintage one; one of each, still."""
    from psycopg import errors

    async with database.pool.connection() as conn:
        await conn.execute(OLD_AREA_TABLES.encode())
    await database.migrate()
    rows = await database.fetch("SELECT kind, year_before FROM area_designs")
    assert rows == [("vintage", "")]
    insert = (
        "INSERT INTO area_designs (region_key, region, year, model_version, seed, high_score,"
        " strata, created_by, kind, year_before) VALUES ('k', ST_GeomFromText('POINT(26 50)',"
        " 4326), '2016', 'm', 1, 0.3, '[]', 'new', %s, %s)"
    )
    await database.execute(insert, "change", "2014")
    with pytest.raises(errors.UniqueViolation):
        await database.execute(insert, "change", "2014")
    with pytest.raises(errors.UniqueViolation):
        await database.execute(insert, "vintage", "")
    columns = await database.fetch(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'area_tiles'"
        " AND table_schema = current_schema() AND column_name = 'imagery_date_before'"
    )
    assert columns == [("imagery_date_before",)]

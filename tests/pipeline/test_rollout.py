"""A model rollout mid-scan on the real stack (issue 23): a new classifier *and* a new backbone
version are rolled out while a scan's tiles are in flight, the classifier is restarted and the
feature stage scaled from one copy to two meanwhile; a second scan follows on the new models.

Every stage runs as its own `amberscan serve` process; the model server runs in the test, on a
copy of the default backbone with TF Serving's "latest 2" policy and a file-system poll, so the
new version (2) is loaded beside the one the current classifier needs (1). Version 2 is the same
network as version 1 (its files copied): what is rolled out is a new version to pair, and the
test checks the pairing by the labels on every row, and the scores by equality.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from amberscan import scanning
from amberscan.common import registry, topics
from amberscan.common.db import Database
from amberscan.common.settings import Settings, replace
from amberscan.model.classifier import Classifier
from amberscan.modelserver.server import ModelServer, ServerOptions
from amberscan.tiler import demo
from tests.pipeline.test_demo_scan import STAGES
from tests.pipeline.test_faults import Services, has_records, prepare, tile_server, wait_for
from tests.streams import group_members

pytestmark = pytest.mark.stack


@contextlib.asynccontextmanager
async def versioned_server(settings: Settings, folder: Path) -> AsyncIterator[ModelServer]:
    """A model server on a copy of the default backbone as version 1, with TF Serving's
    "latest 2" policy and a fast file-system poll (`add_version` rolls out the next)."""
    name = settings.model_server.backbone_name
    served = Path(settings.serving.model_dir) / name
    newest = max(int(p.name) for p in served.iterdir() if p.name.isdigit())
    shutil.copytree(served / str(newest), folder / name / "1")
    server = ModelServer(folder, name, "127.0.0.1:0", ServerOptions(keep_versions=2, poll_s=0.2))
    await server.start()
    polling = asyncio.ensure_future(server.poll_versions())
    try:
        yield server
    finally:
        polling.cancel()
        await server.stop(grace_s=0.5)


async def add_version(server: ModelServer, version: int) -> None:
    """Copy version 1 as `version` (staged, then renamed, as an export writes it) and wait until
    the server serves it beside the one before."""
    base = server.model_dir / server.name
    shutil.copytree(base / "1", base / f".{version}-staging")
    (base / f".{version}-staging").rename(base / str(version))
    deadline = time.monotonic() + 120
    while version not in server.servicer.models:
        assert time.monotonic() < deadline, f"version {version} never loaded"
        await asyncio.sleep(0.2)


async def test_a_classifier_and_backbone_rolled_out_mid_scan_fail_no_tile(
    stack_settings: Settings, shared_data: Path, tmp_path: Path
) -> None:
    name = stack_settings.model_server.backbone_name
    logs = tmp_path / "logs"
    logs.mkdir()
    async with versioned_server(stack_settings, tmp_path / "serving") as server:
        async with tile_server(shared_data) as url:
            settings = replace(
                stack_settings,
                imagery={"demo_tiles_url": url},
                model_server={"address": server.address},
            )
            await prepare(settings)
            first = Classifier.load(Path(settings.classifier.path))
            first.metadata["backbone"] = f"{name}/1"  # this server's numbering
            first.metadata["version"] = "xgb-rollout-first"
            await registry.make_current(settings.s3, first, action="promote", by="test")
            # The new classifier, trained on backbone version 2 (the same network here).
            second = Classifier.from_json(first.to_json(), "copy")
            second.metadata["backbone"] = f"{name}/2"
            second.metadata["version"] = "xgb-rollout-second"

            services = Services(settings, logs)
            services.env |= {
                "AMBERSCAN_CLASSIFIER_REFRESH_S": "0.5",
                "AMBERSCAN_SEGMENTER_BATCH_SIZE": "1",
                "AMBERSCAN_FEATURE_BATCH_WAIT_MS": "500",
            }
            try:
                for stage in STAGES:
                    if stage != "segmenter":
                        services.start(stage, stage)
                async with Database(settings.database) as db:
                    before = demo.demo_scan_request()
                    expected = await scanning.submit(settings, db, before)
                    # Every tile of the first scan is on the bus, stamped with the first models,
                    # before any is segmented: the rollout lands with all of them in flight.
                    await wait_for(
                        "the first scan's 8 tiles",
                        lambda: has_records(settings, topics.TILES, expected),
                        services,
                        300,
                    )
                    services.start("segmenter", "segmenter")
                    await wait_for(
                        "a first detection",
                        lambda: rows_at_least(db, 1),
                        services,
                        300,
                    )
                    # The rollout: the new backbone version appears, the server loads it beside
                    # the old one, and the new classifier (paired with it) is promoted.
                    await add_version(server, 2)
                    assert sorted(server.servicer.models) == [1, 2]
                    await registry.make_current(settings.s3, second, action="promote", by="test")
                    # A scan submitted now is scored by the new models.
                    after = demo.demo_scan_request()
                    after.rescan = True
                    await scanning.submit(settings, db, after)
                    # A restart of the classifier and a second feature copy, mid-scan.
                    services.kill("classifier")
                    services.start("classifier", "classifier")
                    services.start("feature-2", "feature")

                    async def two_feature_copies() -> bool:
                        members = await group_members(settings, "feature")
                        return len(members) == 2 and all(members.values())

                    await wait_for("two feature copies", two_feature_copies, services, 120)
                    summaries = [
                        await scanning.follow(
                            db, scan.scan_id, expected, timeout_s=600, progress=False
                        )
                        for scan in (before, after)
                    ]
                    services.check_alive()
                    rows = await db.fetch(
                        "SELECT tile_id, imagery_date, model_version, backbone_version, scan_id, "
                        "scores FROM detections"
                    )
            finally:
                services.stop()
                async with Database(settings.database) as db:
                    await db.drop_schema()

    for summary in summaries:
        assert summary.complete and not summary.error, summary
        assert (summary.done, summary.failed) == (expected, 0), (summary.failures,)
    tiles = {t.quadkey for t in demo.demo_tiles()}
    keys = [(tile, date, model) for tile, date, model, *_ in rows]
    assert len(keys) == len(set(keys)) == 2 * expected  # one row per (tile, date, model)
    by_model: dict[str, dict[str, tuple[str, str, list[float]]]] = {}
    for tile, _, model, backbone, scan, scores in rows:
        by_model.setdefault(model, {})[tile] = (backbone, scan, scores)
    assert set(by_model) == {first.version, second.version}
    for model, backbone, scan in (
        (first.version, f"{name}/1", before.scan_id),
        (second.version, f"{name}/2", after.scan_id),
    ):
        assert set(by_model[model]) == tiles
        # Each tile was scored whole by one model, with the backbone that model was trained on.
        assert {(b, s) for b, s, _ in by_model[model].values()} == {(backbone, scan)}
    for tile in tiles:  # the same network and booster: the same scores
        assert by_model[first.version][tile][2] == pytest.approx(
            by_model[second.version][tile][2], abs=1e-4
        )


async def rows_at_least(db: Database, count: int) -> bool:
    return int((await db.fetch("SELECT count(*) FROM detections"))[0][0]) >= count

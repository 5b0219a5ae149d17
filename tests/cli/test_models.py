"""Model updates a user can trust (issue 23), as a user runs them against the real stack: `train`
makes candidates and serves nothing; `models promote` passes a candidate through the gate, which
refuses one trained on swapped labels; a promotion reaches a running classifier without a
restart; `rollback` serves the previous version again."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest

from amberscan.classifier.service import make_stage, registry_classifiers
from amberscan.common import registry, topics
from amberscan.common.settings import Settings, replace
from amberscan.common.topic_admin import ensure_topics
from amberscan.model.dataset import list_labelled
from amberscan.model.promotion import GATE_SHARE_RULE, in_gate_share
from amberscan.v1 import messages_pb2 as pb
from tests.cli.test_commands import run
from tests.streams import produce, read_all

pytestmark = pytest.mark.stack


def link_set(crops: list, root: Path, swap: bool = False) -> Path:  # type: ignore[type-arg]
    for crop in crops:
        label = 1 - crop.label if swap else crop.label
        folder = root / ("positive" if label else "negative")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / crop.path.name).symlink_to(crop.path)
    return root


def crops_of_tiles(shared_data: Path, mining_tiles: int, other_tiles: int) -> list:  # type: ignore[type-arg]
    """The real labelled crops of the first `mining_tiles` tiles with mining crops and the first
    `other_tiles` with other crops (every crop of a chosen tile)."""
    crops = list_labelled(shared_data / "superpixels")
    chosen: list = []  # type: ignore[type-arg]
    for label, tiles_wanted in ((1, mining_tiles), (0, other_tiles)):
        tiles: set[str] = set()
        for crop in crops:
            if crop.label == label and (crop.tile_id in tiles or len(tiles) < tiles_wanted):
                tiles.add(crop.tile_id)
                chosen.append(crop)
    return chosen


@pytest.fixture
def lifecycle_set(shared_data: Path, tmp_path: Path) -> tuple[Path, Path]:
    """Real crops of 150 tiles, a share of them in the gate share, and the same crops with
    their labels swapped."""
    chosen = crops_of_tiles(shared_data, 50, 100)
    assert sum(in_gate_share(c.tile_id) and c.label == 1 for c in chosen) >= 8
    return link_set(chosen, tmp_path / "real"), link_set(chosen, tmp_path / "swapped", swap=True)


def trained(args: list[str], settings: Settings) -> str:
    done = run(["train", *args, "--json"], settings)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "holding out the gate share" in done.stderr
    # Unless given one, it chooses its threshold on the calibration share.
    calibrating = "choosing the threshold on the calibration share" in done.stderr
    assert calibrating == ("--threshold" not in args)
    return str(json.loads(done.stdout.strip().splitlines()[-1])["version"])


async def scored_versions(settings: Settings, tile: str, count: int, total: int) -> set[str]:
    """Produce `count` unstamped feature vectors of `tile`; the classifier versions that scored
    them (read from the scores topic, which holds `total` scores once they are in)."""
    width = (await registry.load_current(settings.s3)).feature_dim
    rng = np.random.default_rng(len(tile))
    features = [
        pb.SuperpixelFeatures(
            ref=pb.SuperpixelRef(tile_id=tile, scan_id="s", segment_index=i, segment_count=count),
            vector=rng.random(width).tolist(),
            backbone=(await registry.load_current(settings.s3)).backbone,
        )
        for i in range(count)
    ]
    await produce(
        settings, topics.FEATURES, [(tile.encode(), f.SerializeToString()) for f in features]
    )
    records = await read_all(settings, topics.SCORES, expect=total)
    scores = [pb.SuperpixelScore.FromString(r.value) for r in records]
    return {s.models.classifier for s in scores if s.ref.tile_id == tile}


async def test_train_serves_nothing_the_gate_refuses_swapped_labels_and_a_promotion_reaches_a_running_classifier(  # noqa: E501
    stack_settings: Settings, lifecycle_set: tuple[Path, Path], tmp_path: Path
) -> None:
    settings = replace(stack_settings, classifier={"refresh_s": 0.5})
    real, swapped = lifecycle_set
    first = trained(["--data", str(real), "--out", str(tmp_path / "a.json")], settings)
    # A candidate only: nothing is current, nothing served changed.
    listing = json.loads(run(["models", "list", "--json"], settings).stdout)
    assert listing["current"] == ""
    assert [(m["version"], m["state"]) for m in listing["models"]] == [(first, "candidate")]
    promoted = run(["models", "promote", first, "--data", str(real), "--by", "test"], settings)
    assert promoted.returncode == 0, promoted.stdout + promoted.stderr[-2000:]
    assert "promoted as the first" in promoted.stdout
    assert await registry.current_version(settings.s3) == first

    # Training again (labels swapped between the classes) leaves the served model unchanged.
    bad = trained(["--data", str(swapped), "--out", str(tmp_path / "bad.json")], settings)
    assert await registry.current_version(settings.s3) == first
    refused = run(["models", "promote", bad, "--data", str(real)], settings)
    assert refused.returncode == 1, refused.stdout + refused.stderr[-2000:]
    assert first in refused.stdout and bad in refused.stdout  # both rows, side by side
    assert "REFUSED" in refused.stdout and "recall is lower" in refused.stdout
    assert await registry.current_version(settings.s3) == first

    # A classifier is running, with the first model.
    await ensure_topics(settings.kafka)
    stop = asyncio.Event()
    stage = asyncio.create_task(make_stage(settings, registry_classifiers(settings)).run(stop))
    try:
        assert await scored_versions(settings, "before", 4, 4) == {first}
        # A good candidate (the same fit as the current, its CV run with other folds) passes
        # the gate whatever the build: its scores equal the current's.
        good = trained(
            ["--data", str(real), "--out", str(tmp_path / "b.json"), "--folds", "4",
             "--threshold", str((await registry.load_current(settings.s3)).threshold)],
            settings,
        )  # fmt: skip
        assert good != first
        passed = run(
            ["models", "promote", good, "--data", str(real), "--by", "tester", "--json"], settings
        )
        assert passed.returncode == 0, passed.stdout + passed.stderr[-2000:]
        report = json.loads(passed.stdout.strip().splitlines()[-1])
        assert report["promoted"] and report["by"] == "tester" and not report["forced"]
        assert report["gate"]["passed"] and report["gate"]["recall_change"]["value"] == 0
        await asyncio.sleep(1.0)  # on purpose: past the classifier's 0.5 s refresh interval
        assert await scored_versions(settings, "after", 4, 8) == {good}  # no restart
    finally:
        stop.set()
        await asyncio.wait_for(stage, timeout=30)

    # Forcing the refused one is recorded with who forced it; a rollback undoes it.
    forced = run(
        ["models", "promote", bad, "--data", str(real), "--force", "--by", "ops", "--json"],
        settings,
    )
    assert forced.returncode == 0
    assert json.loads(forced.stdout.strip().splitlines()[-1])["forced"] is True
    back = run(["models", "rollback", "--by", "ops", "--json"], settings)
    assert back.returncode == 0, back.stderr[-2000:]
    assert await registry.current_version(settings.s3) == good
    shown = json.loads(run(["models", "show", bad, "--json"], settings).stdout)
    assert shown["state"] == "previous"
    assert [(m["action"], m["by"], m["forced"]) for m in shown["history"]] == [
        ("promote", "ops", True)
    ]
    assert shown["metadata"]["holdout"] == GATE_SHARE_RULE
    assert shown["metadata"]["data_fingerprint"]
    # Its threshold was chosen on its calibration share's out-of-fold scores, and says so.
    calibration = shown["metadata"]["calibration"]
    assert shown["metadata"]["threshold_source"] == "calibration share"
    assert calibration["threshold"] == shown["threshold"] and calibration["mining_crops"] > 0
    text = run(["models", "show", bad], settings).stdout
    assert "threshold chosen on the calibration share: out-of-fold precision" in text


async def test_a_candidate_for_a_new_backbone_version_is_judged_on_its_own_features(
    stack_settings: Settings, lifecycle_set: tuple[Path, Path], tmp_path: Path
) -> None:
    """A rollout's step 2: the server serves backbone versions 1 and 2; a candidate trained on
    version 2 is judged on version 2's features, the current model on version 1's (here the same
    network, so the same scores: the gate passes with no change)."""
    from tests.pipeline.test_rollout import add_version, versioned_server

    real, _ = lifecycle_set
    name = stack_settings.model_server.backbone_name
    async with versioned_server(stack_settings, tmp_path / "serving") as server:
        settings = replace(stack_settings, model_server={"address": server.address})

        async def cli(*args: str) -> str:
            done = await asyncio.to_thread(run, [*args, "--json"], settings)
            assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
            return done.stdout.strip().splitlines()[-1]

        first = json.loads(await cli("train", "--data", str(real), "--out", str(tmp_path / "1")))
        await cli("models", "promote", first["version"], "--data", str(real))
        await add_version(server, 2)
        second = json.loads(
            await cli(
                "train", "--data", str(real), "--out", str(tmp_path / "2"),
                "--threshold", str(first["threshold"]),
            )
        )  # fmt: skip
        assert (first["backbone"], second["backbone"]) == (f"{name}/1", f"{name}/2")
        report = json.loads(await cli("models", "promote", second["version"], "--data", str(real)))
    assert report["promoted"] and report["gate"]["passed"]
    gate = report["gate"]
    assert gate["recall_change"]["value"] == 0 and gate["precision_change"]["value"] == 0
    assert await registry.current_version(settings.s3) == second["version"]

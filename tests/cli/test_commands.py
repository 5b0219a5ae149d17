"""The `amberscan` commands as a user runs them: train, evaluate, detect-tile, on real data,
against the running model server and MinIO."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from amberscan.common.settings import Settings
from amberscan.model.classifier import Classifier
from amberscan.model.dataset import list_labelled
from amberscan.model.promotion import in_calibration_share, in_gate_share

pytestmark = pytest.mark.stack

AMBERSCAN = [sys.executable, "-m", "amberscan.cli"]


def run(args: list[str], settings: Settings) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "AMBERSCAN_S3_BUCKET": settings.s3.bucket,
        "AMBERSCAN_TOPIC_PREFIX": settings.kafka.topic_prefix,
        "AMBERSCAN_MODEL_SERVER": settings.model_server.address,
    }
    return subprocess.run(
        [*AMBERSCAN, *args], env=env, capture_output=True, text=True, timeout=600, check=False
    )


@pytest.fixture
def small_set(shared_data: Path, tmp_path: Path) -> Path:
    """30 real crops of 30 different tiles: 10 mining, 20 not."""
    crops = list_labelled(shared_data / "superpixels")
    chosen, tiles = [], set()
    for label, wanted in ((1, 10), (0, 20)):
        for crop in crops:
            # Outside the gate share, which `train` holds out (tests/cli/test_models.py).
            if in_gate_share(crop.tile_id):
                continue
            if crop.label == label and crop.tile_id not in tiles and wanted:
                chosen.append(crop)
                tiles.add(crop.tile_id)
                wanted -= 1
    # `train` chooses the threshold on the calibration share's mining crops: some are here.
    assert any(in_calibration_share(c.tile_id) and c.label for c in chosen)
    for crop in chosen:
        folder = tmp_path / "data" / ("positive" if crop.label else "negative")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / crop.path.name).symlink_to(crop.path)
    return tmp_path / "data"


def test_train_then_evaluate_on_a_small_real_subset(
    stack_settings: Settings, small_set: Path, tmp_path: Path
) -> None:
    out = tmp_path / "classifier.json"
    trained = run(
        ["train", "--data", str(small_set), "--out", str(out), "--folds", "3", "--json"],
        stack_settings,
    )
    assert trained.returncode == 0, trained.stderr[-2000:]
    report = json.loads(trained.stdout.strip().splitlines()[-1])
    assert report["crops"] == 30 and report["n_positive"] == 10 and report["n_negative"] == 20
    assert 0 <= report["recall"] <= 1 and 0.5 <= report["roc_auc"] <= 1
    assert "30 crops (10 mining) from 30 tiles" in trained.stderr
    classifier = Classifier.load(out)
    assert classifier.version == report["version"]
    assert classifier.metadata["backbone"] == report["backbone"]
    assert classifier.metadata["data_fingerprint"]

    evaluated = run(
        ["evaluate", "--model", str(out), "--data", str(small_set), "--json"], stack_settings
    )
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    metrics = json.loads(evaluated.stdout.strip().splitlines()[-1])
    for key in ("precision", "recall", "f1", "roc_auc", "pr_auc", "threshold"):
        assert 0 <= metrics[key] <= 1, key
    assert (metrics["n_positive"], metrics["n_negative"]) == (10, 20)
    assert metrics["threshold"] == pytest.approx(classifier.threshold)


@pytest.mark.parametrize("name", ["positive1", "negative1"])
def test_detect_tile_json_and_debug_png(
    stack_settings: Settings, shared_data: Path, tmp_path: Path, name: str
) -> None:
    png = tmp_path / "debug.png"
    result = run(
        [
            "detect-tile",
            str(shared_data / "tiles" / f"{name}.png"),
            "--json",
            "--debug-png",
            str(png),
        ],
        stack_settings,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["flagged"] is name.startswith("positive")
    scores = [s["score"] for s in report["superpixels"]]
    assert report["positives"] == sum(s >= report["threshold"] for s in scores)
    assert {"index", "bbox", "area_px", "score"} <= set(report["superpixels"][0])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_detect_tile_names_a_corrupt_image(stack_settings: Settings, tmp_path: Path) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    result = run(["detect-tile", str(bad)], stack_settings)
    assert result.returncode != 0
    assert "broken.png" in result.stderr and "Traceback" not in result.stderr

"""The default model (`make model`) on the four whole tiles of the 2018 data: the rule
"flag when more than K superpixels are positive" gets every tile right."""

from __future__ import annotations

from pathlib import Path

import pytest

from amberscan.common.settings import Settings
from amberscan.feature.extract import client_for
from amberscan.model.classifier import Classifier
from amberscan.model.detect import tile_result
from amberscan.vision.crops import crops_for
from amberscan.vision.imageio import read_image
from amberscan.vision.segment import segment

pytestmark = pytest.mark.stack


@pytest.mark.parametrize(
    ("name", "mining"),
    [("positive1", True), ("positive2", True), ("negative1", False), ("negative2", False)],
)
async def test_default_model_classifies_the_shared_tiles(
    base_settings: Settings, shared_data: Path, name: str, mining: bool
) -> None:
    path = Path(base_settings.classifier_path)
    if not path.exists():
        pytest.fail(f"no classifier at {path}: build the default model with `make model`")
    classifier = Classifier.load(path)
    image = read_image(shared_data / "tiles" / f"{name}.png")
    segmentation = segment(image)
    async with client_for(base_settings) as client:
        vectors = await client.predict(crops_for(image, segmentation, 224))
    result = tile_result(
        segmentation,
        classifier.score(vectors),
        classifier.threshold,
        base_settings.min_positive_superpixels,
    )
    assert result.flagged == mining, (name, result)

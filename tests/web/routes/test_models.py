"""The model registry over the web API, read-only, against the real MinIO."""

from __future__ import annotations

import numpy as np
import pytest

from amberscan.common import registry
from amberscan.model.classifier import train_classifier
from tests.web.client import get
from tests.web.conftest import Seeded

pytestmark = pytest.mark.stack


async def test_models_lists_versions_with_their_state_and_shows_one(
    server: str, seeded: Seeded
) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3)).astype(np.float32)
    made = []
    for seed in (1, 2):
        y = (x[:, seed] > 0).astype(int)
        classifier, _, _ = train_classifier(
            x, y, [f"t{i % 12}" for i in range(60)], folds=3, seed=seed,
            metadata={"backbone": "toy/1", "holdout": "gate-v1: test"},
        )  # fmt: skip
        made.append(classifier)
    served, candidate = made
    await registry.make_current(seeded.settings.s3, served, action="promote", by="ana")
    await registry.publish(seeded.settings.s3, candidate)

    status, listing = await get(f"{server}/api/models")
    assert status == 200 and listing["current"] == served.version
    states = {m["version"]: m["state"] for m in listing["models"]}
    assert states == {served.version: "current", candidate.version: "candidate"}
    status, shown = await get(f"{server}/api/models/current")
    assert status == 200 and shown["version"] == served.version
    assert shown["holdout"] == "gate-v1: test" and shown["backbone"] == "toy/1"
    assert [(m["action"], m["by"]) for m in shown["history"]] == [("promote", "ana")]
    status, _ = await get(f"{server}/api/models/xgb-nothing")
    assert status == 404

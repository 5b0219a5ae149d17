"""Toy classifiers and a registry stand-in, shared by the classifier's core and stage tests."""

from __future__ import annotations

import numpy as np

from amberscan.classifier.core import Classifiers
from amberscan.model.classifier import Classifier, train_classifier


def toy(seed: int) -> Classifier:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(60, 3)).astype(np.float32)
    y = (x[:, seed % 3] > 0).astype(int)
    classifier, _, _ = train_classifier(
        x, y, [f"t{i % 10}" for i in range(60)], folds=3, seed=seed,
        metadata={"backbone": "toy/1", "feature_dim": 3},
    )  # fmt: skip
    return classifier


class Registry:
    """The registry's answers, and how often each was asked."""

    def __init__(self, *models: Classifier) -> None:
        self.models = {m.version: m for m in models}
        self.current = ""
        self.loads: list[str] = []
        self.pointer_reads = 0

    async def load(self, version: str) -> Classifier:
        self.loads.append(version)
        return self.models[version]

    async def current_version(self) -> str:
        self.pointer_reads += 1
        return self.current


def classifiers(registry: Registry, clock: list[float], fallback: Classifier) -> Classifiers:
    async def file() -> Classifier:
        return fallback

    return Classifiers(
        registry.load, registry.current_version, file, refresh_s=5.0, clock=lambda: clock[0]
    )

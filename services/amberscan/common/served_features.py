"""Feature vectors from the served backbone, for everything outside the feature stage: the
training and evaluation commands, the web app's explore page (through `features_reader`), the
benchmarks and the chaos run.

The same TF Serving API path production uses (`model_client`): crops go to the model server,
vectors come back. Crop files are cut by `vision.crops.load_crop`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from tqdm import tqdm

from amberscan.common.model_client import FeatureClient
from amberscan.common.settings import ModelClientSettings


@dataclass(frozen=True)
class ServedBackbone:
    """Which backbone answered: the model server's model name and version, its width, and the
    size of the crops it takes (its signature's, `ModelMetadata.crop_size`)."""

    name: str
    version: int
    feature_dim: int
    crop_size: int

    @property
    def label(self) -> str:
        return f"{self.name}/{self.version}"


def client_for(
    settings: ModelClientSettings, address: str | None = None, name: str | None = None
) -> FeatureClient:
    return FeatureClient(
        address or settings.model_server.address,
        name or settings.model_server.backbone_name,
        deadline_s=settings.model_server.deadline_s,
        max_retries=settings.retry.max_retries,
        backoff_s=settings.retry.backoff_s,
    )


async def served_backbone(client: FeatureClient, version: int | None = None) -> ServedBackbone:
    """The backbone version `version` (None: the newest) as the server describes it."""
    meta: Any = await client.metadata(version)
    return ServedBackbone(
        name=client.model_name,
        version=int(meta.version),
        feature_dim=int(meta.feature_dim),
        crop_size=meta.crop_size,
    )


async def extract(
    client: FeatureClient,
    crops: Iterable[NDArray[np.uint8]] | Callable[[int], NDArray[np.uint8]],
    count: int,
    *,
    batch: int = 32,
    progress: str | None = None,
    version: int | None = None,
) -> NDArray[np.float32]:
    """Feature vectors of `count` crops, `batch` per request, with an optional progress bar,
    from backbone version `version` (None: the newest served).

    `crops` is either an iterable of crops or a loader called with the crop's index (the loader
    runs in a thread, so decoding overlaps the model server's work).
    """
    loader = crops if callable(crops) else None
    items = None if loader else iter(crops)  # type: ignore[arg-type]
    rows: list[NDArray[np.float32]] = []
    bar = tqdm(total=count, desc=progress, unit="crop", disable=progress is None, leave=True)

    async def load(start: int) -> NDArray[np.uint8]:
        stop = min(start + batch, count)
        if loader is not None:
            return await asyncio.to_thread(
                lambda: np.stack([loader(i) for i in range(start, stop)])
            )
        assert items is not None
        return np.stack([next(items) for _ in range(start, stop)])

    try:
        pending = asyncio.ensure_future(load(0)) if count else None
        for start in range(0, count, batch):
            assert pending is not None
            images = await pending
            nxt = start + batch
            pending = asyncio.ensure_future(load(nxt)) if nxt < count else None
            vectors, _ = await client.predict_versioned(images, version)
            rows.append(vectors)
            bar.update(len(images))
    finally:
        bar.close()
    if not rows:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(rows).astype(np.float32)

"""The model registry: classifiers stored in the blob store under `models/classifier/`.

Each version is kept (`models/classifier/<version>.json`), and `current.json` names the one
services load, so a retrained model is published without losing the ones before it. I/O (the
blob store and the settings), hence here with the other I/O and not in the pure `model/`.
"""

from __future__ import annotations

import asyncio
import json

from amberscan.common import keys
from amberscan.common.blobstore import BlobStore, MissingBlob
from amberscan.common.settings import Settings
from amberscan.model.classifier import Classifier

PREFIX = f"{keys.MODELS}/classifier"


async def publish(settings: Settings, classifier: Classifier, *, make_current: bool = True) -> str:
    """Store `classifier` in the registry and return its key."""
    store = BlobStore(settings)
    await store.ensure_bucket()
    key = f"{PREFIX}/{classifier.version}.json"
    await store.put_at(key, classifier.to_json(), "application/json")
    if make_current:
        pointer = json.dumps({"version": classifier.version, "key": key}).encode()
        await store.put_at(f"{PREFIX}/current.json", pointer, "application/json")
    return key


async def load_current(settings: Settings) -> Classifier:
    """The classifier `current.json` names."""
    store = BlobStore(settings)
    pointer = json.loads(await store.get(f"{PREFIX}/current.json"))
    return Classifier.from_json(await store.get(pointer["key"]), pointer["key"])


async def current_version(settings: Settings) -> str:
    """The version `current.json` names (MissingBlob when nothing was published)."""
    pointer = json.loads(await BlobStore(settings).get(f"{PREFIX}/current.json"))
    return str(pointer["version"])


async def load_version(settings: Settings, version: str) -> Classifier:
    key = f"{PREFIX}/{version}.json"
    return Classifier.from_json(await BlobStore(settings).get(key), key)


async def load_current_or_file(settings: Settings) -> Classifier:
    """The classifier the pipeline scores with now: the registry's current one, else the file
    `settings.classifier_path` (a stack whose registry has none yet)."""
    try:
        return await load_current(settings)
    except MissingBlob:
        return await asyncio.to_thread(Classifier.load, settings.classifier_path)
